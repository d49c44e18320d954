"""NuScenesReader on a generated world: point counts vs the devkit, projection onto rendered objects,
camera timing, class maps, splits, multi-sweep accumulation, GT crops."""
import json
from pathlib import Path

import numpy as np
import pytest

from clip2_core.datasets.nuscenes import (DETECTION_CLASSES, NuScenesReader, box_point_masks, gt_object_crops,
                                          load_class_map, split_scene_names)
from clip2_core.datasets.synth import SynthConfig, generate
from clip2_core.geometry import box_corners, box_to_2d, iou_2d, project_points

VERSION = "v1.0-synth"
BOX_LIKE = {"car", "truck", "bus", "trailer", "construction_vehicle", "barrier", "trash_can"}
MOVING = {"vehicle.moving", "cycle.with_rider", "pedestrian.moving"}


@pytest.fixture(scope="session")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("reader_world")
    generate(SynthConfig(out=root, scenes=2, seconds=1.0, seed=21, masks=True), progress=False)
    return root


@pytest.fixture(scope="session")
def reader(root):
    return NuScenesReader(root, VERSION, class_map="long_tail")


def test_iterates_keyframes_with_points_cameras_and_boxes(reader):
    assert len(reader) == 4  # 2 scenes x 2 keyframes
    frames = list(reader)
    f = frames[0]
    assert f.points.dtype == np.float32 and f.points.shape[1] == 5
    assert f.point_fields == ("x", "y", "z", "intensity", "ring")
    assert set(f.cameras) == {"CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT"}
    cam = f.cameras["CAM_FRONT"]
    assert cam.image.shape == (900, 1600, 3) and cam.image.dtype == np.uint8
    assert cam.size_wh == (1600, 900) and cam.stamp > f.stamp
    assert {fr.scene for fr in frames} == {"scene-0001", "scene-0002"}
    b = f.gt_boxes[0]
    assert b.token and b.attributes["instance_token"] and "num_lidar_pts" in b.attributes
    # LIDAR_TOP: y forward. The ego drives along the road, so moving traffic in the ego's own
    # direction is yawed about +90 deg in the LiDAR frame.
    same_dir = [bx for bx in f.gt_boxes if "vehicle.moving" in bx.attributes["attributes"] and abs(bx.center[0]) < 5]
    assert same_dir and all(abs(abs(np.cos(bx.yaw))) < 0.2 for bx in same_dir)


def test_box_point_counts_equal_devkit_and_stored(reader, root):
    from nuscenes.utils.data_classes import LidarPointCloud
    from nuscenes.utils.geometry_utils import points_in_box

    nusc = reader.nusc
    checked = 0
    for tok in reader.sample_tokens:
        f = reader.frame(tok)
        ours = box_point_masks(f).sum(axis=0)
        stored = np.array([b.attributes["num_lidar_pts"] for b in f.gt_boxes])
        assert np.array_equal(ours, stored)
        path, boxes, _ = nusc.get_sample_data(nusc.get("sample", tok)["data"]["LIDAR_TOP"])
        pc = LidarPointCloud.from_file(path)
        devkit = {b.token: int(points_in_box(b, pc.points[:3]).sum()) for b in boxes}
        assert [devkit[b.token] for b in f.gt_boxes] == ours.tolist()
        checked += len(f.gt_boxes)
    assert checked > 50


def test_projected_boxes_land_on_rendered_objects(reader, root):
    """Each unoccluded, untruncated object: the projected GT box covers its rendered pixels, and for
    box-shaped classes (whose parts fill their box) the projected box and the mask's box have IoU >= 0.7.

    Thin, non-box shapes (a pedestrian or bicycle seen from the side) cannot reach that IoU with any
    3D box, so for them the test asks for containment; moving objects are captured by the camera
    tens of ms after the LiDAR, so they are checked with the containment rule only at a looser level.
    """
    from PIL import Image

    index = json.loads((root / "synth_masks" / "instances.json").read_text())
    ids, pixels = index["instances"], index["pixels"]["images"]
    ious, n_checked = [], 0
    for f in reader:
        for ch, view in f.cameras.items():
            mask = np.asarray(Image.open(root / "synth_masks" / ch / (Path(view.image_path).stem + ".png")))
            s = view.size_wh[0] / mask.shape[1]
            for b in f.gt_boxes:
                vis, sil = pixels[view.token].get(b.attributes["instance_token"], (0, 0))
                if sil < 30 or vis < 0.95 * sil:
                    continue  # too small or partly occluded in this camera
                arr = b.as_array()
                _, _, inside = project_points(box_corners(arr[None])[0], view.K, view.T_lidar_to_cam, view.size_wh)
                if not inside.all():
                    continue  # truncated by the image border
                rows, cols = np.nonzero(mask == ids[b.attributes["instance_token"]])
                box2d = box_to_2d(arr, view.K, view.T_lidar_to_cam, view.size_wh)
                u, v = (cols + 0.5) * s, (rows + 0.5) * s
                contained = np.mean((u >= box2d[0] - s) & (u <= box2d[2] + s) & (v >= box2d[1] - s) & (v <= box2d[3] + s))
                moving = bool(MOVING & set(b.attributes["attributes"]))
                assert contained >= (0.85 if moving else 0.97), (b.label, ch, contained)
                iou = iou_2d(box2d, [cols.min() * s, rows.min() * s, (cols.max() + 1) * s, (rows.max() + 1) * s])
                if b.label in BOX_LIKE:
                    assert iou >= 0.7, (b.label, ch, iou)
                ious.append(iou)
                n_checked += 1
    assert n_checked >= 40
    assert np.median(ious) >= 0.75


