"""`clip2 eval recognition` end to end on a synthetic world, with the tests' trained tiny model.

The tiny CLIP has RANDOM weights: the command must be told so (--allow-random-clip), and every
report it writes says so. The numbers check the machinery, not zero-shot recognition.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

VERSION = "v1.0-synth"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _clip2(*args, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "clip2_core", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600, env=env)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_world") / "synth"
    # 3 scenes: the last one is the val split
    r = _clip2("synth", "--out", str(root), "--scenes", "3", "--seconds", "2", "--seed", "3", "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    return root


@pytest.fixture(scope="module")
def vocab_file(trained_tiny_model, tmp_path_factory):
    """The model's own classes as ground-truth labels ("traffic cone" -> "traffic_cone", as the dataset spells it)."""
    f = tmp_path_factory.mktemp("eval_vocab") / "vocab.json"
    f.write_text(json.dumps([v.replace(" ", "_") for v in trained_tiny_model.vocabulary]))
    return f


def _eval_args(world, model, vocab_file, out, *extra):
    c = model.clip
    return ["eval", "recognition", "--dataroot", str(world), "--version", VERSION, "--checkpoint", str(model.checkpoint),
            "--clip-model", c.name, "--clip-weights", str(c.weights_file), "--clip-config", str(c.config_file),
            "--vocab", str(vocab_file), "--out", str(out), "--no-progress", *extra]


def _val_samples(world):
    """Keyframes of the val scenes, counted from the dataset's own tables."""
    tables = world / VERSION
    val = set(json.loads((tables / "synth_splits.json").read_text())["val"])
    scenes = {s["token"] for s in json.loads((tables / "scene.json").read_text()) if s["name"] in val}
    return sum(s["scene_token"] in scenes for s in json.loads((tables / "sample.json").read_text()))


def _check_section(section, classes):
    """A metrics section of report.json, re-derived from its own confusion matrix."""
    cm = np.array(section["confusion"])
    assert cm.shape == (len(classes), len(classes))
    support = cm.sum(axis=1)
    assert [section["support"][c] for c in classes] == support.tolist()
    present = support > 0
    acc = np.diag(cm)[present] / support[present]
    assert section["mean_class_acc"] == pytest.approx(float(acc.mean()))
    assert section["overall_acc"] == pytest.approx(np.trace(cm) / cm.sum())
    for c, a, n in zip(classes, np.diag(cm) / np.maximum(support, 1), support):
        assert section["per_class_acc"][c] == (pytest.approx(float(a)) if n else None), c
    return cm


