"""SUN RGB-D in the release layout: depth coding, the toolbox geometry, boxes, splits, the real frame."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clip2_core.datasets.sunrgbd import (
    SUNRGBD_CLASSES, SunRGBDError, SunRGBDReader, camera_transform, decode_depth, encode_depth, read_boxes_counted,
    read_depth_png, read_split, write_frame,
)
from clip2_core.datasets.synth.indoor import make_room, write_room
from clip2_core.geometry import points_in_boxes, project_points
from clip2_core.types import Box3D

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real" / "sunrgbd_000017"
P = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])


def _box_array(boxes):
    return np.array([[*b.center, *b.size, b.yaw] for b in boxes])


def test_depth_coding_is_the_toolbox_bit_rotation():
    # the toolbox reads d = bitor(bitshift(v, -3), bitshift(v, 13)) / 1000: 1.234 m is stored as 1234 << 3
    raw = np.array([[1234 << 3, 0], [(8000 << 3) | 0, (1 << 3) | 0]], dtype=np.uint16)
    np.testing.assert_allclose(decode_depth(raw), [[1.234, 0.0], [8.0, 0.001]], rtol=0, atol=1e-6)
    d = np.array([[0.0, 0.5, 2.25, 7.999]], dtype=np.float32)
    np.testing.assert_array_equal(encode_depth(d), [[0, 500 << 3, 2250 << 3, 7999 << 3]])
    np.testing.assert_allclose(decode_depth(encode_depth(d)), d, atol=5e-4)


def test_unreadable_depth_names_the_file(tmp_path):
    bad = tmp_path / "d.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(SunRGBDError, match="d.png"):
        read_depth_png(bad)
    from PIL import Image

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(SunRGBDError, match="16-bit"):
        read_depth_png(tmp_path / "rgb.png")


def test_synthetic_rooms_read_back_with_their_boxes_and_pixels(tmp_path):
    """Written in the release layout and read by the reader: the same boxes, points inside every
    visible box, and every point projecting back onto the pixel it came from."""
    root = tmp_path / "SUNRGBD"
    rooms = {f"synth/room/{i:04d}": make_room(i) for i in range(3)}
    for name, room in rooms.items():
        write_room(root, name, room)
    reader = SunRGBDReader(tmp_path, max_points=None)
    assert reader.names == sorted(rooms)
    for name in reader.names:
        frame, room = reader.frame(name), rooms[name]
        assert frame.token == name and frame.scene == "synth" and frame.point_fields == ("x", "y", "z")
        got, want = _box_array(frame.gt_boxes), _box_array(room.boxes)
        np.testing.assert_allclose(got[:, :3], want[:, :3], atol=1e-5)
        np.testing.assert_allclose(np.sort(got[:, 3:5], 1), np.sort(want[:, 3:5], 1), atol=1e-5)
        np.testing.assert_allclose(got[:, 5], want[:, 5], atol=1e-5)
        assert [b.label for b in frame.gt_boxes] == [b.label for b in room.boxes]
        inside = points_in_boxes(frame.points, got).sum(axis=0)
        for j, bb in enumerate(room.boxes_2d):
            if np.isfinite(bb).all() and (bb[2] - bb[0]) * (bb[3] - bb[1]) > 400:
                assert inside[j] > 100, (name, room.boxes[j].label, inside[j])
        cam = frame.cameras["CAM0"]
        uv, depth, valid = project_points(frame.points, cam.K, cam.T_lidar_to_cam)
        assert valid.all()
        # each point lands on an integer pixel with the depth the image holds there
        cols, rows = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
        np.testing.assert_allclose(uv, np.stack([cols, rows], 1), atol=1e-3)
        stored = decode_depth(encode_depth(room.depth))
        np.testing.assert_allclose(depth, stored[rows, cols], atol=1e-4)
        # the floor is level in the upright frame (Rtilt undid the camera's pitch)
        floor = frame.points[frame.points[:, 2] < frame.points[:, 2].min() + 0.05]
        assert np.ptp(np.percentile(floor[:, 2], [5, 95])) < 0.03


def test_real_frame_through_the_release_layout(tmp_path):
    """The real SUN RGB-D frame 000017, written back into the release layout (its points z-buffered
    into a depth image with its own calibration): the reader recovers the bed and night stand boxes
    and their points, and the points' colours match the image where they project."""
    calib = json.loads((REAL / "calib.json").read_text())["cameras"]["CAM0"]
    gt = json.loads((REAL / "gt.json").read_text())
    pts = np.load(REAL / "points.npy")
    K, T = np.array(calib["K"]), np.array(calib["T_lidar_to_cam"])
    w, h = calib["image_size_wh"]
    uv, depth, valid = project_points(pts, K, T, (w, h))
    cols, rows = np.round(uv[valid, 0]).astype(int), np.round(uv[valid, 1]).astype(int)
    ok = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
    cols, rows, z = cols[ok], rows[ok], depth[valid][ok]
    img = np.zeros((h, w), np.float64)
    order = np.argsort(-z)  # nearest written last: a z-buffer
    img[rows[order], cols[order]] = z[order]
    rtilt = (P @ T[:3, :3]).T  # T = P^T Rtilt^T
    E = P.T @ rtilt @ P
    K_tool = K.copy()
    K_tool[0, 2] += 1.0
    K_tool[1, 2] += 1.0
    boxes = [Box3D(np.array(b["center"]), np.array(b["size_lwh"]), float(b["yaw"]), label=b["class_name"]) for b in gt["boxes_3d"]]
    from PIL import Image

    rgb = np.asarray(Image.open(REAL / "CAM0.jpg").convert("RGB"))
    write_frame(tmp_path / "SUNRGBD" / "kv1" / "b3dodata" / "img_0017", rgb, img, K_tool, E, boxes, name="img_0017")
    reader = SunRGBDReader(tmp_path / "SUNRGBD", max_points=None)
    frame = reader.frame("kv1/b3dodata/img_0017")
    np.testing.assert_allclose(frame.cameras["CAM0"].T_lidar_to_cam, T, atol=1e-8)
    got, want = _box_array(frame.gt_boxes), _box_array(boxes)
    np.testing.assert_allclose(got[:, :3], want[:, :3], atol=1e-5)
    np.testing.assert_allclose(np.sort(got[:, 3:5], 1), np.sort(want[:, 3:5], 1), atol=1e-5)
    assert {b.label for b in frame.gt_boxes} == {"bed", "night_stand"} <= set(SUNRGBD_CLASSES)
    # the same points come back (to the pixel grid): the converter's counts in the boxes (951 night
    # stand, 18,117 bed) minus what two points on one pixel lose
    ref = points_in_boxes(pts, want).sum(0)
    back = points_in_boxes(frame.points, got).sum(0)
    assert frame.points.shape[0] == int((img > 0).sum()) and np.all(back >= 0.9 * ref) and np.all(back <= ref), (ref, back)
    # colours: the image pixel each recovered point projects to vs the colour the converter stored
    cam = frame.cameras["CAM0"]
    uv2, _, v2 = project_points(frame.points, cam.K, cam.T_lidar_to_cam, cam.size_wh)
    assert v2.mean() > 0.999
    from scipy.spatial import cKDTree

    dist, nn = cKDTree(pts[:, :3]).query(frame.points[v2], k=1)
    assert np.median(dist) < 0.01
    c2, r2 = np.round(uv2[v2]).astype(int).T
    err = np.abs(rgb[np.clip(r2, 0, h - 1), np.clip(c2, 0, w - 1)] / 255.0 - pts[nn, 3:6]).mean()
    assert err < 0.03, err  # the converter's own check: 0.011


