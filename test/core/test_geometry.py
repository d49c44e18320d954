"""Worked examples for clip2_core.geometry, plus the real KITTI frame."""
import json

import numpy as np
import pytest

from clip2_core import geometry as G
from clip2_core.data import sample_frame_dir

KITTI = sample_frame_dir("kitti_000008")


def test_yaw_rotation_quarter_turn():
    R = G.yaw_to_rotation(np.pi / 2)
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)  # +x -> +y: CCW about +z


def test_transform_and_inverse_roundtrip():
    T = G.make_transform(G.yaw_to_rotation(0.3), [1.0, -2.0, 0.5])
    p = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    q = G.transform_points(T, p)
    np.testing.assert_allclose(q[1], [1.0, -2.0, 0.5])  # origin goes to the translation
    np.testing.assert_allclose(G.transform_points(G.invert_transform(T), q), p, atol=1e-12)
    np.testing.assert_allclose(G.invert_transform(T) @ T, np.eye(4), atol=1e-12)


def test_project_points_worked_example():
    # Camera looking along LiDAR +x: cam x = -lidar y, cam y = -lidar z, cam z = lidar x
    T = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    K = np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    pts = np.array([[10.0, 0, 0], [10.0, -1.0, 0.5], [-5.0, 0, 0], [10.0, -6.0, 0]])
    uv, depth, valid = G.project_points(pts, K, T, size_wh=(100, 80))
    np.testing.assert_allclose(uv[0], [50, 40])
    np.testing.assert_allclose(uv[1], [60, 35])  # u = 50 + 100*1/10, v = 40 - 100*0.5/10
    np.testing.assert_allclose(depth[:3], [10, 10, -5])
    assert valid.tolist() == [True, True, False, False]  # behind camera; u = 110 outside width 100
    assert np.isnan(uv[2]).all()


def test_frustum_mask_near_far_and_box():
    T = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    K = np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    pts = np.array([[10.0, 0, 0], [0.2, 0, 0], [200.0, 0, 0], [10.0, 3.0, 0], [-10.0, 0, 0]])
    m = G.frustum_mask(pts, [40, 30, 60, 50], K, T, near=0.5, far=100.0)
    assert m.tolist() == [True, False, False, False, False]


def test_box_corners_worked_example():
    c = G.box_corners(np.array([1.0, 2.0, 3.0, 4.0, 2.0, 1.0, np.pi / 2]))
    assert c.shape == (8, 3)
    # front-left bottom corner: local (+2, +1, -0.5) rotated by 90 deg -> (-1, +2, -0.5)
    np.testing.assert_allclose(c[0], [0.0, 4.0, 2.5], atol=1e-12)
    np.testing.assert_allclose(c.mean(axis=0), [1, 2, 3], atol=1e-12)
    np.testing.assert_allclose(c[:, 2].min(), 2.5)
    assert G.box_corners(np.zeros((3, 7))).shape == (3, 8, 3)


def test_points_in_boxes_oriented():
    box = np.array([[0, 0, 0, 4.0, 1.0, 2.0, np.pi / 4]])
    inside_along_heading = [1.2, 1.2, 0.0]  # 1.7 m along the 45 deg heading: inside (l/2 = 2)
    outside_across = [1.0, -1.0, 0.0]  # 1.41 m across the heading: outside (w/2 = 0.5)
    above = [0, 0, 1.5]
    face = [0, 0, 1.0]  # on the top face: inclusive
    m = G.points_in_boxes(np.array([inside_along_heading, outside_across, above, face, [np.nan, 0, 0]]), box)
    assert m[:, 0].tolist() == [True, False, False, True, False]
    assert G.points_in_boxes(np.zeros((0, 3)), box).shape == (0, 1)
    assert G.points_in_boxes(np.zeros((5, 3)), np.zeros((0, 7))).shape == (5, 0)


def test_box_to_2d_and_partly_behind():
    T = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    K = np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    b = G.box_to_2d([10, 0, 0, 2, 2, 2, 0], K, T, (100, 80))
    # nearest face at depth 9: u = 50 +- 100*1/9, v = 40 +- 100*1/9
    np.testing.assert_allclose(b, [50 - 100 / 9, 40 - 100 / 9, 50 + 100 / 9, 40 + 100 / 9])
    assert G.box_to_2d([-10, 0, 0, 2, 2, 2, 0], K, T, (100, 80)) is None
    # a long box straddling the camera: clipped at the near plane, fills the image
    wide = G.box_to_2d([0, 0, 0, 20, 2, 2, 0], K, T, (100, 80))
    np.testing.assert_allclose(wide, [0, 0, 100, 80])


