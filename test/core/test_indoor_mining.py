"""Indoor RGB-D proxy mining: structure planes, the indoor preset, synthetic rooms and the real frame."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from clip2_core.datasets.sunrgbd import SunRGBDReader
from clip2_core.datasets.synth.indoor import detections_file, make_room, point_owners, write_room
from clip2_core.geometry import points_in_boxes
from clip2_core.mining.detectors import DetectionsFile
from clip2_core.mining.miner import MineConfig, MineStats, mine_frame
from clip2_core.mining.planes import ransac_plane, structure_planes
from clip2_core.mining.select import FrustumConfig
from clip2_core.types import Box3D, CameraView, Frame

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real" / "sunrgbd_000017"


def _grown(box: Box3D, margin: float) -> Box3D:
    return Box3D(np.asarray(box.center), np.asarray(box.size) + 2 * margin, box.yaw, label=box.label)


def _box_array(boxes):
    return np.array([[*b.center, *b.size, b.yaw] for b in boxes])


def _purity_recall(proxy_points: np.ndarray, frame_points: np.ndarray, box: Box3D):
    """Share of the proxy inside the box (grown by 5 cm), share of the box's points in the proxy."""
    arr = _box_array([_grown(box, 0.05)])
    inside = points_in_boxes(proxy_points[:, :3], arr)[:, 0]
    total = int(points_in_boxes(frame_points[:, :3], _box_array([box]))[:, 0].sum())
    tight = int(points_in_boxes(proxy_points[:, :3], _box_array([box]))[:, 0].sum())
    return float(inside.mean()), tight / max(total, 1)


def test_ransac_recovers_a_noisy_plane_among_outliers():
    rng = np.random.default_rng(3)
    n_true = np.array([0.2, -0.3, 0.93])
    n_true /= np.linalg.norm(n_true)
    u = np.cross(n_true, [1.0, 0, 0])
    u /= np.linalg.norm(u)
    v = np.cross(n_true, u)
    a, b = rng.uniform(-2, 2, (2, 3000))
    plane = np.outer(a, u) + np.outer(b, v) - 1.5 * n_true + rng.normal(0, 0.005, (3000, 1)) * n_true
    noise = rng.uniform(-2, 2, (1500, 3))
    n, d, inl = ransac_plane(np.vstack([plane, noise]), tolerance=0.02, rng=rng)
    assert abs(abs(float(n @ n_true)) - 1) < 1e-3 and abs(abs(d) - 1.5) < 0.01
    assert inl[:3000].mean() > 0.99 and inl[3000:].mean() < 0.05
    # degenerate input: fewer than three points, or all on one line
    assert not ransac_plane(np.zeros((2, 3)), 0.02)[2].any()
    line = np.outer(np.linspace(0, 1, 50), [1.0, 2.0, 3.0])
    assert not ransac_plane(line, 0.02)[2].any()


def _wall_and_crate():
    """A depth camera at the origin looking along +y (camera coordinates x, -z, y) at a wall
    (y = 3) and a 0.5 m crate standing against it below eye level, ray cast one point per pixel:
    the crate shows its front, its top and its left face."""
    f, w, h = 200.0, 400, 300
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    d = np.stack([(u.ravel() - w / 2) / f, np.ones(u.size), -(v.ravel() - h / 2) / f], axis=1)
    lo, hi = np.array([0.3, 2.5, -1.0]), np.array([0.8, 3.0, -0.5])
    with np.errstate(divide="ignore", invalid="ignore"):  # slab test of the ray against the crate
        t0, t1 = lo / d, hi / d
    t_near = np.nanmax(np.minimum(t0, t1), axis=1)
    t_far = np.nanmin(np.maximum(t0, t1), axis=1)
    hit = (t_near <= t_far) & (t_near > 0)
    t = np.where(hit, t_near, 3.0)  # else the wall
    xyz = d * t[:, None]
    uv = np.column_stack([u.ravel(), v.ravel()])
    return xyz, uv, np.flatnonzero(hit)


