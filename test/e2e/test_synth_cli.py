"""`clip2 synth` end to end, as a user runs it: generate, preview, load with the devkit."""
import re
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
    bev, cam = out / "preview_bev.png", out / "preview_CAM_FRONT.png"
    m = re.search(r"^wrote 1 scene\(s\), (\d+) keyframes, (\d+) annotations to (\S+) \(v1.0-synth\)", r.stdout, re.M)
    assert m and m.group(3) == str(out), r.stdout
    assert f"preview: {bev}" in r.stdout.splitlines() and f"preview: {cam}" in r.stdout.splitlines()
    keyframes, annotations = int(m.group(1)), int(m.group(2))
    assert keyframes == 2  # 1 s at 2 Hz
    from PIL import Image

    with Image.open(bev) as im:
        assert im.size == (900, 900)
        arr = np.asarray(im.convert("RGB"))
        assert (arr.reshape(-1, 3).max(axis=1) > 60).mean() > 0.01  # points and boxes were drawn
    with Image.open(cam) as im:
        assert im.size == (1600, 900)
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes(version="v1.0-synth", dataroot=str(out), verbose=False)
    assert {s["channel"] for s in nusc.sensor} == {"LIDAR_TOP", "CAM_FRONT", "CAM_BACK"}
    assert len(nusc.sample) == keyframes and len(nusc.sample_annotation) == annotations  # what it said it wrote
    _, boxes, _ = nusc.get_sample_data(nusc.sample[0]["data"]["LIDAR_TOP"])
    assert len(boxes) > 10
    assert (out / "v1.0-synth" / "detections_2d.json").is_file()
    # a second run into the same folder needs --overwrite
    tables = (out / "v1.0-synth" / "sample.json").read_bytes()
    r = _clip2("synth", "--out", str(out), "--seconds", "0.5", "--cameras", "CAM_FRONT", "--no-progress")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"clip2 synth: error: {out} already holds a synthetic v1.0-synth; pass overwrite (--overwrite) to replace it"]
    assert (out / "v1.0-synth" / "sample.json").read_bytes() == tables and bev.is_file()  # left as it was
    r = _clip2("synth", "--out", str(out), "--seconds", "0.5", "--cameras", "CAM_FRONT", "--no-progress", "--overwrite",
               "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert not (out / "preview_bev.png").exists() and not list((out / "sweeps").rglob("*.pcd.bin"))
    nusc = NuScenes(version="v1.0-synth", dataroot=str(out), verbose=False)
    assert {s["channel"] for s in nusc.sensor} == {"LIDAR_TOP", "CAM_FRONT"} and len(nusc.sample) == 1  # replaced


def _one_line_error(r):
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_synth_rejects_bad_input(tmp_path):
    w = tmp_path / "w"
    r = _clip2("synth", "--out", str(w), "--cameras", "CAM_TOP", "--seconds", "1")
    assert _one_line_error(r) == ("clip2 synth: error: unknown camera(s) ['CAM_TOP']; choose from ['CAM_FRONT', "
                                  "'CAM_FRONT_RIGHT', 'CAM_BACK_RIGHT', 'CAM_BACK', 'CAM_BACK_LEFT', 'CAM_FRONT_LEFT']")
    r = _clip2("synth", "--out", str(w), "--scenes", "0")
    assert _one_line_error(r) == "clip2 synth: error: scenes must be >= 1"
    r = _clip2("synth", "--out", str(w), "--seconds", "0.2")
    assert _one_line_error(r) == "clip2 synth: error: seconds must be >= 0.5 (at least one keyframe interval)"
    assert not w.exists()  # refused before anything was written
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("keep me")
    r = _clip2("synth", "--out", str(tmp_path / "data"), "--seconds", "1")
    assert _one_line_error(r) == (f"clip2 synth: error: {tmp_path / 'data'} is not empty and holds no synthetic "
                                  "v1.0-synth; choose an empty or new folder")
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["notes.txt"]
    assert (tmp_path / "data" / "notes.txt").read_text() == "keep me"
