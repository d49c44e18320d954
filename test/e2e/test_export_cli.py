"""`clip2 export` and `clip2 bench encoder` end to end, as a user runs them."""
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest


def _clip2(*args, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "clip2_core", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env=env)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A saved pointnet2-tiny-v1 checkpoint, and the in-memory encoder's outputs on a fixed batch."""
    import torch

    from clip2_core.checkpoint import save_checkpoint
    from clip2_core.encoders import create_point_encoder

    torch.manual_seed(0)
    model = create_point_encoder("pointnet2-tiny-v1")
    with torch.no_grad():  # a few training-mode passes give BatchNorm non-trivial statistics
        for _ in range(3):
            model(torch.randn(8, 64, 4))
    model.eval()
    d = tmp_path_factory.mktemp("export") / "ckpt"
    save_checkpoint(d, model, model.config)
    x = _inputs(4, seed=99)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    return d, x, ref


def _inputs(batch, seed):
    """Points like a normalised car crop: (batch, 64, 4) float32, continuous (no FPS / top-k ties)."""
    rng = np.random.default_rng(seed)
    xyz = rng.normal(size=(batch, 64, 3)) * np.array([0.5, 0.25, 0.2])
    return np.concatenate([xyz, rng.uniform(0, 1, (batch, 64, 1))], axis=-1).astype(np.float32)


def test_export_writes_onnx_with_parity(checkpoint, tmp_path):
    import onnxruntime as ort
    import torch

    from clip2_core.encoders import load_encoder
    from clip2_core.runtime.export import read_onnx_metadata

    ckpt_dir, x_fixed, ref_fixed = checkpoint
    out = tmp_path / "enc.onnx"
    r = _clip2("export", "--checkpoint", str(ckpt_dir), "--out", str(out))
    assert r.returncode == 0, r.stderr
    claimed = float(r.stdout.split("max abs diff ")[1].split()[0])
    assert claimed <= 1e-4
    # independent of the command's own parity claim: the encoder rebuilt from the checkpoint and an
    # onnxruntime session of the written file, on inputs the command never saw
    model, ckpt = load_encoder(ckpt_dir)
    assert not model.training
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["points"] and [o.name for o in sess.get_outputs()] == ["embedding"]
    for b in (1, 5, 16):  # the batch axis is dynamic
        x = _inputs(b, seed=1000 + b)
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        got = sess.run(None, {"points": x})[0]
        assert got.shape == (b, 32) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # L2-normalised embeddings
        assert b == 1 or np.abs(got[0] - got[1:]).max() > 1e-3  # different crops, different embeddings
    # the checkpoint round trip and the export agree with the encoder that was saved
    np.testing.assert_allclose(sess.run(None, {"points": x_fixed})[0], ref_fixed, atol=1e-4, rtol=0)
    meta = read_onnx_metadata(out)
    assert meta["model_config"].to_dict() == ckpt.model_config.to_dict()
    assert f"wrote {out} (pointnet2-tiny-v1, embed_dim 32, points 64, opset 17)" in r.stdout


def test_export_errors_are_clear(checkpoint, tmp_path):
    r = _clip2("export", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "x.onnx"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"clip2 export: error: checkpoint not found: {tmp_path / 'missing'} "
                                             "(expected a directory with model.safetensors + config.json)"]
    r = _clip2("export", "--checkpoint", str(checkpoint[0]), "--out", str(tmp_path / "x.pt"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"clip2 export: error: --out should end in .onnx, got {tmp_path / 'x.pt'}"]
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "x.pt").exists()


def _flops_counted_by_torch():
    """Floating-point operations of one 64-point cluster as torch's own FLOP counter sees them."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from clip2_core.encoders import create_point_encoder

    model = create_point_encoder("pointnet2-tiny-v1").eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 64, 4))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops()


def test_bench_encoder_json(tmp_path):
    import onnxruntime as ort
    import torch

    out = tmp_path / "bench.json"
    t0 = time.perf_counter()
    r = _clip2("bench", "encoder", "--model", "pointnet2-tiny-v1", "--batch-sizes", "1", "4", "--points", "64",
               "--repeats", "2", "--threads", "1", "--json", str(out))
    wall = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    params, torch_flops = _flops_counted_by_torch()
    assert res["params"] == params  # 9,728 for pointnet2-tiny-v1
    # its own formula vs torch's FLOP counter (matmuls only): 148,544 vs 147,456 measured
    assert set(res["flops_per_cluster"]) == {"64"}
    assert res["flops_per_cluster"]["64"] == pytest.approx(torch_flops, rel=0.05)
    assert (res["model"], res["threads"], res["repeats"], res["clock"], res["stat"]) == ("pointnet2-tiny-v1", 1, 2, "wall", "median")
    assert res["torch_version"] == torch.__version__ and res["onnxruntime_version"] == ort.__version__
    assert res["cpu_count"] == os.cpu_count()
    rows = res["results"]
    assert [(row["points"], row["batch"]) for row in rows] == [(64, 1), (64, 4)]  # what was asked, in order
    for row in rows:
        for k in ("torch_median_cps", "torch_best_cps", "ort_median_cps", "ort_best_cps"):
            assert math.isfinite(row[k]) and row[k] > 0, (k, row)
        assert row["torch_median_cps"] <= row["torch_best_cps"] and row["ort_median_cps"] <= row["ort_best_cps"]
        assert (row["torch_cps"], row["ort_cps"]) == (row["torch_median_cps"], row["ort_median_cps"])  # --stat median
        assert row["ratio"] == pytest.approx(row["ort_cps"] / row["torch_cps"], abs=1e-3)  # ort/torch, not torch/ort
    # each timed sample is 64 clusters (max(1, 64 // B) batches of B), 2 samples per backend and row:
    # the time those rates imply must fit inside the command's wall time
    implied_s = sum(2 * 64 / row[f"{k}_median_cps"] for row in rows for k in ("torch", "ort"))
    assert implied_s < wall, (implied_s, wall)
    # (64, 256) was not measured: the headline falls back to the first row
    assert res["headline"] == {"batch": 1, "points": 64}
    assert (res["torch_cps"], res["ort_cps"], res["ratio"]) == (rows[0]["torch_cps"], rows[0]["ort_cps"], rows[0]["ratio"])
    # the printed table is the JSON's
    table = [ln.split() for ln in r.stdout.splitlines() if ln.split()[:2] in (["64", "1"], ["64", "4"])]
    assert [(int(t[0]), int(t[1]), float(t[2]), float(t[3])) for t in table] == \
        [(64, b, pytest.approx(row["torch_cps"], abs=0.5), pytest.approx(row["ort_cps"], abs=0.5))
         for b, row in zip((1, 4), rows)]
    assert f"encoder pointnet2-tiny-v1: {params:,} parameters; threads 1" in r.stdout


def test_bench_encoder_rejects_bad_sizes(tmp_path):
    r = _clip2("bench", "encoder", "--batch-sizes", "0", "--json", str(tmp_path / "b.json"))
    assert r.returncode == 2 and not (tmp_path / "b.json").exists()
    assert r.stderr.strip().splitlines() == [
        "clip2 bench: error: threads, repeats, batch sizes and point counts must be >= 1"]
