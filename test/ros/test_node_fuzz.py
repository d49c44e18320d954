"""A running node (real rclpy, DDS on localhost) fed 10,000 malformed PointCloud2 messages of 21
kinds and 600 broken camera messages, interleaved with good sweeps: it stays up, answers every good
sweep with the detections it gave before any bad input (LiDAR-only where that sweep's camera
message was the broken one), and its counters say exactly what was sent.

Messages go one at a time (each waits until the node's callback has taken the previous one), so
the LiDAR subscription's keep-latest queue replaces nothing and the counts are exact.
"""
import json
import struct
import threading
import time
from collections import Counter

import numpy as np
import pytest
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage, PointCloud2, PointField
from std_msgs.msg import String

from clip2_core.datasets.synth.sweep import make_sweep
from clip2_core.frames import frame_from_arrays
from clip2_ros.conversions import (
    CloudFormatError,
    array_to_pointcloud2,
    make_camera_info,
    pointcloud2_to_array,
    rgb_to_compressed_image,
    seconds_to_stamp,
)

N_BAD_CLOUDS = 10_000
N_ROUNDS = 30  # good sweeps in the fuzzed phase (10 with a broken camera message)
LIDAR = "/clip2_fuzz/points"
IMAGE = "/clip2_fuzz/cam/image/compressed"
INFO = "/clip2_fuzz/cam/camera_info"
OUT = "/lidar_openvocab_node"
CAM_K = np.array([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]])
CAM_SIZE = (320, 240)
T_LIDAR_TO_CAM = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
XYZ = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)]


def _fields(spec):
    return [PointField(name=n, offset=o, datatype=t, count=c) for n, o, t, c in spec]


def _cloud(spec, point_step, width, height=1, row_step=None, data=b"", big=False, dense=False):
    msg = PointCloud2()
    msg.fields = _fields(spec)
    msg.point_step, msg.width, msg.height = point_step, width, height
    msg.row_step = point_step * width if row_step is None else row_step
    msg.data, msg.is_bigendian, msg.is_dense = data, big, dense
    return msg


def bad_cloud(kind: int, rng: np.random.Generator) -> PointCloud2:
    """One malformed (or degenerate) PointCloud2 of ``kind`` in 0..20."""
    n = int(rng.integers(1, 40))
    good = rng.normal(0, 10, (n, 4)).astype("<f4").tobytes()  # x y z intensity
    spec = XYZ + [("intensity", 12, 7, 1)]
    if kind == 0:  # data cut short
        return _cloud(spec, 16, n, data=good[: max(0, len(good) - int(rng.integers(1, 16)))])
    if kind == 1:  # data too long
        return _cloud(spec, 16, n, data=good + bytes(int(rng.integers(1, 9))))
    if kind == 2:
        return _cloud(spec, 0, n, data=good)
    if kind == 3:  # point_step beyond a C int
        return _cloud(spec, int(rng.choice([2**31, 2**32 - 1, 2**31 + 16])), 1, row_step=16, data=good[:16])
    if kind == 4:
        return _cloud(spec, 16, n, row_step=8, data=good)
    if kind == 5:  # huge width, little data
        return _cloud(spec, 16, int(rng.choice([2**20, 2**31, 2**32 - 1])), row_step=16, data=good[:16])
    if kind == 6:
        return _cloud(spec, 16, n, height=int(rng.choice([7, 2**16, 2**32 - 1])), data=good)
    if kind == 7:  # no z
        return _cloud(XYZ[:2] + [("intensity", 12, 7, 1)], 16, n, data=good)
    if kind == 8:
        return _cloud(XYZ + [("intensity", 12, int(rng.choice([0, 9, 200])), 1)], 16, n, data=good)
    if kind == 9:
        return _cloud(XYZ + [("x", 12, 7, 1)], 16, n, data=good)
    if kind == 10:  # a field beyond point_step
        return _cloud(XYZ + [("intensity", int(rng.choice([14, 16, 2**31])), 7, 1)], 16, n, data=good)
    if kind == 11:
        return _cloud(XYZ + [("intensity", 12, 7, int(rng.choice([2, 2**20, 2**32 - 1])))], 16, n, data=good)
    if kind == 12:  # no fields at all
        return _cloud([], 16, n, data=good)
    if kind == 13:  # empty cloud
        return _cloud(spec, 16, 0, data=b"")
    if kind == 14:  # zero points but bytes
        return _cloud(spec, 16, 0, data=good)
    if kind == 15:  # every point NaN / inf, is_dense lying
        pts = np.full((n, 4), np.nan, "<f4")
        pts[::2, 0] = np.inf
        return _cloud(spec, 16, n, data=pts.tobytes(), dense=True)
    if kind == 16:  # all points beyond the keep range
        pts = np.full((n, 4), 5000.0, "<f4")
        return _cloud(spec, 16, n, data=pts.tobytes())
    if kind == 17:  # negative or absurd row_step for a 2-row cloud
        return _cloud(spec, 16, n, height=2, row_step=int(rng.choice([0, 15, 2**32 - 1])), data=good + good)
    if kind == 18:  # field names that are empty only (padding)
        return _cloud([("", 0, 7, 1), ("", 4, 7, 1)], 16, n, data=good)
    if kind == 19:  # random bytes, random layout numbers
        return _cloud(spec, int(rng.integers(0, 64)), int(rng.integers(0, 64)), row_step=int(rng.integers(0, 4096)),
                      data=rng.bytes(int(rng.integers(0, 600))))
    # kind 20: float64 x, y, z that overflow float32, big-endian flag on little-endian data
    return _cloud([("x", 0, 8, 1), ("y", 8, 8, 1), ("z", 16, 8, 1)], 24, n, big=True,
                  data=rng.normal(0, 1e300, (n, 3)).astype("<f8").tobytes())


