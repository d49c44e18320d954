"""training/train.py as a user runs it: one process, two DDP processes (gloo on CPU), bad config."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def proxies(tmp_path_factory, make_gt_proxies):
    root = tmp_path_factory.mktemp("train_cli")
    return make_gt_proxies(root / "train", range(20, 24), emb_dim=32), make_gt_proxies(root / "val", range(30, 31))


def _args(tiny_clip_files, train, val, out, steps=6):
    return ["--config", str(ROOT / "training" / "configs" / "synthetic_smoke.yaml"),
            "--set", f"data.train=[{train}]", "--set", f"data.val=[{val}]", "--set", "data.batch_size=8",
            "--set", f"clip.model={tiny_clip_files.name}", "--set", f"clip.weights={tiny_clip_files.weights_file}",
            "--set", f"clip.model_config_file={tiny_clip_files.config_file}", "--set", f"optim.steps={steps}",
            "--set", "optim.warmup_steps=2", "--set", f"checkpoint.out={out}", "--set", "checkpoint.every=3",
            "--set", "log.every=3", "--set", "log.val_every=6"]


def test_two_ddp_processes(tiny_clip_files, proxies, tmp_path):
    train, val = proxies
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(ROOT / "training" / "train.py"), *_args(tiny_clip_files, train, val, tmp_path / "ddp")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["step"] == 6
    assert (tmp_path / "ddp" / "step-0000006" / "model.safetensors").is_file()
    assert summary["val"]["n"] > 0


def test_single_process_and_resume(tiny_clip_files, proxies, tmp_path):
    train, val = proxies
    script = str(ROOT / "training" / "train.py")
    r = subprocess.run([sys.executable, script, *_args(tiny_clip_files, train, val, tmp_path / "one"), "--stop-at", "3"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "one" / "last.json").read_text())["step"] == 3
    r = subprocess.run([sys.executable, script, *_args(tiny_clip_files, train, val, tmp_path / "one"), "--resume"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stderr and json.loads((tmp_path / "one" / "summary.json").read_text())["step"] == 6


def test_bad_config_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "training" / "train.py"), "--config",
                        str(ROOT / "training" / "configs" / "synthetic_smoke.yaml"), "--set", "optim.stepz=3"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "optim: unknown key" in r.stderr and "Traceback" not in r.stderr