def test_lidar_to_camera_goes_through_both_ego_poses(reader):
    nusc = reader.nusc
    f = reader[1]
    sample = nusc.get("sample", f.token)
    lidar_sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    cam_sd = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
    p_l = np.array(nusc.get("ego_pose", lidar_sd["ego_pose_token"])["translation"])
    p_c = np.array(nusc.get("ego_pose", cam_sd["ego_pose_token"])["translation"])
    moved = np.linalg.norm(p_c - p_l)
    assert moved > 0.05
    # the transform that (wrongly) assumes one ego pose differs from ours by about the ego motion
    T_static = np.linalg.inv(reader.sensor_to_global(cam_sd["token"])) @ reader.sensor_to_global(cam_sd["token"])
    T_lidar_ego = np.linalg.inv(reader.sensor_to_global(lidar_sd["token"]))
    assert np.allclose(T_static, np.eye(4))
    T_ours = f.cameras["CAM_FRONT"].T_lidar_to_cam
    cs_cam = nusc.get("calibrated_sensor", cam_sd["calibrated_sensor_token"])
    cs_lidar = nusc.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"])
    from pyquaternion import Quaternion

    def mat(rec):
        T = np.eye(4)
        T[:3, :3] = Quaternion(rec["rotation"]).rotation_matrix
        T[:3, 3] = rec["translation"]
        return T

    T_one_pose = np.linalg.inv(mat(cs_cam)) @ mat(cs_lidar)
    shift = np.linalg.norm(T_ours[:3, 3] - T_one_pose[:3, 3])
    assert shift == pytest.approx(moved, rel=0.05)
    assert T_lidar_ego.shape == (4, 4)


def test_class_maps(root, reader, tmp_path):
    det = NuScenesReader(root, VERSION, class_map=None, nusc=reader.nusc, cameras=())
    labels = {b.label for f in det for b in f.gt_boxes}
    assert labels <= set(DETECTION_CLASSES) and {"car", "pedestrian"} <= labels
    long_tail = {b.label for f in reader for b in f.gt_boxes}
    assert long_tail - set(DETECTION_CLASSES)  # long-tail classes kept
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"vehicle.car": "automobile", "vehicle.truck": None}))
    only_cars = NuScenesReader(root, VERSION, class_map=path, nusc=reader.nusc, cameras=())
    assert {b.label for f in only_cars for b in f.gt_boxes} == {"automobile"}
    with pytest.raises(FileNotFoundError):
        load_class_map(tmp_path / "missing.json")
    with pytest.raises(ValueError):
        load_class_map({"vehicle.car": 3})


def test_splits_and_scene_selection(root, reader):
    assert split_scene_names(reader.nusc, "train", root, VERSION) == ["scene-0001"]
    assert split_scene_names(reader.nusc, "val", root, VERSION) == ["scene-0002"]
    val = NuScenesReader(root, VERSION, split="val", nusc=reader.nusc, cameras=())
    assert len(val) == 2 and {f.scene for f in val} == {"scene-0002"}
    one = NuScenesReader(root, VERSION, scenes=["scene-0001"], nusc=reader.nusc, cameras=())
    assert len(one) == 2 and one.scene_sample_tokens("scene-0001") == one.sample_tokens
    with pytest.raises(ValueError):
        one.scene_sample_tokens("scene-0002")
    with pytest.raises(ValueError):
        NuScenesReader(root, VERSION, split="nope", nusc=reader.nusc)
    with pytest.raises(ValueError):
        NuScenesReader(root, VERSION, scenes=["scene-9999"], nusc=reader.nusc)
    with pytest.raises(FileNotFoundError):
        NuScenesReader(root, "v9.9-missing")


def test_multisweep_accumulation_aligns_static_objects(root, reader):
    multi = NuScenesReader(root, VERSION, nsweeps=5, nusc=reader.nusc, cameras=(), class_map="long_tail")
    f1, f5 = reader[1], multi[1]
    assert f5.point_fields[-1] == "time_lag" and f5.points.shape[1] == 6
    lags = np.unique(np.round(f5.points[:, 5], 3))
    assert np.allclose(lags, [0.0, 0.05, 0.1, 0.15, 0.2], atol=2e-3)
    assert len(f5.points) > 4 * len(f1.points)
    assert np.array_equal(f5.points[: len(f1.points), :5], f1.points)
    # previous sweeps of parked cars land inside the keyframe's boxes (the ego moved meanwhile)
    parked = [i for i, b in enumerate(f5.gt_boxes) if "vehicle.parked" in b.attributes["attributes"]
              and b.attributes["num_lidar_pts"] > 50]
    assert parked
    masks = box_point_masks(f5)
    old = f5.points[:, 5] > 0.1
    for i in parked:
        box = f5.gt_boxes[i]
        near = np.linalg.norm(f5.points[:, :2] - box.center[:2], axis=1) < 0.5 * np.hypot(box.size[0], box.size[1])
        above = f5.points[:, 2] > box.center[2] - box.size[2] / 2 + 0.2
        sel = near & above & old
        assert sel.sum() > 20 and masks[sel, i].mean() > 0.9


