"""The synthetic nuScenes-format world: ray casting, world content, tables, devkit compatibility,
LiDAR format, detections file, determinism."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from clip2_core.datasets.synth import SynthConfig, generate
from clip2_core.datasets.synth.writer import points_in_box_global, rotation_to_quaternion
from clip2_core.datasets.synth.raycast import BOX, CYLINDER, ELLIPSOID, CameraGrid, LidarGrid, Primitives, cast, intersect
from clip2_core.datasets.synth.world import build_world

VERSION = "v1.0-synth"
DETECTION_KINDS = {"car", "truck", "bus", "trailer", "construction_vehicle", "pedestrian", "motorcycle", "bicycle",
                   "traffic_cone", "barrier"}


@pytest.fixture(scope="session")
def world_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_world")
    summary = generate(SynthConfig(out=root, scenes=1, seconds=1.5, seed=7, masks=False), progress=False)
    return root, summary


@pytest.fixture(scope="session")
def nusc(world_root):
    from nuscenes.nuscenes import NuScenes

    return NuScenes(version=VERSION, dataroot=str(world_root[0]), verbose=False)


# ----------------------------------------------------------------------------------------- ray casting
def test_intersect_box_worked_example():
    # unit cube (half 0.5) centred 5 m ahead on +x: a ray along +x hits its near face at 4.5 m
    dirs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, 0.4, 0.0]])
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    t, n = intersect(BOX, np.eye(3), np.array([5.0, 0.0, 0.0]), np.array([0.5, 0.5, 0.5]), dirs)
    assert t[0] == pytest.approx(4.5)
    assert np.allclose(n[0], [-1, 0, 0])
    assert np.isinf(t[1])
    assert t[2] == pytest.approx(4.5 / dirs[2, 0])  # still the x = 4.5 face (y = 0.36 < 0.5)


def test_intersect_cylinder_and_ellipsoid_worked_examples():
    d = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    # vertical cylinder r=1, half height 2, centred at (10, 0, 0): side hit at 9
    t, n = intersect(CYLINDER, np.eye(3), np.array([10.0, 0.0, 0.0]), np.array([1.0, 1.0, 2.0]), d)
    assert t[0] == pytest.approx(9.0) and np.allclose(n[0], [-1, 0, 0]) and np.isinf(t[1])
    # the same cylinder below the origin: the top cap at z = -3 + 2 = -1 is hit at t = 1
    t, n = intersect(CYLINDER, np.eye(3), np.array([0.0, 0.0, -3.0]), np.array([1.0, 1.0, 2.0]), d)
    assert t[1] == pytest.approx(1.0) and np.allclose(n[1], [0, 0, 1])
    # ellipsoid with semi-axes (2, 1, 1) centred at (6, 0, 0): hit at x = 4
    t, n = intersect(ELLIPSOID, np.eye(3), np.array([6.0, 0.0, 0.0]), np.array([2.0, 1.0, 1.0]), d)
    assert t[0] == pytest.approx(4.0) and np.allclose(n[0], [-1, 0, 0])


def test_cast_takes_nearest_hit_and_plane():
    grid = CameraGrid(np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]]), 64, 48)
    prims = Primitives(kind=np.array([BOX, BOX], np.int8), R=np.stack([np.eye(3)] * 2),
                       c=np.array([[0.0, 0.0, 10.0], [0.0, 0.0, 5.0]]), half=np.array([[3.0, 3.0, 0.5], [0.5, 0.5, 0.5]]),
                       material=np.zeros(2, np.int32), owner=np.array([0, 1], np.int32))
    # ground plane y = 1 (optical frame: y down), normal pointing up (-y)
    hits = cast(grid, prims, 100.0, plane=(np.array([0.0, -1.0, 0.0]), -1.0), collect_silhouettes=True)
    centre = 24 * 64 + 32
    assert hits.prim[centre] == 1  # the small near box occludes the big far one
    assert hits.t[centre] * grid.depth_per_t.reshape(-1)[centre] == pytest.approx(4.5)
    assert (hits.prim == -2).any()  # the plane is seen below the boxes
    # the far box's silhouette includes pixels hidden by the near box
    assert hits.silhouettes[0] > (hits.prim == 0).sum()


def test_grid_windows_cover_every_hit():
    lidar = LidarGrid(np.linspace(-30, 10, 32), 720)
    cam = CameraGrid(np.array([[200.0, 0, 160], [0, 200.0, 120], [0, 0, 1]]), 320, 240)
    R = np.array([[np.cos(0.7), -np.sin(0.7), 0], [np.sin(0.7), np.cos(0.7), 0], [0, 0, 1]])
    half = np.array([2.0, 0.9, 0.8])
    for grid, c in ((lidar, np.array([-8.0, -0.5, -1.0])), (lidar, np.array([0.5, 6.0, 0.0])),
                    (cam, np.array([1.0, 0.5, 6.0])), (cam, np.array([3.0, 0.0, 0.5]))):  # last: straddles the near plane
        dirs = grid.dirs.reshape(-1, 3)
        t_all, _ = intersect(BOX, R, c, half, dirs)
        r0, r1, c0, c1 = grid.windows(c[None], R[None], half[None], np.linalg.norm(half)[None])[0]
        W = grid.shape[1]
        win = (np.arange(r0, r1)[:, None] * W + (np.arange(c0, c1) % W)[None, :]).reshape(-1)
        hits = set(np.nonzero(np.isfinite(t_all))[0].tolist())
        assert hits and hits <= set(win.tolist())
        assert len(win) < dirs.shape[0]


def test_rotation_to_quaternion_matches_pyquaternion():
    from pyquaternion import Quaternion

    rng = np.random.default_rng(0)
    for _ in range(20):
        q = Quaternion(rng.normal(size=4)).normalised
        ours = rotation_to_quaternion(q.rotation_matrix)
        assert np.allclose(Quaternion(ours).rotation_matrix, q.rotation_matrix, atol=1e-9)


# ----------------------------------------------------------------------------------------- world
def test_world_has_all_detection_classes_long_tail_and_motion():
    w = build_world(123, 20.0)
    kinds = {o.kind for o in w.objects}
    assert DETECTION_KINDS <= kinds
    assert len(kinds & {"tire", "debris", "stroller", "traffic_sign", "trash_can", "animal"}) >= 4
    assert sum(o.moving for o in w.objects) >= 10
    cars = np.array([o.size for o in w.objects if o.kind == "car"])
    assert (cars[:, 0] > 3.5).all() and (cars[:, 0] < 5.5).all() and (cars[:, 1] > 1.6).all() and (cars[:, 2] < 2.0).all()
    peds = np.array([o.size for o in w.objects if o.kind == "pedestrian"])
    assert (peds[:, 2] > 1.4).all() and (peds[:, 2] < 2.1).all()
    assert len({tuple(np.round(s, 3)) for s in cars}) == len(cars)  # per-instance variation


def test_world_is_a_pure_function_of_the_seed():
    a, b, c = build_world(5, 4.0), build_world(5, 4.0), build_world(6, 4.0)
    assert np.array_equal(a.object_boxes(1.0), b.object_boxes(1.0))
    assert a.object_boxes(1.0).shape != c.object_boxes(1.0).shape or not np.allclose(a.object_boxes(1.0), c.object_boxes(1.0))


def test_points_in_box_global_worked_example():
    box = np.array([1.0, 2.0, 0.5, 4.0, 2.0, 1.0, np.pi / 2])  # length along +y after the yaw
    pts = np.array([[1.0, 3.9, 0.5], [2.5, 2.0, 0.5], [1.9, 2.0, 0.9], [1.0, 2.0, 1.1]])
    assert points_in_box_global(pts, box).tolist() == [True, False, True, False]


# ----------------------------------------------------------------------------------------- dataset
def test_devkit_loads_boxes_and_counts_agree(nusc):
    from nuscenes.utils.data_classes import LidarPointCloud
    from nuscenes.utils.geometry_utils import points_in_box

    assert len(nusc.scene) == 1 and len(nusc.sample) == 3
    n_boxes = n_with_points = 0
    for sample in nusc.sample:
        path, boxes, _ = nusc.get_sample_data(sample["data"]["LIDAR_TOP"])
        assert len(boxes) == len(sample["anns"]) > 20
        pc = LidarPointCloud.from_file(path)
        for b in boxes:
            ann = nusc.get("sample_annotation", b.token)
            assert int(points_in_box(b, pc.points[:3]).sum()) == ann["num_lidar_pts"]
            n_boxes += 1
            n_with_points += ann["num_lidar_pts"] > 0
    assert n_with_points > 0.5 * n_boxes


def test_tables_timing_and_motion(nusc):
    samples = sorted(nusc.sample, key=lambda s: s["timestamp"])
    assert np.allclose(np.diff([s["timestamp"] for s in samples]), 500_000, atol=1000)  # 2 Hz keyframes
    sweeps = sorted((sd for sd in nusc.sample_data if sd["channel"] == "LIDAR_TOP"), key=lambda sd: sd["timestamp"])
    assert len(sweeps) == 21
    assert np.allclose(np.diff([sd["timestamp"] for sd in sweeps]), 50_000, atol=1000)  # 20 Hz LiDAR
    for s in samples:
        assert set(s["data"]) == {"LIDAR_TOP", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK",
                                  "CAM_BACK_LEFT", "CAM_FRONT_LEFT"}
        lidar = nusc.get("sample_data", s["data"]["LIDAR_TOP"])
        assert lidar["timestamp"] == s["timestamp"] and lidar["is_key_frame"]
        p_l = np.array(nusc.get("ego_pose", lidar["ego_pose_token"])["translation"])
        for ch, tok in s["data"].items():
            if not ch.startswith("CAM"):
                continue
            cam = nusc.get("sample_data", tok)
            dt = cam["timestamp"] - lidar["timestamp"]
            assert 5_000 <= dt <= 60_000, (ch, dt)  # tens of ms after the LiDAR
            assert (cam["width"], cam["height"]) == (1600, 900)
            K = np.array(nusc.get("calibrated_sensor", cam["calibrated_sensor_token"])["camera_intrinsic"])
            assert 800 < K[0, 0] < 1300 and 780 < K[0, 2] < 850
            p_c = np.array(nusc.get("ego_pose", cam["ego_pose_token"])["translation"])
            assert 0.02 < np.linalg.norm(p_c - p_l) < 1.0  # the ego moved between the two captures
    for inst in nusc.instance:
        chain, tok = [], inst["first_annotation_token"]
        while tok:
            chain.append(tok)
            tok = nusc.get("sample_annotation", tok)["next"]
        assert len(chain) == inst["nbr_annotations"] and chain[-1] == inst["last_annotation_token"]


def test_lidar_sweep_format(world_root, nusc):
    root = world_root[0]
    for sample in nusc.sample:
        sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        raw = np.fromfile(root / sd["filename"], dtype=np.float32)
        pts = raw.reshape(-1, 5)
        assert 28_000 <= len(pts) <= 45_000
        assert set(np.unique(pts[:, 4]).astype(int)) <= set(range(32)) and len(np.unique(pts[:, 4])) >= 25
        assert pts[:, 3].min() >= 0 and pts[:, 3].max() <= 255 and pts[:, 3].std() > 1
        r = np.linalg.norm(pts[:, :3], axis=1)
        assert r.min() >= 0.9 and r.max() <= 70.5
        # ground ~1.84 m below the sensor dominates the low points
        assert abs(np.median(pts[pts[:, 2] < -1.0, 2]) + 1.84) < 0.4


def test_images_are_rendered_jpegs(world_root, nusc):
    from PIL import Image

    sample = nusc.sample[0]
    sd = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
    with Image.open(world_root[0] / sd["filename"]) as im:
        assert im.format == "JPEG" and im.size == (1600, 900)
        arr = np.asarray(im.convert("RGB")).astype(float)
    assert arr[:200].mean(axis=(0, 1))[2] > arr[:200].mean(axis=(0, 1))[0]  # sky on top is blue-ish
    assert arr.std() > 20


def test_detections_file(world_root, nusc):
    det = json.loads((world_root[0] / VERSION / "detections_2d.json").read_text())
    assert det["format"] == "clip2.detections_2d/v1"
    cams = [sd for sd in nusc.sample_data if sd["channel"].startswith("CAM")]
    assert set(det["images"]) == {sd["token"] for sd in cams}
    assert det["by_filename"] == {sd["filename"]: sd["token"] for sd in cams}
    instances = {i["token"] for i in nusc.instance}
    tp = fp = 0
    labels = set()
    for tok, img in det["images"].items():
        assert img["sample_data_token"] == tok and img["width"] == 1600 and img["height"] == 900
        for d in img["detections"]:
            x0, y0, x1, y1 = d["box_xyxy"]
            assert 0 <= x0 < x1 <= 1600 and 0 <= y0 < y1 <= 900
            assert 0 < d["score"] <= 1 and isinstance(d["label"], str) and d["label"]
            if d["instance_token"] is None:
                fp += 1
            else:
                assert d["instance_token"] in instances
                tp += 1
            labels.add(d["label"])
    assert tp > 50 and 0 < fp < tp
    assert {"car", "person"} <= labels or {"car", "pedestrian"} <= labels
    assert len(labels) >= 12  # synonyms and confusions, not just class names


def test_same_seed_identical_files_and_other_seed_differs(tmp_path):
    def digest(root: Path):
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}

    kw = dict(scenes=1, seconds=0.5, cameras=("CAM_FRONT", "CAM_BACK"), render_scale=0.1)
    generate(SynthConfig(out=tmp_path / "a", seed=11, workers=1, **kw), progress=False)
    generate(SynthConfig(out=tmp_path / "b", seed=11, workers=2, **kw), progress=False)
    generate(SynthConfig(out=tmp_path / "c", seed=12, workers=1, **kw), progress=False)
    a, b, c = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert a == b  # identical, whatever the worker count
    assert a[f"{VERSION}/sample_annotation.json"] != c[f"{VERSION}/sample_annotation.json"]
    pcd_a = sorted(v for k, v in a.items() if k.endswith(".pcd.bin"))
    pcd_c = sorted(v for k, v in c.items() if k.endswith(".pcd.bin"))
    assert pcd_a != pcd_c


def test_bad_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown camera"):
        SynthConfig(out=tmp_path, cameras=("CAM_TOP",))
    with pytest.raises(ValueError):
        SynthConfig(out=tmp_path, seconds=0.1)
