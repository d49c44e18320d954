"""Training: schedule, config parsing, a short CPU run, exact resume, bad data."""
import json
from pathlib import Path

import numpy as np
import pytest

from clip2_core.training.config import load_train_config
from clip2_core.training.trainer import lr_at, train


def test_lr_schedule_worked_example(tmp_path):
    cfg = load_train_config(None, [f"data.train=[{tmp_path}]", "optim.lr=1.0", "optim.warmup_steps=10", "optim.steps=110",
                                   "optim.min_lr_ratio=0.0"])
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.5)  # half-way through the cosine
    assert lr_at(110, cfg) == pytest.approx(0.0, abs=1e-12)


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="optim: unknown key"):
        load_train_config(None, [f"data.train=[{tmp_path}]", "optim.lrr=1"])
    with pytest.raises(ValueError, match="data.batch_size: expected an integer"):
        load_train_config(None, [f"data.train=[{tmp_path}]", "data.batch_size=big"])
    with pytest.raises(ValueError, match="data.train"):
        load_train_config(None, [])
    with pytest.raises(ValueError, match="repeat_threshold"):
        load_train_config(None, [f"data.train=[{tmp_path}]", "data.repeat_threshold=2"])
    with pytest.raises(FileNotFoundError):
        load_train_config(tmp_path / "missing.yaml")


@pytest.fixture(scope="module")
def gt_proxies(tmp_path_factory, make_gt_proxies):
    root = tmp_path_factory.mktemp("proxies")
    return make_gt_proxies(root / "train", range(6), emb_dim=32), make_gt_proxies(root / "val", range(50, 52))


def _cfg(tiny_clip_files, train_dir, val_dir, out, steps, extra=()):
    return load_train_config(
        None,
        [
            f"data.train=[{train_dir}]",
            f"data.val=[{val_dir}]",
            "data.batch_size=16",
            "data.shuffle_buffer=64",
            "model.name=pointnet2-tiny-v1",
            f"clip.model={tiny_clip_files.name}",
            f"clip.weights={tiny_clip_files.weights_file}",
            f"clip.model_config_file={tiny_clip_files.config_file}",
            f"optim.steps={steps}",
            "optim.warmup_steps=5",
            "optim.lr=0.003",
            "checkpoint.every=10",
            f"checkpoint.out={out}",
            "log.every=5",
            "log.val_every=10",
            *extra,
        ],
    )


def test_short_run_learns_and_writes_everything(tiny_clip_files, gt_proxies, tmp_path):
    train_dir, val_dir = gt_proxies
    cfg = _cfg(tiny_clip_files, train_dir, val_dir, tmp_path / "run", 40)
    summary = train(cfg)
    run = tmp_path / "run"
    assert summary["step"] == 40
    assert (run / "step-0000040" / "model.safetensors").is_file() and (run / "best" / "config.json").is_file()
    assert len(list(run.glob("step-*"))) == 3  # keep=3 of steps 10..40
    rows = (run / "scalars.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and len(rows) > 8
    assert any((run / "tensorboard").iterdir())
    losses = [float(r.split(",")[1]) for r in rows[1:] if r.split(",")[1]]
    assert losses[-1] < losses[0]  # it learns
    assert summary["val"]["n"] > 0


def test_resume_is_exact(tiny_clip_files, gt_proxies, tmp_path):
    from safetensors.torch import load_file

    train_dir, val_dir = gt_proxies
    straight = train(_cfg(tiny_clip_files, train_dir, val_dir, tmp_path / "a", 20))
    first = train(_cfg(tiny_clip_files, train_dir, val_dir, tmp_path / "b", 20), stop_at=13)  # "interrupted"
    assert first["step"] == 13
    resumed = train(_cfg(tiny_clip_files, train_dir, val_dir, tmp_path / "b", 20), resume=True)
    assert straight["step"] == resumed["step"] == 20
    a = load_file(str(tmp_path / "a" / "step-0000020" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "step-0000020" / "model.safetensors"))
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), rtol=1e-5, atol=1e-6, err_msg=k)


class _Killed(BaseException):
    """Stands for SIGKILL: nothing of the trainer catches it (it is no Exception, no KeyboardInterrupt)."""


def _best(run):
    state = json.loads((run / "best" / "train_state.json").read_text())
    return state["step"], state["best_val"]


