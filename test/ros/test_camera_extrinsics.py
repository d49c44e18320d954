"""LiDAR -> camera extrinsics in the node: ego motion between the sweep and the image compensated.

(a) ``compensated_extrinsics`` against the offline nuScenes reader on a generated world: the LiDAR
pose at the sweep stamp and the camera pose at the image stamp, chained through the world frame,
give exactly ``NuScenesReader.frame(...).cameras[cam].T_lidar_to_cam``, which differs from the
same-time transform by the ego motion between the two stamps.
(b) the node's order of sources, with a duck-typed tf2 buffer (tf2_ros is not installed here):
``lookup_transform_full`` through ``tf_fixed_frame`` at the two stamps, else the latest
``lookup_transform``, else ``cameras.<NAME>.T_lidar_to_cam``, each fallback counted and warned.
"""
from types import SimpleNamespace

import numpy as np
import pytest
from builtin_interfaces.msg import Time as TimeMsg
from geometry_msgs.msg import TransformStamped
from rclpy.parameter import Parameter

from clip2_core.datasets.nuscenes import NuScenesReader, pose_matrix
from clip2_core.geometry import invert_transform, make_transform, matrix_to_quaternion
from clip2_ros.conversions import make_camera_info, rgb_to_compressed_image, stamp_to_seconds
from clip2_ros.node import LidarOpenVocabNode, compensated_extrinsics

VERSION = "v1.0-synth"
CAMERAS = ("CAM_FRONT", "CAM_BACK")


# ---------------------------------------------------------------------------------------------- (a)
@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    from clip2_core.datasets.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("extrinsics_world") / "synth"
    generate(SynthConfig(out=root, scenes=1, seconds=0.5, seed=3, cameras=CAMERAS, render_scale=0.05, workers=1,
                         detections=False), progress=False)
    return NuScenesReader(root, VERSION, cameras=CAMERAS, load_images=False)


def _records(nusc, sd_token):
    """(sample_data, ego pose -> world, sensor -> ego) of one sample_data, from the tables."""
    sd = nusc.get("sample_data", sd_token)
    ego = pose_matrix(nusc.get("ego_pose", sd["ego_pose_token"]))
    cal = pose_matrix(nusc.get("calibrated_sensor", sd["calibrated_sensor_token"]))
    return sd, ego, cal


def test_compensated_extrinsics_equal_the_offline_reader(reader):
    nusc = reader.nusc
    checked = 0
    for tok in reader.sample_tokens:
        frame = reader.frame(tok)
        data = nusc.get("sample", tok)["data"]
        lidar_sd, ego_sweep, cal_lidar = _records(nusc, data["LIDAR_TOP"])
        for cam in CAMERAS:
            cam_sd, ego_image, cal_cam = _records(nusc, data[cam])
            T = compensated_extrinsics(ego_sweep @ cal_lidar, ego_image @ cal_cam)
            assert T.shape == (4, 4) and T.dtype == np.float64
            np.testing.assert_allclose(T, frame.cameras[cam].T_lidar_to_cam, rtol=0, atol=1e-9)
            np.testing.assert_array_equal(T[3], [0, 0, 0, 1])

            # the image is not taken at the sweep stamp, and the ego moves in between
            dt = (cam_sd["timestamp"] - lidar_sd["timestamp"]) * 1e-6
            moved = np.linalg.norm(ego_image[:3, 3] - ego_sweep[:3, 3])
            assert abs(dt) > 0.005
            assert 4.0 < moved / abs(dt) < 12.0  # the synthetic ego drives at 5-11 m/s
            # no motion (both at one ego pose): sensor -> ego -> sensor, calibration only
            same_time = compensated_extrinsics(ego_sweep @ cal_lidar, ego_sweep @ cal_cam)
            np.testing.assert_allclose(same_time, invert_transform(cal_cam) @ cal_lidar, rtol=0, atol=1e-9)
            # the difference is the ego motion between the stamps: the sweep's ego pose seen from the image's
            motion = invert_transform(ego_image) @ ego_sweep
            np.testing.assert_allclose(T, invert_transform(cal_cam) @ motion @ cal_lidar, rtol=0, atol=1e-9)
            # the LiDAR's origin lands in the camera frame shifted by about the distance driven
            shift = np.linalg.norm(T[:3, 3] - same_time[:3, 3])
            assert shift == pytest.approx(moved, rel=0.05) and shift > 0.03
            checked += 1
    assert checked == len(reader.sample_tokens) * len(CAMERAS) > 0