def test_annotations_with_nulls_and_broken_polygons(tmp_path):
    p = tmp_path / "index.json"
    good = {"name": "chair", "polygon": [{"X": [0, 1, 1, 0], "Z": [2, 2, 3, 3], "Ymin": -0.2, "Ymax": 0.8}]}
    p.write_text(json.dumps({"objects": [None, good, {"name": "table", "polygon": [{"X": [0, 1], "Z": [1, 1]}]},
                                         {"name": "Bed ", "polygon": [{"X": [0, 2, 2, 0], "Z": [1, 1, 3, 3], "Ymin": 0.5, "Ymax": 1.0}]}]}))
    boxes, skipped = read_boxes_counted(p)
    assert skipped == 1 and [b.label for b in boxes] == ["chair", "bed"]
    chair = boxes[0]
    np.testing.assert_allclose(chair.center, [0.5, 2.5, -0.3])  # y down: heights -0.8 .. 0.2 upright
    np.testing.assert_allclose(sorted(chair.size[:2]), [1.0, 1.0]) and np.testing.assert_allclose(chair.size[2], 1.0)
    p.write_text("{not json")
    with pytest.raises(SunRGBDError, match="index.json"):
        read_boxes_counted(p)


def test_splits_from_allsplit_mat_and_text(tmp_path):
    from scipy.io import savemat

    root = tmp_path / "SUNRGBD"
    for i in range(3):
        write_room(root, f"kv2/align/{i:04d}", make_room(i, width=64, height=48, n_objects=1))
    tb = tmp_path / "SUNRGBDtoolbox" / "traintestsplit"
    tb.mkdir(parents=True)
    cell = lambda names: np.array([[f"/n/fs/sun3d/data/SUNRGBD/{n}/" for n in names]], dtype=object)  # noqa: E731
    savemat(tb / "allsplit.mat", {"alltrain": cell(["kv2/align/0000", "kv2/align/0002"]), "alltest": cell(["kv2/align/0001"])})
    assert read_split(tb / "allsplit.mat", "train") == ["kv2/align/0000", "kv2/align/0002"]
    assert SunRGBDReader(root, split="test").names == ["kv2/align/0001"]
    assert SunRGBDReader(root, split="val").names == ["kv2/align/0001"]  # VoteNet's val is the official test
    txt = tmp_path / "mine.txt"
    txt.write_text("# two frames\nkv2/align/0002\nSUNRGBD/kv2/align/0000\n")
    assert SunRGBDReader(root, split="any", split_file=txt).names == ["kv2/align/0000", "kv2/align/0002"]
    lone = tmp_path / "a" / "b" / "c" / "SUNRGBD"
    write_room(lone, "kv2/align/0000", make_room(0, width=64, height=48, n_objects=1))
    assert SunRGBDReader(lone).names == ["kv2/align/0000"]
    with pytest.raises(FileNotFoundError, match="allsplit.mat"):
        SunRGBDReader(lone, split="test")
    with pytest.raises(FileNotFoundError, match="no SUN RGB-D frame"):
        SunRGBDReader(tmp_path / "SUNRGBDtoolbox")


def test_subsampling_is_seeded_per_frame(tmp_path):
    root = tmp_path / "SUNRGBD"
    write_room(root, "xtion/a/0000", make_room(5, width=96, height=72))
    a = SunRGBDReader(root, max_points=1000).frame("xtion/a/0000").points
    b = SunRGBDReader(root, max_points=1000).frame("xtion/a/0000").points
    assert a.shape == (1000, 3) and np.array_equal(a, b)
    assert SunRGBDReader(root, max_points=None).frame("xtion/a/0000").points.shape[0] > 5000
    np.testing.assert_allclose(camera_transform(np.eye(3))[:3, :3], P.T)