def test_structure_planes_drop_the_wall_and_keep_the_object_faces():
    xyz, uv, crate = _wall_and_crate()
    c = uv[crate]
    box = np.array([c[:, 0].min(), c[:, 1].min(), c[:, 0].max(), c[:, 1].max()])
    box += np.array([-1, -1, 1, 1]) * 0.15 * (box[2:] - box[:2]).repeat(2)[[0, 2, 1, 3]]  # a loose detector box
    inside = np.flatnonzero((uv[:, 0] >= box[0]) & (uv[:, 0] <= box[2]) & (uv[:, 1] >= box[1]) & (uv[:, 1] <= box[3]))
    drop = structure_planes(xyz[inside], xyz, uv, box)
    is_crate = np.isin(inside, crate)
    assert drop[~is_crate].mean() > 0.95  # the wall seen through the box goes
    assert drop[is_crate].mean() < 0.05  # the crate's front, top and side faces stay (bar its edge on the wall)
    # without the frame around the box nothing continues: nothing is dropped
    assert not structure_planes(xyz[inside], xyz[inside], uv[inside], box).any()
    assert not structure_planes(xyz[inside], xyz, uv, box, max_planes=0).any()


def test_frustum_config_refuses_bad_plane_settings():
    with pytest.raises(ValueError, match="planes"):
        FrustumConfig(planes=-1)
    with pytest.raises(ValueError, match="plane_tolerance"):
        FrustumConfig(planes=2, plane_tolerance=0.0)
    cfg = MineConfig.indoor(min_score=0.3)
    assert cfg.min_score == 0.3 and cfg.frustum.planes == 3 and cfg.background_per_frame == 0
    with pytest.raises(ValueError, match="no field"):
        MineConfig.indoor(planes=3)


@pytest.fixture(scope="module")
def room_frames(tmp_path_factory):
    """8 synthetic rooms in the release layout, read back, with loose proposals (each visible box
    grown by 15% per side, as a 2D detector draws them)."""
    tmp = tmp_path_factory.mktemp("rooms")
    rooms = {f"synth/room/{s:04d}": make_room(s) for s in range(100, 108)}
    for name, room in rooms.items():
        write_room(tmp / "SUNRGBD", name, room)
        for i, bb in enumerate(room.boxes_2d):
            if np.isfinite(bb).all():
                dx, dy = 0.15 * (bb[2] - bb[0]), 0.15 * (bb[3] - bb[1])
                room.boxes_2d[i] = np.array([max(0, bb[0] - dx), max(0, bb[1] - dy), bb[2] + dx, bb[3] + dy])
    det = DetectionsFile(detections_file(rooms, tmp / "dets.json"))
    reader = SunRGBDReader(tmp, load_images=True)
    frames = {n: reader.frame(n) for n in reader.names}
    return rooms, frames, det


def _mine_rooms(room_frames, cfg: MineConfig):
    """Per visible object: (against the wall, purity, recall), by each point's pixel owner."""
    rooms, frames, det = room_frames
    rows, missed = [], 0
    for name, frame in frames.items():
        room, cam = rooms[name], frame.cameras["CAM0"]
        proxies = mine_frame(frame, det, cfg, None, MineStats())
        frame_owner = point_owners(room, frame.points, cam)
        for j, bb in enumerate(room.boxes_2d):
            if not np.isfinite(bb).all():
                continue
            p = next((p for p in proxies if p.box_2d is not None and np.allclose(p.box_2d, bb)), None)
            if p is None:
                missed += 1
                continue
            mine = point_owners(room, p.points, cam) == j
            rows.append((j in room.against_wall, mine.mean(), mine.sum() / max(1, (frame_owner == j).sum())))
    return np.array(rows, dtype=np.float64).reshape(-1, 3), missed