@pytest.mark.parametrize("where", ["train_state", "last_pointer", "best_swap"])
def test_a_kill_while_checkpointing_leaves_the_same_best_after_resume(where, tiny_clip_files, gt_proxies, tmp_path,
                                                                      monkeypatch, straight_30):
    """Killed while the step that is the run's best is being saved (its training state half written;
    after it but before last.json; in the middle of swapping best/): resumed, the run ends with the
    uninterrupted run's best step, score and weights."""
    from safetensors.torch import load_file

    from clip2_core.training import trainer as T

    train_dir, val_dir = gt_proxies
    ref_run, (kill_step, ref_val) = straight_30
    assert ref_val is not None and kill_step % 10 == 0
    if where == "train_state":
        real = T.save_train_state

        def fault(path, *a, **k):
            if a[2] == kill_step:  # the step's weights are on disk, its training state is not
                (path / T.STATE_TENSORS).write_bytes(b"half")
                raise _Killed
            return real(path, *a, **k)

        monkeypatch.setattr(T, "save_train_state", fault)
    elif where == "last_pointer":
        real_json = T.atomic_write_json

        def fault(path, obj, *a, **k):
            if Path(path).name == "last.json" and obj["step"] == kill_step:
                raise _Killed
            return real_json(path, obj, *a, **k)

        monkeypatch.setattr(T, "atomic_write_json", fault)
    else:
        def fault(run_dir, ck):  # copied aside and the old best moved away, the new one not yet in place
            import shutil

            shutil.copytree(ck, run_dir / "best.tmp")
            if (run_dir / "best").exists():
                (run_dir / "best").rename(run_dir / "best.old")
            raise _Killed

        real_install = T._install_best
        monkeypatch.setattr(T, "_install_best", lambda run_dir, ck: fault(run_dir, ck)
                            if ck.name == f"step-{kill_step:07d}" else real_install(run_dir, ck))
    with pytest.raises(_Killed):
        train(_cfg(tiny_clip_files, train_dir, val_dir, tmp_path / "k", 30))
    monkeypatch.undo()
    resumed = train(_cfg(tiny_clip_files, train_dir, val_dir, tmp_path / "k", 30), resume=True)
    assert resumed["step"] == 30
    step, val = _best(tmp_path / "k")
    assert step == kill_step and val == pytest.approx(ref_val, abs=1e-9)
    assert resumed["best_val_mean_class_acc"] == pytest.approx(ref_val, abs=1e-9)
    assert not (tmp_path / "k" / "best.tmp").exists() and not (tmp_path / "k" / "best.old").exists()
    a = load_file(str(ref_run / "best" / "model.safetensors"))
    b = load_file(str(tmp_path / "k" / "best" / "model.safetensors"))
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.fixture(scope="module")
def straight_30(tiny_clip_files, gt_proxies, tmp_path_factory):
    """An uninterrupted 30-step run: (its folder, (best step, best score))."""
    train_dir, val_dir = gt_proxies
    run = tmp_path_factory.mktemp("straight30") / "run"
    train(_cfg(tiny_clip_files, train_dir, val_dir, run, 30))
    return run, _best(run)


def test_no_usable_data_is_a_clear_error(tiny_clip_files, gt_proxies, tmp_path):
    train_dir, val_dir = gt_proxies
    cfg = _cfg(tiny_clip_files, train_dir, val_dir, tmp_path / "c", 5, ["data.batch_size=100000"])
    with pytest.raises(ValueError, match="no full batch"):
        train(cfg)


def test_repeat_factor_worked_example():
    from clip2_core.training.data import repeat_factors

    # car is 80 % of the proxies, bus 4 %: at threshold 0.16 only bus is repeated, sqrt(0.16 / 0.04) = 2x
    r = repeat_factors({"car": 80, "bus": 4, "truck": 16, "unknown": 5}, ["car", "bus", "truck"], 0.16)
    assert r == pytest.approx({"car": 1.0, "bus": 2.0, "truck": 1.0})
    assert repeat_factors({"car": 1}, ["car"], 0.0) == {}


def test_repeat_factor_sampling_rebalances_the_stream(gt_proxies):
    from clip2_core.encoders.normalize import NormalizationConfig
    from clip2_core.training.config import AugmentConfig
    from clip2_core.training.data import ProxyStream, labels_in, repeat_factors

    train_dir, _ = gt_proxies
    counts = labels_in([train_dir])
    vocab = sorted(counts)
    norm = NormalizationConfig(num_points=16)

    def seen(threshold, epoch=0):
        s = ProxyStream([train_dir], vocab, norm, 32, AugmentConfig(), seed=3, shuffle_buffer=64, repeat_threshold=threshold)
        return np.bincount([x.label for x in s.samples(epoch)], minlength=len(vocab))

    plain, balanced = seen(0.0), seen(0.3)
    assert plain.tolist() == [counts[v] for v in vocab]  # off: every proxy exactly once
    r = repeat_factors(counts, vocab, 0.3)
    rare = min(vocab, key=lambda v: counts[v])
    assert r[rare] > 1.5
    i = vocab.index(rare)
    # stochastic rounding: between floor(r) and ceil(r) copies of each rare proxy
    assert np.floor(r[rare]) * counts[rare] <= balanced[i] <= np.ceil(r[rare]) * counts[rare]
    assert (balanced >= plain).all()  # nothing is ever thinned
    assert seen(0.3).tolist() == balanced.tolist()  # deterministic for (seed, epoch)
