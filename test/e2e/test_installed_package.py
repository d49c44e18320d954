"""clip2 works from an installed (non-editable) package, outside the checkout.

A wheel of the checkout is built and installed into a fresh target folder; ``clip2 demo`` then
runs from a folder outside the checkout with only that target on ``PYTHONPATH`` (dependencies come
from the test's environment). The sample frame, model configs and node config must come from the
installed package, not from the source tree.
"""
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_installs_and_demo_runs_outside_the_checkout(tmp_path):
    wheels, target, work = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    work.mkdir()
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                        str(REPO)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = wheels.glob("clip2_ros-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for must in ("clip2_core/data/kitti_000008/points.npy", "clip2_core/data/kitti_000008/gt.json",
                 "clip2_core/encoders/model_configs/pointnet2-tiny-v1.json", "clip2_core/data/README.md"):
        assert must in names, must
    assert any(n.endswith("share/clip2_ros/config/lidar_openvocab.param.yaml") for n in names)
    assert any(n.endswith("share/clip2_ros/launch/lidar_openvocab.launch.py") for n in names)
    assert not any(n.startswith(("test/", "bench/")) for n in names)
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]

    env = dict(os.environ, PYTHONPATH=str(target), HF_HUB_OFFLINE="1")
    where = subprocess.run([sys.executable, "-c", "import clip2_core, clip2_ros; print(clip2_core.__file__); "
                            "print(clip2_ros.__file__)"], capture_output=True, text=True, cwd=work, env=env, timeout=120)
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert Path(line).resolve().is_relative_to(target.resolve()), where.stdout  # not the editable checkout
    r = subprocess.run([sys.executable, "-m", "clip2_core", "demo", "--out", "D"], capture_output=True, text=True, cwd=work,
                       env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    summary = json.loads((work / "D" / "summary.json").read_text())
    assert summary["kitti_000008"]["points"] == 17238 and summary["kitti_000008"]["gt_recall_1m"] >= 4 / 6
    assert summary["recognition"]["gt_found"] >= 1 and "RANDOM" in summary["recognition"]["note"]
    for png in ("kitti_000008_bev.png", "synthetic_seed0_bev.png", "recognition_bev.png"):
        assert (work / "D" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (REPO / "D").exists()
