"""Camera geometry from real sensor_msgs/CameraInfo messages: P or K, the auto rule, stereo P.

Hand-worked numbers: a rectified camera whose P differs from K, and the right camera of a stereo
pair with fx 700 px and a 0.12 m baseline (P[0,3] = -700 * 0.12 = -84), whose LiDAR points must
land on exactly the pixel ``P @ [T X; 1]`` gives.
"""
import numpy as np
import pytest
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo

from clip2_core.geometry import project_points
from clip2_ros.conversions import (
    camera_info_intrinsics,
    camera_info_to_intrinsics,
    intrinsics_source,
    is_rectified_topic,
    make_camera_info,
    rgb_to_compressed_image,
    rgb_to_image,
)
from clip2_ros.params import CameraParams

SIZE = (640, 480)
K_RAW = np.array([[500.0, 0, 321], [0, 505.0, 242], [0, 0, 1]])  # before rectification
K_RECT = np.array([[480.0, 0, 318], [0, 480.0, 236], [0, 0, 1]])  # P[:, :3] after rectification
# LiDAR (x forward, y left, z up) -> optical (x right, y down, z forward), camera 0.3 m behind, 1.2 m up
T_LIDAR_TO_CAM = np.array([[0, -1, 0, 0], [0, 0, -1, 1.2], [1, 0, 0, 0.3], [0, 0, 0, 1]], dtype=float)


def info_with_p(P, K=K_RAW, size=SIZE) -> CameraInfo:
    msg = make_camera_info(K, size, frame_id="cam")
    msg.p = np.asarray(P, dtype=np.float64).reshape(-1).tolist()
    return msg


def stereo_right_p(fx=700.0, baseline=0.12) -> np.ndarray:
    P = np.array([[fx, 0, 330.0, -fx * baseline], [0, fx, 240.0, 0], [0, 0, 1, 0]])
    return P


def project_with_p(P, T, pts):
    """The reference: pixel = dehomogenised P @ [T X; 1]."""
    X = np.c_[pts, np.ones(len(pts))] @ T.T  # (N, 4) camera frame, homogeneous
    uvw = X @ P.T
    return uvw[:, :2] / uvw[:, 2:3]


