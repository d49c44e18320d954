"""`clip2 cluster` and `clip2 bench clustering` end to end, as a user runs them."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from clip2_core.data import sample_frame_dir

ROOT = Path(__file__).resolve().parents[2]
KITTI = sample_frame_dir("kitti_000008")


def _clip2(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "clip2_core", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_lists_subcommands():
    r = _clip2("--help")
    assert r.returncode == 0
    assert "cluster" in r.stdout and "bench" in r.stdout


def test_cluster_kitti_writes_table_json_png(tmp_path):
    pts = np.load(KITTI / "points.npy")
    pts.tofile(tmp_path / "000008.bin")
    r = _clip2("cluster", str(tmp_path / "000008.bin"), "--png", str(tmp_path / "bev.png"), "--json", str(tmp_path / "c.json"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "clusters" in r.stdout.splitlines()[0]
    data = json.loads((tmp_path / "c.json").read_text())
    assert len(data["clusters"]) >= 6
    assert (tmp_path / "bev.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cluster_bad_file_is_a_clear_error(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"\x00" * 6)
    r = _clip2("cluster", str(tmp_path / "x.bin"))
    assert r.returncode == 2
    assert "multiple of 4" in r.stderr and "Traceback" not in r.stderr


def test_bench_clustering_json(tmp_path):
    r = _clip2("bench", "clustering", "--repeats", "1", "--json", str(tmp_path / "b.json"))
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "b.json").read_text())["results"]
    assert {row["sweep"] for row in rows} == {"synthetic-32beam-seed0", "kitti_000008"}
    for row in rows:
        assert {"ours_ms", "peer", "peer_ms", "ratio", "ari"} <= set(row)
        assert row["ari"] > 0.99  # same partition as DBSCAN(min_samples=1)


def test_import_clip2_core_does_not_import_ros():
    code = (
        "import sys, clip2_core, clip2_core.geometry, clip2_core.segmentation, clip2_core.types, clip2_core.cli;"
        "bad = [m for m in sys.modules if m == 'rclpy' or m.endswith('_msgs') or m == 'torch'];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    assert r.returncode == 0, r.stdout + r.stderr