def test_indoor_preset_mines_furniture_not_walls_in_synthetic_rooms(room_frames):
    """The indoor preset's proxies are the furniture, also where it stands against the wall
    (measured on these 8 rooms, 22 objects: 95% of proxies >= 0.8 pure, recall 0.94 median; without
    plane removal 77% (50% against the wall); the LiDAR defaults 45%, 0% against the wall)."""
    got, missed = _mine_rooms(room_frames, MineConfig.indoor())
    assert got.shape[0] >= 20 and missed <= 1, (got.shape, missed)
    wall = got[:, 0] == 1
    assert (got[:, 1] >= 0.8).mean() > 0.85 and (got[wall, 1] >= 0.8).mean() > 0.7, got
    assert np.median(got[:, 2]) > 0.8, got
    no_planes, _ = _mine_rooms(room_frames, MineConfig.indoor(
        frustum=dataclasses.replace(MineConfig.indoor().frustum, planes=0)))
    w0 = no_planes[:, 0] == 1
    assert (got[wall, 1] >= 0.8).mean() > (no_planes[w0, 1] >= 0.8).mean() + 0.2, (got, no_planes)
    lidar, _ = _mine_rooms(room_frames, MineConfig())
    assert got[:, 1].mean() > lidar[:, 1].mean() + 0.2, (got, lidar)


def _real_frame():
    calib = json.loads((REAL / "calib.json").read_text())["cameras"]["CAM0"]
    gt = json.loads((REAL / "gt.json").read_text())
    pts = np.load(REAL / "points.npy")
    from PIL import Image

    rgb = np.asarray(Image.open(REAL / "CAM0.jpg").convert("RGB"))
    cam = CameraView("CAM0", np.array(calib["K"]), np.array(calib["T_lidar_to_cam"]), tuple(calib["image_size_wh"]),
                     image=rgb, token="sunrgbd_000017")
    boxes = [Box3D(np.array(b["center"]), np.array(b["size_lwh"]), float(b["yaw"]), label=b["class_name"])
             for b in gt["boxes_3d"]]
    frame = Frame(points=pts[:, :3].astype(np.float64), point_fields=("x", "y", "z"), cameras={"CAM0": cam},
                  frame_id="upright_depth", token="sunrgbd_000017", scene="real", gt_boxes=boxes)
    return frame, [np.array(b["bbox_xyxy_cam0"], dtype=np.float64) for b in gt["boxes_3d"]]


@pytest.mark.parametrize("grow", [0.0, 0.15])
def test_real_frame_night_stand_and_bed(tmp_path, grow):
    """SUN RGB-D 000017 with its annotated 2D boxes (and the same boxes 15% looser per side): the
    indoor preset keeps the night stand and the bed, not the wall or floor around them (measured:
    night stand purity 1.00 / recall 0.82, bed 0.99 / 0.71; loose boxes: 1.00 / 0.77, 0.84 / 0.77;
    the LiDAR defaults on the loose boxes take the wall for the night stand, purity 0.05)."""
    frame, boxes2d = _real_frame()
    w, h = frame.cameras["CAM0"].size_wh
    dets = []
    for box, bb in zip(frame.gt_boxes, boxes2d):
        dx, dy = grow * (bb[2] - bb[0]), grow * (bb[3] - bb[1])
        loose = [max(0.0, bb[0] - dx), max(0.0, bb[1] - dy), min(w - 1.0, bb[2] + dx), min(h - 1.0, bb[3] + dy)]
        dets.append({"box_xyxy": loose, "label": box.label.replace("_", " "), "score": 0.9})
    path = tmp_path / "dets.json"
    path.write_text(json.dumps({"format": "clip2.detections_2d/v1",
                                "images": {"x": {"sample_data_token": "sunrgbd_000017", "detections": dets}}}))
    proxies = {p.text: p for p in mine_frame(frame, DetectionsFile(path), MineConfig.indoor(), None, MineStats())}
    assert set(proxies) == {"night stand", "bed"}
    for box in frame.gt_boxes:
        pu, re = _purity_recall(proxies[box.label.replace("_", " ")].points, frame.points, box)
        assert pu > (0.95 if box.label == "night_stand" else 0.8) and re > 0.6, (box.label, grow, pu, re)
