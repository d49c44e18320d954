"""clip2 works from an installed (non-editable) package, outside the checkout.

The checkout's files (tracked and untracked-but-not-ignored, as ``git ls-files`` lists them) are
copied to a temporary source tree, so neither a stale ``build/`` of the checkout can leak into the
wheel nor does the build write into the checkout. A wheel of that tree is built and installed into
a fresh target folder; ``python -m clip2_core demo`` (the whole loop, small: it trains an encoder
and replays a bag through the node started from the installed package) and the ``clip2`` entry point then run from a folder outside the
checkout with only that target on ``PYTHONPATH`` (dependencies come from the test's environment).
The sample frame, model configs and node config must come from the installed package.
"""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def _copy_checkout(dst: Path) -> Path:
    r = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                       capture_output=True, check=True)
    for rel in filter(None, r.stdout.decode().split("\0")):
        src = REPO / rel
        if src.is_file():  # a tracked file deleted in the working tree is not part of the checkout
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    return dst


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def test_wheel_installs_and_demo_runs_outside_the_checkout(tmp_path):
    src = _copy_checkout(tmp_path / "src")
    wheels, target, work = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    work.mkdir()
    r = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(src)],
             timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = wheels.glob("clip2_ros-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = sorted(p.name for p in (REPO / "clip2_core" / "encoders" / "model_configs").glob("*.json"))
    assert configs and {f"clip2_core/encoders/model_configs/{c}" for c in configs} <= names
    frame = sorted(p.name for p in (REPO / "clip2_core" / "data" / "kitti_000008").iterdir())
    assert {"points.npy", "gt.json", "calib.json", "frame.json", "CAM2.png"} <= set(frame)
    assert {f"clip2_core/data/kitti_000008/{f}" for f in frame} | {"clip2_core/data/README.md"} <= names
    shared = {f"{d}/{p.name}" for d, pat in (("config", "*.yaml"), ("config", "*.json"), ("config", "*.xml"), ("launch", "*.launch.py"),
                                             ("rviz", "*.rviz")) for p in (REPO / d).glob(pat)}
    shared |= {"package.xml", "../ament_index/resource_index/packages/clip2_ros"}
    data = next(n.split("/data/")[0] for n in names if n.endswith(".data/data/share/clip2_ros/package.xml"))
    for f in shared:
        assert os.path.normpath(f"{data}/data/share/clip2_ros/{f}") in names, f
    assert not any(n.startswith(("test/", "bench/", "training/", "clip2_core/benchmarks/")) for n in names)
    r = _run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
             timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]

    env = dict(os.environ, PYTHONPATH=str(target), HF_HUB_OFFLINE="1")
    where = _run([sys.executable, "-c", "import clip2_core, clip2_ros; print(clip2_core.__file__); print(clip2_ros.__file__)"],
                 cwd=work, env=env, timeout=120)
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert Path(line).resolve().is_relative_to(target.resolve()), where.stdout  # not the editable checkout

    # the whole loop, small: synthetic world -> mine -> train -> ONNX -> bag -> the live node (a process
    # started from the installed package) -> devkit report
    r = _run([sys.executable, "-m", "clip2_core", "demo", "--out", "D", "--train-scenes", "1", "--val-scenes", "1",
              "--seconds", "2", "--steps", "60"], cwd=work, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    summary = json.loads((work / "D" / "summary.json").read_text())
    clustering = summary["clustering"]
    assert clustering["kitti_000008"]["points"] == 17238 and clustering["kitti_000008"]["gt_recall_1m"] >= 4 / 6
    report = json.loads(Path(summary["loop"]["report"]).read_text())
    assert report["transport"]["processed"] >= 1 and report["identity"]["random_clip"] is True
    assert "mean_ap" in report["devkit"] and "RANDOM" in r.stdout and "mAP (devkit)" in r.stdout
    for png in ("kitti_000008_bev.png", "synthetic_seed0_bev.png", "replay/latency.png"):
        assert (work / "D" / png).read_bytes()[:8] == PNG
    assert (work / "D" / "replay" / "report.md").is_file()

    # the console script pip wrote, with the same target: the clustering part of the demo
    clip2 = target / "bin" / "clip2"
    assert clip2.is_file()
    r = _run([str(clip2), "demo", "--no-recognition", "--out", "E"], cwd=work, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert set(json.loads((work / "E" / "summary.json").read_text())["clustering"]) == {"kitti_000008", "synthetic_seed0"}
    assert "loop" not in json.loads((work / "E" / "summary.json").read_text())
    assert (work / "E" / "kitti_000008_bev.png").read_bytes()[:8] == PNG
    assert not (REPO / "D").exists() and not (REPO / "E").exists()