def test_gt_object_crops(reader):
    f = reader[0]
    crops = gt_object_crops(f, min_points=10)
    assert crops and all(len(c.points) >= 10 for c in crops)
    counts = {b.token: b.attributes["num_lidar_pts"] for b in f.gt_boxes}
    assert all(len(c.points) == counts[c.box.token] for c in crops)
    assert len(crops) == sum(n >= 10 for n in counts.values())
    cars = gt_object_crops(f, min_points=1, labels=["car"])
    assert cars and {c.label for c in cars} == {"car"}


def test_lazy_images(root, reader):
    lazy = NuScenesReader(root, VERSION, load_images=False, cameras=["CAM_BACK"], nusc=reader.nusc)
    cam = lazy[0].cameras["CAM_BACK"]
    assert cam.image is None and Path(cam.image_path).is_file()
    assert list(lazy[0].cameras) == ["CAM_BACK"]


def test_pose_matrix_matches_pyquaternion_for_tilted_poses():
    from pyquaternion import Quaternion

    from clip2_core.datasets.nuscenes import pose_matrix
    from clip2_core.geometry import invert_transform

    rng = np.random.default_rng(3)
    for _ in range(10):
        q = Quaternion(rng.normal(size=4)).normalised
        rec = {"rotation": list(q.elements), "translation": list(rng.normal(size=3) * 10)}
        T = pose_matrix(rec)
        assert np.allclose(T[:3, :3], q.rotation_matrix, atol=1e-12)
        assert np.allclose(T[:3, 3], rec["translation"])
        assert np.allclose(invert_transform(T) @ T, np.eye(4), atol=1e-12)


def test_multisweep_matches_devkit_and_the_node_accumulator(root, reader):
    """The reader's accumulation equals nuscenes-devkit's LidarPointCloud.from_file_multisweep, and
    the streaming SweepAccumulator the node runs gives the same frame from the same sweeps and poses."""
    from nuscenes.utils.data_classes import LidarPointCloud

    from clip2_core.accumulate import AccumulateConfig, SweepAccumulator

    multi = NuScenesReader(root, VERSION, nsweeps=4, nusc=reader.nusc, cameras=(), sweep_min_range=0.0)
    tok = multi.sample_tokens[1]
    f = multi.frame(tok)
    pc, times = LidarPointCloud.from_file_multisweep(reader.nusc, reader.nusc.get("sample", tok), "LIDAR_TOP",
                                                     "LIDAR_TOP", nsweeps=4, min_distance=0.0)
    assert pc.points.shape[1] == len(f.points) and np.unique(f.points[:, 5]).size == 4
    np.testing.assert_allclose(f.points[:, :3], pc.points[:3].T, atol=1e-4)
    np.testing.assert_array_equal(f.points[:, 3], pc.points[3])
    np.testing.assert_allclose(f.points[:, 5], times[0], atol=1e-6)

    # the node's path: every sweep in time order, each with its sensor pose
    nusc = reader.nusc
    chain = []
    sd_tok = nusc.get("sample", tok)["data"]["LIDAR_TOP"]
    while sd_tok and len(chain) < 6:  # the keyframe and up to five before it
        chain.append(sd_tok)
        sd_tok = nusc.get("sample_data", sd_tok)["prev"]
    assert len(chain) >= 4
    acc = SweepAccumulator(AccumulateConfig(sweeps=4, min_range=0.0))
    for t in reversed(chain):
        sd = nusc.get("sample_data", t)
        merged, n = acc.add(reader.load_points(t), sd["timestamp"] * 1e-6, reader.sensor_to_global(t))
    assert n == 4
    np.testing.assert_allclose(merged, f.points, atol=2e-4)
    # the ego body of earlier sweeps is dropped; no pose or a jump back in time: the sweep alone
    far = NuScenesReader(root, VERSION, nsweeps=4, nusc=reader.nusc, cameras=()).frame(tok)
    old = far.points[:, 5] > 0
    assert len(far.points) <= len(f.points)
    cur = reader.load_points(chain[0])
    assert acc.add(cur, 1e9, None)[1] == 1 and len(acc) == 0
    acc.add(cur, 10.0, np.eye(4))
    assert acc.add(cur, 5.0, np.eye(4))[1] == 1
    with pytest.raises(ValueError, match="sweeps"):
        AccumulateConfig(sweeps=0)
    assert old.any()
