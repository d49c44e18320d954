"""`clip2 export` and `clip2 bench encoder` end to end, as a user runs them."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest


def _clip2(*args, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "clip2_core", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env=env)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
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
    return d


def test_export_writes_onnx_with_parity(checkpoint, tmp_path):
    out = tmp_path / "enc.onnx"
    r = _clip2("export", "--checkpoint", str(checkpoint), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "parity torch vs onnxruntime" in r.stdout
    diff = float(r.stdout.split("max abs diff ")[1].split()[0])
    assert diff <= 1e-4
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for b in (1, 5):  # the batch axis is dynamic
        y = sess.run(None, {"points": np.random.default_rng(b).normal(size=(b, 64, 4)).astype(np.float32)})[0]
        assert y.shape == (b, 32)


def test_export_errors_are_clear(tmp_path):
    r = _clip2("export", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "x.onnx"))
    assert r.returncode == 2
    assert "checkpoint not found" in r.stderr and "Traceback" not in r.stderr


def test_bench_encoder_json(tmp_path):
    out = tmp_path / "bench.json"
    r = _clip2("bench", "encoder", "--model", "pointnet2-tiny-v1", "--batch-sizes", "1", "4", "--points", "64",
               "--repeats", "1", "--threads", "1", "--json", str(out))
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert {"torch_cps", "ort_cps", "ratio", "params", "flops_per_cluster", "threads", "results"} <= set(res)
    assert len(res["results"]) == 2 and res["threads"] == 1
    assert all(row["torch_cps"] > 0 and row["ort_cps"] > 0 for row in res["results"])
    assert res["ratio"] == pytest.approx(res["ort_cps"] / res["torch_cps"], rel=1e-2)
