"""`clip2 synth` end to end, as a user runs it: generate, preview, load with the devkit."""
import subprocess
import sys

import numpy as np


def _clip2(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "clip2_core", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_synth_writes_devkit_dataroot_and_previews(tmp_path):
    out = tmp_path / "world"
    r = _clip2("synth", "--out", str(out), "--scenes", "1", "--seconds", "1", "--seed", "3",
               "--cameras", "CAM_FRONT,CAM_BACK", "--workers", "2", "--preview", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "wrote 1 scene(s), 2 keyframes" in r.stdout
    from PIL import Image

    bev, cam = out / "preview_bev.png", out / "preview_CAM_FRONT.png"
    with Image.open(bev) as im:
        assert im.size == (900, 900)
        arr = np.asarray(im.convert("RGB"))
        assert (arr.reshape(-1, 3).max(axis=1) > 60).mean() > 0.01  # points and boxes were drawn
    with Image.open(cam) as im:
        assert im.size == (1600, 900)
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes(version="v1.0-synth", dataroot=str(out), verbose=False)
    assert {s["channel"] for s in nusc.sensor} == {"LIDAR_TOP", "CAM_FRONT", "CAM_BACK"}
    _, boxes, _ = nusc.get_sample_data(nusc.sample[0]["data"]["LIDAR_TOP"])
    assert len(boxes) > 10
    assert (out / "v1.0-synth" / "detections_2d.json").is_file()
    # a second run into the same folder needs --overwrite
    r = _clip2("synth", "--out", str(out), "--seconds", "0.5", "--cameras", "CAM_FRONT", "--no-progress")
    assert r.returncode == 2 and "--overwrite" in r.stderr
    r = _clip2("synth", "--out", str(out), "--seconds", "0.5", "--cameras", "CAM_FRONT", "--no-progress", "--overwrite",
               "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert not (out / "preview_bev.png").exists() and not list((out / "sweeps").rglob("*.pcd.bin"))


def test_synth_rejects_bad_input(tmp_path):
    r = _clip2("synth", "--out", str(tmp_path / "w"), "--cameras", "CAM_TOP", "--seconds", "1")
    assert r.returncode == 2
    assert "unknown camera" in r.stderr
    r = _clip2("synth", "--out", str(tmp_path / "w"), "--scenes", "0")
    assert r.returncode == 2 and "scenes" in r.stderr
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("keep me")
    r = _clip2("synth", "--out", str(tmp_path / "data"), "--seconds", "1")
    assert r.returncode == 2 and "not empty" in r.stderr
    assert (tmp_path / "data" / "notes.txt").read_text() == "keep me"