def test_boxes_to_2d_equals_box_to_2d_per_box():
    T = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    K = np.array([[400.0, 0, 320], [0, 400.0, 240], [0, 0, 1]])
    rng = np.random.default_rng(4)
    # in front, behind, straddling the near plane, far outside the image, tiny
    boxes = np.column_stack([rng.uniform(-15, 40, 400), rng.uniform(-20, 20, 400), rng.uniform(-2, 1, 400),
                             rng.uniform(0.05, 12, 400), rng.uniform(0.05, 3, 400), rng.uniform(0.05, 4, 400),
                             rng.uniform(-np.pi, np.pi, 400)])
    boxes[:3] = [[10, 0, 0, 2, 2, 2, 0], [-10, 0, 0, 2, 2, 2, 0], [0, 0, 0, 20, 2, 2, 0]]
    got, ok = G.boxes_to_2d(boxes, K, T, (640, 480))
    n_none = 0
    for b, g, o in zip(boxes, got, ok):
        ref = G.box_to_2d(b, K, T, (640, 480))
        assert (ref is not None) == bool(o)
        if ref is None:
            n_none += 1
            assert (g == 0).all()
        else:
            np.testing.assert_allclose(g, ref, rtol=0, atol=1e-9)
    assert 50 < n_none < 350  # both outcomes are exercised
    e, k = G.boxes_to_2d(np.zeros((0, 7)), K, T, (640, 480))
    assert e.shape == (0, 4) and k.shape == (0,)


