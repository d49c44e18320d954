"""The README's offline loop, run exactly as written there (so the README cannot drift from what works).

The commands are read from README.md between ``<!-- offline-loop:begin -->`` and
``<!-- offline-loop:end -->`` and run one after another in a fresh folder, with the venv's
``clip2`` and ``python`` first on PATH. Then the outputs are checked: proxies mined, a trained
checkpoint, an evaluation report that says its CLIP is random, an ONNX export.
"""
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def readme_loop_commands():
    text = (REPO / "README.md").read_text()
    m = re.search(r"<!-- offline-loop:begin -->\s*```bash\n(.*?)```\s*<!-- offline-loop:end -->", text, re.S)
    assert m, "README.md has no offline-loop block"
    joined = m.group(1).replace("\\\n", " ")
    return [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def test_readme_block_is_found_and_complete():
    cmds = readme_loop_commands()
    tools = [shlex.split(c)[0:2] for c in cmds]
    assert [t[0] for t in tools] == ["clip2", "clip2", "clip2", "clip2", "python", "clip2", "clip2", "clip2", "clip2"]
    assert [t[1] for t in tools] == ["synth", "random-clip", "mine", "mine", "training/train.py", "eval", "export", "bag",
                                     "eval"]


def test_readme_offline_loop_runs_as_written(tmp_path):
    work = tmp_path / "loop"
    work.mkdir()
    (work / "training").symlink_to(REPO / "training")  # the README runs from the checkout
    env = dict(os.environ, HF_HUB_OFFLINE="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for cmd in readme_loop_commands():
        r = subprocess.run(shlex.split(cmd), cwd=work, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"README command failed: {cmd}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    train_idx = json.loads((work / "outputs/proxies/train/index.json").read_text())
    assert train_idx["num_proxies"] > 100 and {"car", "pedestrian"} <= set(train_idx["labels"])
    summary = json.loads((work / "runs/synthetic-offline/summary.json").read_text())
    assert summary["random_clip"] is True and summary["step"] == 150
    report = json.loads((work / "outputs/eval/report.json").read_text())
    assert report["meta"]["random_clip"] is True and "RANDOM" in report["meta"]["warning"]
    assert report["meta"]["objects"] > 20 and report["ensemble"] is not None
    # trained against the random CLIP's text bank for 150 steps: clearly above chance (1/10)
    assert report["point"]["mean_class_acc"] > 0.2, report["point"]
    assert (work / "model.onnx").stat().st_size > 10_000
    # the held-out scene through the live node, scored by the devkit
    replay = json.loads((work / "outputs/replay/report.json").read_text())
    assert replay["scenes"] == ["scene-0003"] and replay["identity"]["random_clip"] is True
    assert replay["transport"]["processed"] > 0 and replay["transport"]["lost_in_transport"] == 0
    assert replay["identity"]["backend"] == "onnxruntime" and "mean_ap" in replay["devkit"]


def test_random_clip_is_refused_without_the_flag(tmp_path):
    """The same mine command without --allow-random-clip: a one-line error, exit 2."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    run = lambda *a: subprocess.run([sys.executable, "-m", "clip2_core", *a], cwd=tmp_path, env=env,  # noqa: E731
                                    capture_output=True, text=True, timeout=600)
    assert run("synth", "--out", "w", "--scenes", "1", "--seconds", "0.5", "--no-progress").returncode == 0
    assert run("random-clip", "--out", "c").returncode == 0
    r = run("mine", "--dataroot", "w", "--version", "v1.0-synth", "--detections", "w/v1.0-synth/detections_2d.json",
            "--clip-model", "clip2-demo-random", "--clip-weights", "c/clip2-demo-random.safetensors",
            "--clip-config", "c/clip2-demo-random.json", "--out", "p", "--no-progress")
    assert r.returncode == 2, r.stderr[-2000:]
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("clip2 mine: error:") and "--allow-random-clip" in err[0], r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "p").exists()


def test_missing_clip_weights_give_a_one_line_error(tmp_path):
    """The README's step 2 on a machine without the weights: one line saying how to provide them, exit 2."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "empty_hub"))
    r = subprocess.run([sys.executable, "-m", "clip2_core", "synth", "--out", "w", "--scenes", "1", "--seconds", "0.5",
                        "--no-progress"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    for cmd, prefix in (
        ([sys.executable, "-m", "clip2_core", "mine", "--dataroot", "w", "--version", "v1.0-synth", "--detections",
          "w/v1.0-synth/detections_2d.json", "--clip-model", "ViT-B-32", "--clip-weights", "openai", "--out", "p",
          "--no-progress"], "clip2 mine: error:"),
        ([sys.executable, str(REPO / "training/train.py"), "--config", str(REPO / "training/configs/synthetic_smoke.yaml"),
          "--set", "clip.weights=openai", "--set", "checkpoint.out=run"], "train.py: error:"),
    ):
        r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        # what is not a timestamped progress log line (train.py logs its own progress at INFO)
        err = [ln for ln in r.stderr.splitlines() if ln.strip() and not re.match(r"\d{4}-\d\d-\d\d ", ln)]
        assert r.returncode == 2, r.stderr[-3000:]
        assert len(err) == 1 and err[0].startswith(prefix), r.stderr[-3000:]
        assert "ViT-B-32/openai are not on this machine" in err[0] and "local weights file" in err[0]