def expected_outcome(msg) -> str:
    """What the node should count for ``msg``, from the same conversion functions it uses."""
    try:
        pts, names = pointcloud2_to_array(msg)
        frame, _ = frame_from_arrays(pts, names, stamp=0.0, frame_id="lidar", intensity_field="intensity",
                                     intensity_max=None)
    except (CloudFormatError, ValueError):
        return "malformed_cloud"
    return "empty_cloud" if frame.points.shape[0] == 0 else "processed"


def bad_camera(kind: int, rng: np.random.Generator, stamp: float):
    """(image or None, info or None): one broken camera message of ``kind`` in 0..5."""
    t = seconds_to_stamp(stamp)
    good = rgb_to_compressed_image(np.full((CAM_SIZE[1], CAM_SIZE[0], 3), 90, np.uint8), "jpeg", frame_id="cam", stamp=t)
    info = make_camera_info(CAM_K, CAM_SIZE, frame_id="cam", stamp=t)
    if kind == 0:
        good.data = b""
        return good, info
    if kind == 1:
        good.data = rng.bytes(int(rng.integers(1, 400)))
        return good, info
    if kind == 2:  # truncated JPEG
        good.data = bytes(good.data)[: int(rng.integers(1, len(good.data) // 2))]
        return good, info
    if kind == 3:  # a PNG header claiming 20000-65535 px a side (the decompression bomb)
        png = bytearray(rgb_to_compressed_image(np.zeros((2, 2, 3), np.uint8), "png").data)
        i = png.index(b"IHDR")
        w, h = (int(v) for v in rng.integers(20000, 65536, 2))
        png[i + 4:i + 12] = struct.pack(">II", w, h)
        import zlib

        png[i + 17:i + 21] = struct.pack(">I", zlib.crc32(bytes(png[i:i + 17])))
        good.data, good.format = bytes(png), "png"
        return good, info
    if kind == 4:  # decodes, but not the size CameraInfo states
        small = rgb_to_compressed_image(np.zeros((8, 8, 3), np.uint8), "jpeg", frame_id="cam", stamp=t)
        return small, info
    bad = make_camera_info(CAM_K, CAM_SIZE, frame_id="cam", stamp=t)  # kind 5: unusable intrinsics
    k = list(bad.k)
    k[int(rng.choice([0, 4]))] = float(rng.choice([0.0, np.nan, -5.0]))
    bad.k = k
    return good, bad


class Fuzzer(Node):
    def __init__(self, context):
        super().__init__("clip2_fuzzer", context=context)
        self.pub_cloud = self.create_publisher(PointCloud2, LIDAR, 10)
        self.pub_image = self.create_publisher(CompressedImage, IMAGE, 10)
        self.pub_info = self.create_publisher(CameraInfo, INFO, 10)
        self.lock = threading.Lock()
        self.docs = {}
        self.create_subscription(String, f"{OUT}/detections/json", self._doc, 100)

    def _doc(self, msg):
        d = json.loads(msg.data)
        with self.lock:
            self.docs[round(d["stamp"], 6)] = d


def _detections(doc):
    return [(d["label"], round(d["score"], 5), [round(v, 4) for v in d["box"]["center"]]) for d in doc["detections"]]


@pytest.fixture(scope="module")
def fuzzed(node_model, tmp_path_factory):
    """The whole run in a fresh interpreter (this file run as a script): in the test session's
    process the run shares the GIL with whatever earlier modules left running."""
    import os
    import subprocess
    import sys

    work = tmp_path_factory.mktemp("node_fuzz")
    (work / "params.json").write_text(json.dumps(node_model[0]))
    r = subprocess.run([sys.executable, __file__, str(work / "params.json"), str(work / "result.json")],
                       capture_output=True, text=True, timeout=900, env=dict(os.environ))
    assert r.returncode == 0, r.stderr[-4000:]
    res = json.loads((work / "result.json").read_text())
    res["sent"], res["kinds"] = Counter(res["sent"]), Counter({int(k): v for k, v in res["kinds"].items()})
    return res


def run_fuzz(model_params: dict) -> dict:
    """Start the node in this process, send everything, return what happened (JSON-able)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from clip2_ros.dds import apply_large_data_profile

    apply_large_data_profile()
    ros_context = rclpy.Context()
    rclpy.init(context=ros_context)

    from clip2_ros.node import LidarOpenVocabNode

    overrides = [
        Parameter("lidar.topic", value=LIDAR), Parameter("cameras.enabled", value=True),
        Parameter("cameras.names", value=["CAM"]), Parameter("cameras.CAM.image_topic", value=IMAGE),
        Parameter("cameras.CAM.compressed", value=True), Parameter("cameras.CAM.camera_info_topic", value=INFO),
        Parameter("cameras.CAM.T_lidar_to_cam", value=T_LIDAR_TO_CAM.reshape(-1).tolist()),
        Parameter("max_time_offset", value=0.05), Parameter("ensemble", value=True),
        Parameter("warn_throttle_s", value=3600.0),  # one log line per kind: 10,000 warnings would flood the log
        *[Parameter(k, value=v) for k, v in model_params.items()],
    ]
    node = LidarOpenVocabNode(context=ros_context, parameter_overrides=overrides)
    fz = Fuzzer(ros_context)
    ex = SingleThreadedExecutor(context=ros_context)  # the node's own executor (its Python wait loops are light)
    ex.add_node(node)
    ex.add_node(fz)
    th = threading.Thread(target=ex.spin, daemon=True)
    th.start()
    cam = node.cameras["CAM"]

    def until(pred, timeout=30.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return True
            time.sleep(0.0005)
        return pred()

    assert until(lambda: node.pub_json.get_subscription_count() > 0 and fz.pub_cloud.get_subscription_count() > 0
                 and fz.pub_image.get_subscription_count() > 0 and fz.pub_info.get_subscription_count() > 0)

    def stat(key):
        with node._stats_lock:
            return node.stats.get(key, 0)

    def send_cloud(msg):
        before = stat("clouds_received")
        fz.pub_cloud.publish(msg)
        assert until(lambda: stat("clouds_received") > before, 10.0), "the node stopped taking clouds"

    def send_camera(image, info):
        fz.pub_info.publish(info)
        fz.pub_image.publish(image)
        t = image.header.stamp.sec + 1e-9 * image.header.stamp.nanosec
        assert until(lambda: cam.info is not None and np.array_equal(cam.info.k, info.k, equal_nan=True)
                     and any(abs(s - t) < 1e-9 for s, _ in list(cam.images)), 10.0)

    sweeps = [make_sweep(seed) for seed in range(1, 6)]

    def send_sweep(i, stamp, camera=None):
        msg = array_to_pointcloud2(sweeps[i].points, ("x", "y", "z", "intensity", "ring"), frame_id="lidar",
                                   stamp=seconds_to_stamp(stamp), dtypes={"ring": np.uint16})
        if camera is not None:
            send_camera(*camera)
        send_cloud(msg)
        assert until(lambda: round(stamp, 6) in fz.docs, 30.0), f"no result for the good sweep at {stamp}"
        return fz.docs[round(stamp, 6)]

    def good_camera(stamp):
        t = seconds_to_stamp(stamp)
        rgb = np.full((CAM_SIZE[1], CAM_SIZE[0], 3), 90, np.uint8)
        return (rgb_to_compressed_image(rgb, "jpeg", frame_id="cam", stamp=t),
                make_camera_info(CAM_K, CAM_SIZE, frame_id="cam", stamp=t))

    # reference: each good sweep before any bad input, with its camera and LiDAR-only
    ref_cam = [_detections(send_sweep(i, 10.0 + i, good_camera(10.0 + i))) for i in range(len(sweeps))]
    ref_lidar = [_detections(send_sweep(i, 30.0 + i)) for i in range(len(sweeps))]  # no image within 0.05 s
    base = {k: stat(k) for k in ("clouds_received", "malformed_cloud", "empty_cloud", "camera_skipped",
                                 "callback_error", "inference_error", "frames_published")}

    rng = np.random.default_rng(2026)
    sent = Counter()
    kinds = Counter()
    results = []
    camera_sent = 0
    per_round = N_BAD_CLOUDS // N_ROUNDS
    bad_left = N_BAD_CLOUDS
    for r in range(N_ROUNDS):
        for _ in range(per_round if r < N_ROUNDS - 1 else bad_left):
            kind = int(rng.integers(0, 21))
            msg = bad_cloud(kind, rng)
            msg.header.stamp = seconds_to_stamp(1000.0 + r + rng.random() * 0.5)
            sent[expected_outcome(msg)] += 1
            kinds[kind] += 1
            send_cloud(msg)
            bad_left -= 1
            if rng.random() < 0.06:  # broken camera messages between the clouds, at stamps no sweep uses
                send_camera(*bad_camera(int(rng.integers(0, 6)), rng, 5000.0 + camera_sent))
                camera_sent += 1
        i = r % len(sweeps)
        stamp = 100.0 + r
        if r % 3 == 2:  # this sweep's camera message is the broken one: LiDAR-only expected
            ckind = int(rng.integers(0, 6))
            doc = send_sweep(i, stamp, bad_camera(ckind, rng, stamp))
            camera_sent += 1
            results.append((doc, ref_lidar[i], f"camera kind {ckind}"))
        else:
            doc = send_sweep(i, stamp, good_camera(stamp))
            results.append((doc, ref_cam[i], "good camera"))
    delta = {k: stat(k) - v for k, v in base.items()}
    out = {"sent": dict(sent), "kinds": {str(k): v for k, v in kinds.items()}, "delta": delta,
           "results": [(_detections(doc), want, why) for doc, want, why in results],
           "camera_sent": camera_sent, "alive": th.is_alive()}
    ex.shutdown(timeout_sec=5.0)
    th.join(timeout=5.0)
    node.destroy_node()
    fz.destroy_node()
    rclpy.try_shutdown(context=ros_context)
    return json.loads(json.dumps(out))  # tuples -> lists, as the parent reads them


def test_every_good_sweep_gets_the_detections_it_got_before_the_fuzzing(fuzzed):
    assert fuzzed["alive"]
    assert len(fuzzed["results"]) == N_ROUNDS
    for got, want, why in fuzzed["results"]:
        assert got == want, why


def test_the_counters_match_what_was_sent(fuzzed):
    sent, d = fuzzed["sent"], fuzzed["delta"]
    print("sent", dict(sent), "node counted", d, "camera messages", fuzzed["camera_sent"])
    assert sum(fuzzed["kinds"].values()) == N_BAD_CLOUDS and len(fuzzed["kinds"]) == 21
    assert sent["malformed_cloud"] >= 7000, sent  # most kinds are refused outright
    assert d["clouds_received"] == N_BAD_CLOUDS + N_ROUNDS
    assert d["malformed_cloud"] == sent["malformed_cloud"]
    assert d["empty_cloud"] == sent["empty_cloud"]
    assert d["callback_error"] == 0 and d["inference_error"] == 0
    # every good sweep, every degenerate-but-decodable cloud and every empty one got a result
    assert d["frames_published"] == N_ROUNDS + sent["processed"] + sent["empty_cloud"]
    # the camera is skipped for each good sweep paired with a broken camera message, and for each
    # decodable fuzzed cloud (no image near its stamp); never for a good sweep with a good image
    assert d["camera_skipped"] == N_ROUNDS // 3 + sent["processed"]


if __name__ == "__main__":  # the child process of the ``fuzzed`` fixture
    import sys as _sys

    _params, _out = _sys.argv[1], _sys.argv[2]
    with open(_params) as _f:
        _res = run_fuzz(json.load(_f))
    with open(_out, "w") as _f:
        json.dump(_res, _f)