def test_iou_2d():
    assert G.iou_2d([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)
    assert G.iou_2d([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0
    assert G.iou_2d([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0


def test_fit_box_recovers_rotated_rectangle():
    rng = np.random.default_rng(0)
    true = np.array([5.0, -3.0, 0.8, 4.0, 1.8, 1.6, 0.4])
    local = rng.uniform(-0.5, 0.5, (2000, 3)) * true[3:6]
    local[:8] = 0.5 * true[3:6] * G._CORNER_SIGNS  # make the extremes exact
    pts = local @ G.yaw_to_rotation(true[6]).T + true[:3]
    fit = G.fit_box(pts)
    np.testing.assert_allclose(fit[:6], true[:6], atol=1e-6)
    assert fit[6] == pytest.approx(0.4, abs=1e-6)


def test_fit_box_heading_ambiguity_and_degenerate():
    # same rectangle with yaw = 0.4 + pi is reported as 0.4: l >= w, yaw in (-pi/2, pi/2]
    pts = G.box_corners(np.array([0, 0, 0, 3.0, 1.0, 1.0, 0.4 + np.pi]))
    fit = G.fit_box(pts)
    assert fit[6] == pytest.approx(0.4, abs=1e-6) and fit[3] == pytest.approx(3.0)
    one = G.fit_box(np.array([[1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(one[:3], [1, 2, 3])
    assert (one[3:6] > 0).all()
    line = G.fit_box(np.array([[0, 0, 0], [1, 1, 0], [2, 2, 0.0]]))
    assert line[6] == pytest.approx(np.pi / 4) and line[3] == pytest.approx(np.sqrt(8))
    with pytest.raises(ValueError):
        G.fit_box(np.full((3, 3), np.nan))


def test_convex_hull_square_ccw():
    pts = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5]])
    h = G.convex_hull_2d(pts)
    assert h.shape == (4, 2)
    area = 0.5 * np.sum(h[:, 0] * np.roll(h[:, 1], -1) - np.roll(h[:, 0], -1) * h[:, 1])
    assert area == pytest.approx(1.0)  # positive: counter-clockwise


# ---- real data: KITTI 000008 -------------------------------------------------------------


@pytest.fixture(scope="module")
def kitti():
    calib = json.loads((KITTI / "calib.json").read_text())["cameras"]["CAM2"]
    gt = json.loads((KITTI / "gt.json").read_text())["boxes_3d"]
    pts = np.load(KITTI / "points.npy")
    return pts, calib, gt


def _box(g):
    return np.array(g["center"] + g["size_lwh"] + [g["yaw"]])


def test_kitti_boxes_project_onto_annotated_2d_boxes(kitti):
    _, calib, gt = kitti
    K, T, wh = np.array(calib["K"]), np.array(calib["T_lidar_to_cam"]), tuple(calib["image_size_wh"])
    ious = [G.iou_2d(G.box_to_2d(_box(g), K, T, wh), g["bbox_xyxy_cam2"]) for g in gt]
    assert len(ious) == 6
    assert min(ious) >= 0.95, ious


def test_kitti_points_in_boxes_match_reference_counts(kitti):
    pts, _, gt = kitti
    counts = G.points_in_boxes(pts, np.stack([_box(g) for g in gt])).sum(axis=0)
    ref = np.array([g["num_lidar_pts_ref"] for g in gt])
    assert (np.abs(counts - ref) <= 0.10 * ref).all(), (counts, ref)


def test_kitti_all_points_project_into_image(kitti):
    pts, calib, _ = kitti
    _, _, valid = G.project_points(pts, np.array(calib["K"]), np.array(calib["T_lidar_to_cam"]), tuple(calib["image_size_wh"]))
    assert valid.mean() > 0.999


def test_empty_inputs():
    T, K = np.eye(4), np.eye(3)
    assert G.transform_points(T, np.zeros((0, 3))).shape == (0, 3)
    uv, d, v = G.project_points(np.zeros((0, 4)), K, T, (10, 10))
    assert uv.shape == (0, 2) and d.shape == (0,) and v.shape == (0,)
    assert G.frustum_mask(np.zeros((0, 3)), [0, 0, 1, 1], K, T).shape == (0,)


# ---------------------------------------------------------------------------------- quaternions
H = np.sqrt(0.5)  # cos 45 deg = sin 45 deg


def test_quarter_turn_about_z_in_both_orders():
    Rz90 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # +x -> +y
    np.testing.assert_allclose(G.quaternion_to_matrix([0, 0, H, H], scalar_first=False), Rz90, atol=1e-15)
    np.testing.assert_allclose(G.quaternion_to_matrix([H, 0, 0, H], scalar_first=True), Rz90, atol=1e-15)
    np.testing.assert_allclose(G.matrix_to_quaternion(Rz90, scalar_first=False), [0, 0, H, H], atol=1e-15)
    np.testing.assert_allclose(G.matrix_to_quaternion(Rz90, scalar_first=True), [H, 0, 0, H], atol=1e-15)
    np.testing.assert_allclose(G.yaw_to_quaternion(np.pi / 2, scalar_first=True), [H, 0, 0, H], atol=1e-15)
    assert G.quaternion_to_yaw([0, 0, H, H], scalar_first=False) == pytest.approx(np.pi / 2)
    np.testing.assert_allclose(G.quaternion_to_matrix(G.yaw_to_quaternion(0.7, scalar_first=False), scalar_first=False),
                               G.yaw_to_rotation(0.7), atol=1e-15)


def test_quarter_turn_about_x_tilts_y_onto_z():
    Rx90 = G.quaternion_to_matrix([H, H, 0, 0], scalar_first=True)
    np.testing.assert_allclose(Rx90, [[1, 0, 0], [0, 0, -1], [0, 1, 0]], atol=1e-15)
    np.testing.assert_allclose(Rx90 @ [0, 1, 0], [0, 0, 1], atol=1e-15)


def test_tilted_poses_match_pyquaternion():
    from pyquaternion import Quaternion

    rng = np.random.default_rng(7)
    for _ in range(20):
        q = Quaternion(rng.normal(size=4)).normalised  # q.elements is [w, x, y, z]
        wxyz = np.asarray(q.elements)
        np.testing.assert_allclose(G.quaternion_to_matrix(wxyz, scalar_first=True), q.rotation_matrix, atol=1e-12)
        np.testing.assert_allclose(G.quaternion_to_matrix(wxyz[[1, 2, 3, 0]], scalar_first=False), q.rotation_matrix,
                                   atol=1e-12)
        back = G.matrix_to_quaternion(q.rotation_matrix, scalar_first=True)
        np.testing.assert_allclose(back, wxyz if wxyz[0] >= 0 else -wxyz, atol=1e-12)  # canonical sign
    # a 10 deg pitch under a 30 deg heading keeps the heading
    R = G.yaw_to_rotation(np.radians(30)) @ Quaternion(axis=[0, 1, 0], degrees=10).rotation_matrix
    assert G.quaternion_to_yaw(G.matrix_to_quaternion(R, scalar_first=True), scalar_first=True) == pytest.approx(
        np.radians(30))


def test_round_trip_is_batched_normalised_and_canonical():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(50, 4)) * 3.0  # not unit length: normalised on the way in
    R = G.quaternion_to_matrix(q, scalar_first=False)
    assert R.shape == (50, 3, 3)
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    back = G.matrix_to_quaternion(R, scalar_first=False)
    unit = q / np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_allclose(back, np.where(unit[:, 3:] < 0, -unit, unit), atol=1e-12)
    assert (back[:, 3] >= 0).all()
    np.testing.assert_allclose(G.quaternion_to_matrix(-q, scalar_first=False), R, atol=1e-12)  # q and -q agree
    yaws = np.array([-3.0, -0.5, 0.0, 2.0, 4.0, 7.0])
    qy = G.yaw_to_quaternion(yaws, scalar_first=True)
    assert qy.shape == (6, 4) and (qy[:, 0] >= 0).all()
    np.testing.assert_allclose(G.quaternion_to_yaw(qy, scalar_first=True), np.angle(np.exp(1j * yaws)), atol=1e-12)


def test_zero_or_non_finite_quaternion_is_an_error():
    with pytest.raises(ValueError, match="zero length"):
        G.quaternion_to_matrix([0, 0, 0, 0], scalar_first=True)
    with pytest.raises(ValueError, match="zero length"):
        G.quaternion_to_yaw([0, 0, 0, 0], scalar_first=False)
    with pytest.raises(ValueError, match="not finite"):
        G.quaternion_to_matrix([[0, 0, 0, 1], [np.nan, 0, 0, 1]], scalar_first=False)
    with pytest.raises(ValueError, match="4 components"):
        G.quaternion_to_matrix([1, 0, 0], scalar_first=True)
    with pytest.raises(ValueError, match="non-finite"):
        G.matrix_to_quaternion(np.full((3, 3), np.inf), scalar_first=True)