@pytest.fixture(scope="module")
def point_run(world, trained_tiny_model, vocab_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_point") / "report"
    r = _clip2(*_eval_args(world, trained_tiny_model, vocab_file, out, "--allow-random-clip"))
    return r, out


def test_eval_recognition_report(world, trained_tiny_model, point_run):
    r, out = point_run
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    model_vocab = list(trained_tiny_model.vocabulary)
    classes = [v.replace(" ", "_") for v in model_vocab]
    assert report["classes"] == classes and report["texts"] == model_vocab  # underscores -> spaces for CLIP
    meta = report["meta"]
    assert meta["random_clip"] is True and meta["clip"]["random"] is True
    assert meta["warning"] == "CLIP weights are RANDOM: these numbers check the machinery, they are not zero-shot results"
    assert meta["split"] == "val" and meta["samples"] == _val_samples(world) > 0
    assert meta["encoder"] == "pointnet2-tiny-v1" and meta["min_points"] == 5 and meta["ground_removed"] is True
    # default templates: the ones the encoder was trained with (recorded in its checkpoint)
    assert meta["templates"] == ["a point cloud of a {}.", "a {} on the road."]
    cm = _check_section(report["point"], classes)
    assert meta["objects"] == int(cm.sum()) > 0
    assert report["point"]["support"]["pole"] == 0 and report["point"]["per_class_acc"]["pole"] is None  # no poles in the world
    assert report["ensemble"] is None and meta["ensemble_weight"] is None
    assert (out / "confusion.png").read_bytes()[:8] == PNG_MAGIC and not (out / "confusion_ensemble.png").exists()
    md = (out / "report.md").read_text()
    assert md in r.stdout  # what the command prints is what it wrote
    assert f"> **{meta['warning']}**" in md.splitlines()
    assert f"**Mean class accuracy (point): {report['point']['mean_class_acc']:.4f}**" in md
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {
        "json": str(out / "report.json"), "md": str(out / "report.md"), "confusion": str(out / "confusion.png")}


def test_eval_recognition_ensemble(world, trained_tiny_model, vocab_file, point_run, tmp_path):
    out = tmp_path / "report"
    r = _clip2(*_eval_args(world, trained_tiny_model, vocab_file, out, "--allow-random-clip", "--ensemble",
                           "--ensemble-weight", "0.3"))
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    point_only = json.loads((point_run[1] / "report.json").read_text())
    ens = report["ensemble"]
    assert ens is not None
    cm = _check_section(ens, report["classes"])
    # the same objects, and the point-only numbers do not change when the ensemble is added
    assert ens["support"] == report["point"]["support"] and int(cm.sum()) == report["meta"]["objects"]
    assert report["point"] == point_only["point"]
    assert report["meta"]["ensemble_weight"] == 0.3 and 0 <= report["meta"]["objects_with_image_crop"] <= report["meta"]["objects"]
    assert report["meta"]["random_clip"] is True and "RANDOM" in report["meta"]["warning"]
    assert (out / "confusion_ensemble.png").read_bytes()[:8] == PNG_MAGIC
    assert f"**Mean class accuracy (point + image, w=0.3): {ens['mean_class_acc']:.4f}**" in (out / "report.md").read_text()


def test_eval_recognition_methods_side_by_side(world, trained_tiny_model, vocab_file, tmp_path):
    """--method all: clip2, the PointCLIP projection baseline and their ensemble on the same crops."""
    out = tmp_path / "report"
    r = _clip2(*_eval_args(world, trained_tiny_model, vocab_file, out, "--allow-random-clip", "--method", "all",
                           "--pointclip-size", "32", "--pointclip-weight", "0.25", "--max-samples", "4"))
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["samples"] == 4
    assert set(report["baselines"]) == {"pointclip", "clip2+pointclip"}
    for m in report["baselines"].values():
        cm = _check_section(m, report["classes"])
        assert int(cm.sum()) == report["meta"]["objects"] and m["top5_acc"] >= m["overall_acc"]
    meta = report["meta"]
    assert meta["methods"] == ["clip2", "pointclip", "clip2+pointclip"]
    assert meta["pointclip"]["size"] == 32 and meta["pointclip"]["weight_in_ensemble"] == 0.25
    assert "RANDOM" in meta["warning"]
    for name in ("confusion_pointclip.png", "confusion_clip2_pointclip.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    assert "| method | mean class top-1 | overall top-1 | mean class top-5 | overall top-5 |" in (out / "report.md").read_text()


def test_random_clip_is_refused_without_the_flag(world, trained_tiny_model, vocab_file, tmp_path):
    out = tmp_path / "report"
    r = _clip2(*_eval_args(world, trained_tiny_model, vocab_file, out))
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 1, r.stderr
    assert err[0].startswith("clip2 eval: error: ") and "RANDOM weights" in err[0] and "--allow-random-clip" in err[0]
    assert not out.exists() and r.stdout == ""


def test_bad_vocabulary_is_a_clear_error(world, trained_tiny_model, tmp_path):
    vocab = tmp_path / "one.json"
    vocab.write_text(json.dumps(["car"]))
    r = _clip2(*_eval_args(world, trained_tiny_model, vocab, tmp_path / "report", "--allow-random-clip"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"clip2 eval: error: {vocab}: a vocabulary needs at least 2 names"]
    assert not (tmp_path / "report").exists()
