"""`clip2 mine --dataset sunrgbd` and `clip2 eval recognition --dataset sunrgbd` end to end on
synthetic RGB-D rooms written in the SUN RGB-D release layout (tiny CLIP, RANDOM weights: the
numbers check the machinery, not zero-shot recognition)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from clip2_core.datasets.synth.indoor import detections_file, make_room, write_room
from clip2_core.geometry import points_in_boxes


def _clip2(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "clip2_core", *args], capture_output=True, text=True, timeout=600,
                          env=env)


@pytest.fixture(scope="module")
def rooms(tmp_path_factory):
    base = tmp_path_factory.mktemp("indoor")
    root = base / "SUNRGBD"
    rooms = {f"synth/room/{s:04d}": make_room(s) for s in range(200, 206)}
    for name, room in rooms.items():
        write_room(root, name, room)
    # the toolbox's text form of a split: one frame folder per line (the last 2 rooms)
    (base / "test.txt").write_text("".join(f"/data/SUNRGBD/{n}\n" for n in list(rooms)[4:]))
    return base, rooms


def test_mine_sunrgbd_rooms_into_shards(rooms, tiny_clip_files, tmp_path):
    base, rms = rooms
    dets = detections_file(rms, base / "dets.json")
    c = tiny_clip_files
    out = tmp_path / "shards"
    r = _clip2("mine", "--dataset", "sunrgbd", "--dataroot", str(base / "SUNRGBD"), "--detections", str(dets),
               "--clip-model", c.name, "--clip-weights", str(c.weights_file), "--clip-config", str(c.config_file),
               "--allow-random-clip", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary-r00.json").read_text())
    assert summary["dataset"] == "sunrgbd" and summary["preset"] == "indoor" and summary["rule"] == "span"
    assert summary["samples"] == 6 and summary["random_clip"] is True and summary["background"] == 0
    visible = sum(int(np.isfinite(bb).all()) for room in rms.values() for bb in room.boxes_2d)
    assert summary["proxies"] >= visible - 2, (summary["proxies"], visible)
    index = json.loads((out / "index.json").read_text())
    assert index["num_proxies"] == summary["proxies"]
    assert set(index["labels"]) <= {b.label.replace("_", " ") for room in rms.values() for b in room.boxes}
    # the proxies are the furniture: their points lie in the annotated boxes
    from clip2_core.mining.shards import iter_proxies, shard_paths

    purity = []
    for p in iter_proxies(shard_paths(out)):
        room = rms[p.provenance["sample"]]
        box = [b for b in room.boxes if b.label.replace("_", " ") == p.text][0]
        arr = np.array([[*box.center, *(np.asarray(box.size) + 0.1), box.yaw]])
        purity.append(points_in_boxes(p.points[:, :3], arr)[:, 0].mean())
        assert p.image_embedding is not None and p.image_embedding.shape == (32,)
    assert len(purity) == summary["proxies"] and np.median(purity) > 0.9, purity


def test_eval_recognition_on_sunrgbd(rooms, trained_tiny_model, tmp_path):
    base, rms = rooms
    c = trained_tiny_model.clip
    out = tmp_path / "report"
    r = _clip2("eval", "recognition", "--dataset", "sunrgbd", "--dataroot", str(base), "--split", "test",
               "--split-file", str(base / "test.txt"), "--checkpoint", str(trained_tiny_model.checkpoint),
               "--clip-model", c.name, "--clip-weights", str(c.weights_file), "--clip-config", str(c.config_file),
               "--allow-random-clip", "--method", "all", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads((out / "report.json").read_text())
    meta = rep["meta"]
    assert meta["dataset"] == "sunrgbd" and meta["split"] == "test" and meta["samples"] == 2
    assert meta["published"] == {"CLIP2": "61.3%", "Clip2Point": "18.6%"} and "RANDOM" in meta["warning"]
    assert rep["classes"] == ["bed", "table", "sofa", "chair", "toilet", "desk", "dresser", "night_stand",
                              "bookshelf", "bathtub"]
    boxes = [b for n in list(rms)[4:] for b in rms[n].boxes]
    assert 1 <= meta["objects"] <= len(boxes)
    assert int(np.array(rep["point"]["confusion"]).sum()) == meta["objects"]
    md = (out / "report.md").read_text()
    assert "SUN RGB-D test" in md and "61.3%" in md and "RANDOM" in md and "pointclip" in md
    # a folder without SUN RGB-D frames: a clear error before any model loads
    r = _clip2("eval", "recognition", "--dataset", "sunrgbd", "--dataroot", str(tmp_path), "--checkpoint",
               str(trained_tiny_model.checkpoint), "--allow-random-clip", "--out", str(tmp_path / "x"), "--no-progress")
    assert r.returncode != 0 and "no SUN RGB-D frame folders" in r.stderr