def test_compensated_extrinsics_hand_worked():
    """LiDAR 1 m ahead of the ego origin, camera at the origin looking along +x (identity rotation for
    the arithmetic); the ego drives 0.5 m along +x between the sweep and the image: a LiDAR point
    at its own origin is 1 m ahead of where the ego was, so 0.5 m ahead of the camera at the image."""
    T_lidar_to_world = make_transform(np.eye(3), [1.0, 0.0, 0.0])  # ego at x = 0 at the sweep
    T_cam_to_world = make_transform(np.eye(3), [0.5, 0.0, 0.0])  # ego at x = 0.5 at the image
    T = compensated_extrinsics(T_lidar_to_world, T_cam_to_world)
    np.testing.assert_allclose(T, make_transform(np.eye(3), [0.5, 0.0, 0.0]), atol=1e-12)
    # with a 90 deg yaw of the camera: world +x is the camera's -y
    Rz = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    T = compensated_extrinsics(T_lidar_to_world, make_transform(Rz, [0.5, 0.0, 0.0]))
    np.testing.assert_allclose(T[:3, 3], [0.0, -0.5, 0.0], atol=1e-12)
    np.testing.assert_allclose(T[:3, :3], Rz.T, atol=1e-12)


# ---------------------------------------------------------------------------------------------- (b)
class ExtrapolationException(Exception):
    """Stands in for tf2.ExtrapolationException (tf2_ros is not installed here)."""


class FakeTfBuffer:
    """Duck-typed tf2_ros.Buffer: canned answers (TransformStamped) or exceptions, and the calls it got."""

    def __init__(self, full=None, latest=None):
        self.full, self.latest = full, latest
        self.calls = []

    @staticmethod
    def _answer(what):
        if isinstance(what, Exception):
            raise what
        return what

    def lookup_transform_full(self, target_frame, target_time, source_frame, source_time, fixed_frame, timeout=None):
        self.calls.append(("full", dict(target_frame=target_frame, target_time=target_time, source_frame=source_frame,
                                        source_time=source_time, fixed_frame=fixed_frame, timeout=timeout)))
        return self._answer(self.full)

    def lookup_transform(self, target_frame, source_frame, time, timeout=None):
        self.calls.append(("latest", dict(target_frame=target_frame, source_frame=source_frame, time=time,
                                          timeout=timeout)))
        return self._answer(self.latest)


def transform_stamped(T: np.ndarray, parent: str, child: str) -> TransformStamped:
    msg = TransformStamped()
    msg.header.frame_id, msg.child_frame_id = parent, child
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = (float(v) for v in T[:3, 3])
    x, y, z, w = (float(v) for v in matrix_to_quaternion(T[:3, :3], scalar_first=False))
    msg.transform.rotation.x, msg.transform.rotation.y, msg.transform.rotation.z, msg.transform.rotation.w = x, y, z, w
    return msg


def rigid(yaw: float, t) -> np.ndarray:
    """A LiDAR -> camera-like transform: an axis swap, a yaw, a translation (all three in the tests differ)."""
    c, s = np.cos(yaw), np.sin(yaw)
    yawed = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    swap = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    return make_transform(yawed @ swap, t)


T_PARAM = np.array([[1.0, 0, 0, 0], [0, 0, -1, -0.33], [0, 1, 0, -0.76], [0, 0, 0, 1]])
T_FULL = rigid(0.02, [0.05, -0.31, -0.91])  # compensated: what tf2 gives at the two stamps
T_LATEST = rigid(0.0, [0.0, -0.33, -0.76])  # the latest transform (no compensation)
SWEEP_STAMP = TimeMsg(sec=1_700_030_000, nanosec=0)
IMAGE_STAMP = TimeMsg(sec=1_700_030_000, nanosec=26_305_123)  # one nanosecond matters to tf2 at the cache edge
SIZE = (64, 48)