def lidar_points(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return np.c_[rng.uniform(4, 40, n), rng.uniform(-8, 8, n), rng.uniform(-1.5, 2.0, n)]


def test_k_or_p_is_taken_as_asked():
    msg = info_with_p(np.c_[K_RECT, np.zeros(3)])
    cam_k = camera_info_intrinsics(msg, source="K")
    np.testing.assert_array_equal(cam_k.K, K_RAW)
    assert cam_k.source == "K" and cam_k.size_wh == SIZE and not cam_k.offset.any()
    cam_p = camera_info_intrinsics(msg, source="P")
    np.testing.assert_array_equal(cam_p.K, K_RECT)
    assert cam_p.source == "P" and cam_p.size_wh == SIZE and not cam_p.offset.any()
    # monocular P: the extrinsics are unchanged
    np.testing.assert_array_equal(cam_p.lidar_to_camera(T_LIDAR_TO_CAM), T_LIDAR_TO_CAM)
    K2, size = camera_info_to_intrinsics(msg, source="P")
    np.testing.assert_array_equal(K2, K_RECT)
    assert size == SIZE
    np.testing.assert_array_equal(camera_info_to_intrinsics(msg)[0], K_RAW)  # default: K, as before


@pytest.mark.parametrize("topic", ["/cam/image_rect", "/cam/image_rect_color", "/CAM_FRONT/image_rect_compressed",
                                   "/cam/image_rect/compressed", "/stereo/rectified/left", "rect_image"])
def test_auto_takes_p_on_rectified_topics(topic):
    assert is_rectified_topic(topic)
    msg = info_with_p(np.c_[K_RECT, np.zeros(3)])
    assert intrinsics_source("auto", topic, msg) == "P"
    np.testing.assert_array_equal(camera_info_intrinsics(msg, "auto", topic).K, K_RECT)


@pytest.mark.parametrize("topic", ["/cam/image_raw", "/cam/image", "/cam/image/compressed", "/direct/image",
                                   "/cam/image_corrected", ""])
def test_auto_takes_k_on_other_topics(topic):
    assert not is_rectified_topic(topic)
    msg = info_with_p(np.c_[K_RECT, np.zeros(3)])
    assert intrinsics_source("auto", topic, msg) == "K"
    np.testing.assert_array_equal(camera_info_intrinsics(msg, "auto", topic).K, K_RAW)


def test_auto_falls_back_to_k_when_p_is_unset():
    msg = info_with_p(np.zeros((3, 4)))  # an uncalibrated driver's P
    assert intrinsics_source("auto", "/cam/image_rect", msg) == "K"
    cam = camera_info_intrinsics(msg, "auto", "/cam/image_rect")
    np.testing.assert_array_equal(cam.K, K_RAW)
    assert cam.source == "K"
    # an explicit setting wins over the topic name
    assert intrinsics_source("K", "/cam/image_rect", info_with_p(np.c_[K_RECT, np.zeros(3)])) == "K"
    assert intrinsics_source("P", "/cam/image_raw", info_with_p(np.c_[K_RECT, np.zeros(3)])) == "P"


def test_stereo_right_camera_projects_like_p():
    P = stereo_right_p()
    cam = camera_info_intrinsics(info_with_p(P), source="P")
    np.testing.assert_array_equal(cam.K, P[:, :3])
    np.testing.assert_allclose(cam.offset, [-0.12, 0.0, 0.0], atol=1e-12)  # K^-1 P[:,3] = (-B, 0, 0)
    T = cam.lidar_to_camera(T_LIDAR_TO_CAM)
    np.testing.assert_allclose(T[:3, :3], T_LIDAR_TO_CAM[:3, :3])
    np.testing.assert_allclose(T[:3, 3], T_LIDAR_TO_CAM[:3, 3] + [-0.12, 0, 0])
    pts = lidar_points()
    uv, _, _ = project_points(pts, cam.K, T)
    np.testing.assert_allclose(uv, project_with_p(P, T_LIDAR_TO_CAM, pts), atol=1e-9)
    # one point by hand: 10 m ahead on the LiDAR axis -> camera (0, 1.2, 10.3); shifted by -0.12 in x
    uv1, _, _ = project_points(np.array([[10.0, 0, 0]]), cam.K, T)
    np.testing.assert_allclose(uv1[0], [700 * -0.12 / 10.3 + 330, 700 * 1.2 / 10.3 + 240], atol=1e-9)
    # ignoring the translation would be off by fx * B / z = 8.2 px here
    uv_wrong, _, _ = project_points(np.array([[10.0, 0, 0]]), cam.K, T_LIDAR_TO_CAM)
    assert uv_wrong[0, 0] - uv1[0, 0] == pytest.approx(84 / 10.3)


def test_general_p_translation_projects_like_p():
    """Any P[:, 3] (also Ty and Tz, and skew) folds into the extrinsics exactly."""
    P = np.array([[650.0, 1.5, 300, -40.0], [0, 640.0, 250, 12.0], [0, 0, 1, 0.05]])
    cam = camera_info_intrinsics(info_with_p(P), source="P")
    pts = lidar_points(seed=1)
    uv, depth, _ = project_points(pts, cam.K, cam.lidar_to_camera(T_LIDAR_TO_CAM))
    np.testing.assert_allclose(uv, project_with_p(P, T_LIDAR_TO_CAM, pts), atol=1e-9)
    X = np.c_[pts, np.ones(len(pts))] @ T_LIDAR_TO_CAM.T
    np.testing.assert_allclose(depth, (X @ P.T)[:, 2])  # depth is P's third row, as the homogeneous w


def test_stereo_p_cannot_become_a_bare_k():
    with pytest.raises(ValueError, match="translation column .* camera_info_intrinsics"):
        camera_info_to_intrinsics(info_with_p(stereo_right_p()), source="P")


def test_invalid_p_or_setting_is_a_clear_error():
    with pytest.raises(ValueError, match="CameraInfo P is all zeros.*intrinsics K"):
        camera_info_intrinsics(info_with_p(np.zeros((3, 4))), source="P")
    bad = np.c_[K_RECT, np.zeros(3)]
    bad[0, 0] = -480.0
    with pytest.raises(ValueError, match=r"CameraInfo P is not a pinhole projection \(its focal lengths"):
        camera_info_intrinsics(info_with_p(bad), source="P")
    bad = np.c_[K_RECT, np.zeros(3)]
    bad[2, 2] = 0.0
    with pytest.raises(ValueError, match="CameraInfo P is not a pinhole projection.*last row 0 0 1"):
        camera_info_intrinsics(info_with_p(bad), source="P")
    bad = np.c_[K_RECT, [np.nan, 0, 0]]
    with pytest.raises(ValueError, match="CameraInfo P is not a pinhole projection.*non-finite"):
        camera_info_intrinsics(info_with_p(bad), source="P")
    msg = info_with_p(np.c_[K_RECT, np.zeros(3)])
    msg.k = [0.0] * 9
    with pytest.raises(ValueError, match="CameraInfo K is not a pinhole matrix"):
        camera_info_intrinsics(msg, source="K")
    camera_info_intrinsics(msg, source="P")  # a broken K does not matter when P is used
    with pytest.raises(ValueError, match=r"intrinsics must be one of \['auto', 'P', 'K'\], got 'Q'"):
        camera_info_intrinsics(msg, source="Q")
    with pytest.raises(ValueError, match="no image size"):
        camera_info_intrinsics(info_with_p(np.c_[K_RECT, np.zeros(3)], size=(0, 0)), source="P")


def _camera(intrinsics, image_topic="/stereo/right/image_rect", compressed=False):
    return CameraParams(name="CAM_RIGHT", image_topic=image_topic, compressed=compressed,
                        camera_info_topic="/stereo/right/camera_info", frame_id="", T_lidar_to_cam=T_LIDAR_TO_CAM,
                        intrinsics=intrinsics)


def test_node_camera_view_uses_the_setting():
    """The node's camera_view with real messages: auto on a rectified topic projects like P @ [T X; 1]."""
    from clip2_ros.node import camera_view

    P = stereo_right_p()
    info = info_with_p(P)
    image = rgb_to_image(np.zeros((SIZE[1], SIZE[0], 3), np.uint8), "bgr8", frame_id="cam")
    pts = lidar_points(seed=2)
    for setting in ("auto", "P"):
        view = camera_view(_camera(setting), image, info, T_LIDAR_TO_CAM, stamp=1.0)
        np.testing.assert_array_equal(view.K, P[:, :3])
        uv, _, _ = project_points(pts, view.K, view.T_lidar_to_cam)
        np.testing.assert_allclose(uv, project_with_p(P, T_LIDAR_TO_CAM, pts), atol=1e-9)
        assert view.size_wh == SIZE and view.image.shape == (SIZE[1], SIZE[0], 3)
    for cfg in (_camera("K"), _camera("auto", image_topic="/stereo/right/image_raw")):
        view = camera_view(cfg, image, info, T_LIDAR_TO_CAM, stamp=1.0)
        np.testing.assert_array_equal(view.K, K_RAW)
        np.testing.assert_array_equal(view.T_lidar_to_cam, T_LIDAR_TO_CAM)
    with pytest.raises(ValueError, match="P is all zeros"):
        camera_view(_camera("P"), image, info_with_p(np.zeros((3, 4))), T_LIDAR_TO_CAM, stamp=1.0)
    # the caller's extrinsics are not modified in place
    assert T_LIDAR_TO_CAM[0, 3] == 0.0


def test_bag_camera_info_has_p_equal_to_k():
    """clip2 bag's CameraInfo (nuScenes / synthetic cameras) has P = [K | 0]: auto on its
    image_rect_compressed topic gives exactly the K result, extrinsics unchanged."""
    from clip2_ros.bag import _Messages, image_topic
    from clip2_ros.node import camera_view

    K = np.array([[1266.4, 0, 816.27], [0, 1266.4, 491.51], [0, 0, 1]])
    msgs = _Messages()
    info = deserialize_message(bytes(msgs.serialize(msgs.camera_info(K, 64, 48, 1_500_000_000, "CAM_FRONT"))),
                               CameraInfo)
    np.testing.assert_array_equal(np.asarray(info.p).reshape(3, 4), np.c_[K, np.zeros(3)])
    topic = image_topic("CAM_FRONT")
    assert topic == "/CAM_FRONT/image_rect_compressed" and intrinsics_source("auto", topic, info) == "P"
    by_k = camera_info_intrinsics(info, "K")
    by_auto = camera_info_intrinsics(info, "auto", topic)
    np.testing.assert_array_equal(by_auto.K, by_k.K)
    assert not by_auto.offset.any() and by_auto.size_wh == by_k.size_wh == (64, 48)
    image = rgb_to_compressed_image(np.zeros((48, 64, 3), np.uint8), "jpeg")
    views = [camera_view(_camera(s, image_topic=topic, compressed=True), image, info, T_LIDAR_TO_CAM, 1.5)
             for s in ("auto", "K", "P")]
    for v in views:
        np.testing.assert_array_equal(v.K, K)
        np.testing.assert_array_equal(v.T_lidar_to_cam, T_LIDAR_TO_CAM)
