"""`clip2 cluster` and `clip2 bench clustering` end to end, as a user runs them."""
import json
import os
import re
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
    from clip2_core.cli import SUBCOMMAND_MODULES

    registered = [m.replace("_", "-") for m in SUBCOMMAND_MODULES]
    r = _clip2("--help")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    i = lines.index("  COMMAND")  # argparse lists the subcommands under the positional argument
    listed = [ln.split()[0] for ln in lines[i + 1:] if ln.startswith("    ") and not ln.startswith("     ")]
    assert listed == registered, r.stdout
    r = _clip2()
    assert r.returncode == 2 and r.stderr.splitlines()[-1] == "clip2: error: the following arguments are required: COMMAND"
    r = _clip2("frobnicate")
    assert r.returncode == 2
    m = re.fullmatch(r"clip2: error: argument COMMAND: invalid choice: '?frobnicate'? \(choose from (.*)\)",
                     r.stderr.splitlines()[-1])
    assert m and re.findall(r"[\w-]+", m.group(1)) == registered, r.stderr  # (quoting differs between Pythons)


SUMMARY = re.compile(r"^(\S+): (\d+) points \((\d+) non-finite\), (\d+) ground, (\d+) clusters  \[")


def test_cluster_kitti_writes_table_json_png(tmp_path):
    from clip2_core.segmentation import SegmentationConfig

    pts = np.load(KITTI / "points.npy")
    pts.tofile(tmp_path / "000008.bin")
    r = _clip2("cluster", str(tmp_path / "000008.bin"), "--png", str(tmp_path / "bev.png"), "--json", str(tmp_path / "c.json"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    m = SUMMARY.match(lines[0])
    assert m, lines[0]
    name, n_points, n_bad, n_ground, n_clusters = m.group(1), *map(int, m.groups()[1:])
    assert (name, n_points, n_bad) == ("000008.bin", pts.shape[0], 0) and 0 < n_ground < n_points
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["sweep"] == "000008.bin" and data["config"] == SegmentationConfig().to_dict()  # the defaults
    clusters = data["clusters"]
    assert len(clusters) == n_clusters >= 6
    # the printed table is the JSON: one row per cluster, same id and point count
    table = [ln.split() for ln in lines[2:2 + n_clusters]]
    assert [(int(t[0]), int(t[1])) for t in table] == [(c["id"], c["num_points"]) for c in clusters]
    assert lines[2 + n_clusters:] == [f"wrote {tmp_path / 'c.json'}", f"wrote {tmp_path / 'bev.png'}"]
    min_points = data["config"]["cluster"]["min_points"]
    assert all(c["num_points"] >= min_points for c in clusters)
    assert sum(c["num_points"] for c in clusters) <= n_points - n_ground  # ground points are never clustered
    # every well-observed annotated car (>= 500 LiDAR points) has a cluster centred on it; measured
    # centre offsets 0.07-0.67 m for the four of them
    boxes = np.array([c["box"] for c in clusters])
    cars = [b for b in json.loads((KITTI / "gt.json").read_text())["boxes_3d"] if b["num_lidar_pts_ref"] >= 500]
    assert len(cars) == 4
    for car in cars:
        offset = np.hypot(*(boxes[:, :2] - np.asarray(car["center"][:2])).T).min()
        assert offset < 1.0, (car["id"], offset)
    assert (tmp_path / "bev.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cluster_bad_file_is_a_clear_error(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"\x00" * 6)
    r = _clip2("cluster", str(tmp_path / "x.bin"), "--json", str(tmp_path / "c.json"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"clip2 cluster: error: {tmp_path / 'x.bin'}: 1 float32 values is not a multiple of 4 columns; pass --columns"]
    assert not (tmp_path / "c.json").exists()


def test_bench_clustering_json(tmp_path):
    from clip2_core.datasets.synth.sweep import make_sweep
    from clip2_core.segmentation import SegmentationConfig, Segmenter

    r = _clip2("bench", "clustering", "--repeats", "1", "--json", str(tmp_path / "b.json"))
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "b.json").read_text())["results"]
    assert {row["sweep"] for row in rows} == {"synthetic-32beam-seed0", "kitti_000008"}
    kitti = np.load(KITTI / "points.npy")
    sweeps = {"synthetic-32beam-seed0": make_sweep(0).points, "kitti_000008": kitti}
    cfg = SegmentationConfig()
    for row in rows:
        pts = sweeps[row["sweep"]]
        assert row["points"] == pts.shape[0]
        # what is clustered: at most the sweep minus the ground the segmenter removes (range and height
        # limits take more)
        assert 0 < row["cluster_input_points"] <= pts.shape[0] - int(Segmenter(cfg).segment(pts).ground_mask.sum())
        assert row["tolerance_m"] == cfg.cluster.tolerance and row["repeats"] == 1
        for k in ("ours_ground_ms", "ours_cluster_ms", "ours_ms", "ours_full_segment_ms", "peer_ms"):
            assert np.isfinite(row[k]) and row[k] > 0, (k, row)
        assert row["ari"] > 0.99  # same partition as DBSCAN(min_samples=1)
        assert row["clusters_ours"] == row["clusters_peer"] > 0


def test_import_clip2_core_does_not_import_ros():
    code = (
        "import sys, clip2_core, clip2_core.geometry, clip2_core.segmentation, clip2_core.types, clip2_core.cli;"
        "bad = [m for m in sys.modules if m == 'rclpy' or m.endswith('_msgs') or m == 'torch'];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    assert r.returncode == 0, r.stdout + r.stderr