def _node(ros_context, name, **overrides):
    pipeline = SimpleNamespace(recognizer=SimpleNamespace(identity={}, default_templates=()), vocabulary=("car",))
    params = {"model.checkpoint": "/not/loaded", "cameras.CAM_FRONT.T_lidar_to_cam": T_PARAM.reshape(-1).tolist(),
              "cameras.CAM_FRONT.frame_id": "CAM_FRONT", "warn_throttle_s": 0.0, **overrides}
    return LidarOpenVocabNode(node_name=name, pipeline=pipeline, context=ros_context,
                              parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


@pytest.fixture(scope="module")
def node(ros_context):
    n = _node(ros_context, "extrinsics_probe")
    yield n
    n.destroy_node()


def _extrinsics(node, buf):
    node._tf_buffer = buf
    before = dict(node.stats)
    T = node._extrinsics(node.cameras["CAM_FRONT"], "LIDAR_TOP", "CAM_FRONT", IMAGE_STAMP, SWEEP_STAMP)
    counted = {k: node.stats.get(k, 0) - before.get(k, 0) for k in ("tf_uncompensated", "tf_fallback")}
    return T, counted


def test_parameter_defaults_to_odom(node):
    assert node.params.tf_fixed_frame == "odom" and node.params.use_tf


def test_time_travel_lookup_through_the_fixed_frame(node):
    buf = FakeTfBuffer(full=transform_stamped(T_FULL, "CAM_FRONT", "LIDAR_TOP"), latest=ExtrapolationException("unused"))
    T, counted = _extrinsics(node, buf)
    np.testing.assert_allclose(T, T_FULL, atol=1e-12)
    assert counted == {"tf_uncompensated": 0, "tf_fallback": 0}
    assert [kind for kind, _ in buf.calls] == ["full"]
    call = buf.calls[0][1]
    assert (call["target_frame"], call["source_frame"], call["fixed_frame"]) == ("CAM_FRONT", "LIDAR_TOP", "odom")
    assert call["target_time"].nanoseconds == 1_700_030_000_026_305_123  # the image stamp, to the nanosecond
    assert call["source_time"].nanoseconds == 1_700_030_000_000_000_000  # the sweep stamp
    assert call["timeout"].nanoseconds == 0  # the LiDAR callback never waits for tf2


def test_falls_back_to_the_latest_transform_then_to_the_parameter(node):
    buf = FakeTfBuffer(full=ExtrapolationException("Lookup would require extrapolation into the future"),
                       latest=transform_stamped(T_LATEST, "CAM_FRONT", "LIDAR_TOP"))
    T, counted = _extrinsics(node, buf)
    np.testing.assert_allclose(T, T_LATEST, atol=1e-12)
    assert counted == {"tf_uncompensated": 1, "tf_fallback": 0}
    assert "tf_uncompensated" in node._last_warn  # and it was logged
    assert [kind for kind, _ in buf.calls] == ["full", "latest"]
    assert buf.calls[1][1]["time"].nanoseconds == 0  # "latest"
    assert (buf.calls[1][1]["target_frame"], buf.calls[1][1]["source_frame"]) == ("CAM_FRONT", "LIDAR_TOP")

    buf = FakeTfBuffer(full=ExtrapolationException("no odom"), latest=LookupError('"CAM_FRONT" does not exist'))
    T, counted = _extrinsics(node, buf)
    np.testing.assert_array_equal(T, T_PARAM)
    assert counted == {"tf_uncompensated": 1, "tf_fallback": 1}
    assert "tf_fallback" in node._last_warn
    # without tf2 at all (as on this machine): the parameter, silently
    T, counted = _extrinsics(node, None)
    np.testing.assert_array_equal(T, T_PARAM)
    assert counted == {"tf_uncompensated": 0, "tf_fallback": 0}


def test_empty_fixed_frame_uses_the_latest_transform_only(ros_context):
    n = _node(ros_context, "extrinsics_probe_no_fixed", tf_fixed_frame="")
    try:
        assert n.params.tf_fixed_frame == ""
        buf = FakeTfBuffer(full=transform_stamped(T_FULL, "CAM_FRONT", "LIDAR_TOP"),
                           latest=transform_stamped(T_LATEST, "CAM_FRONT", "LIDAR_TOP"))
        T, counted = _extrinsics(n, buf)
        np.testing.assert_allclose(T, T_LATEST, atol=1e-12)
        assert [kind for kind, _ in buf.calls] == ["latest"]
        assert counted == {"tf_uncompensated": 0, "tf_fallback": 0}
    finally:
        n.destroy_node()


def test_camera_view_gets_the_image_and_sweep_stamps(node):
    """Through _camera_views: the buffered image's header stamp and the sweep's stamp reach tf2,
    and the compensated transform is the view's T_lidar_to_cam (P = [K | 0]: unchanged)."""
    state = node.cameras["CAM_FRONT"]
    K = np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    img = rgb_to_compressed_image(np.full((SIZE[1], SIZE[0], 3), 90, np.uint8), frame_id="CAM_FRONT",
                                  stamp=IMAGE_STAMP)
    with state.lock:
        state.images.clear()
        state.images.append((stamp_to_seconds(IMAGE_STAMP), img))
        state.info = make_camera_info(K, SIZE, frame_id="CAM_FRONT")
    node._tf_buffer = buf = FakeTfBuffer(full=transform_stamped(T_FULL, "CAM_FRONT", "LIDAR_TOP"))
    try:
        views = node._camera_views(stamp_to_seconds(SWEEP_STAMP), "LIDAR_TOP", SWEEP_STAMP)
    finally:
        with state.lock:
            state.images.clear()
            state.info = None
    view = views["CAM_FRONT"]
    np.testing.assert_allclose(view.T_lidar_to_cam, T_FULL, atol=1e-12)
    call = buf.calls[0][1]
    assert call["target_time"].nanoseconds == IMAGE_STAMP.sec * 10**9 + IMAGE_STAMP.nanosec
    assert call["source_time"].nanoseconds == SWEEP_STAMP.sec * 10**9 + SWEEP_STAMP.nanosec
    assert view.stamp == pytest.approx(stamp_to_seconds(IMAGE_STAMP))
