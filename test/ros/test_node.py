"""The running node, in-process with real rclpy: synthetic sweeps and camera frames in, detections out.

A tester node publishes nuScenes-sized synthetic sweeps (clip2_core.datasets.synth.sweep) with a
camera image and CameraInfo, and subscribes to the node's outputs. Everything waits by polling
with generous timeouts (publishing again while waiting: the LiDAR input is best effort, depth 1).
"""
import json
import threading
import time

import numpy as np
import pytest
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Float64, String
from visualization_msgs.msg import Marker, MarkerArray

from clip2_core.datasets.synth.sweep import make_sweep
from clip2_core.geometry import points_in_boxes
from clip2_core.vlm import DEFAULT_TEMPLATES
from clip2_ros.conversions import (
    array_to_pointcloud2,
    make_camera_info,
    pointcloud2_to_structured,
    rgb_to_compressed_image,
    rgb_to_image,
    seconds_to_stamp,
)
from clip2_ros.markers import markers_to_boxes
from clip2_ros.node import sensor_qos

LIDAR_TOPIC = "/clip2_test/points"
IMAGE_TOPIC = "/clip2_test/cam_front/image"
INFO_TOPIC = "/clip2_test/cam_front/camera_info"
OUT = "/lidar_openvocab_node"
CAM_K = np.array([[200.0, 0, 160], [0, 200.0, 90], [0, 0, 1]])
CAM_SIZE = (320, 180)
# sweep frame: x forward, y left, z up -> optical: x right (-y), y down (-z), z forward (x)
T_LIDAR_TO_CAM = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
# a second, JPEG-compressed camera looking backwards: optical x = +y, y = -z, z = -x
BACK_IMAGE_TOPIC = "/clip2_test/cam_back/image/compressed"
BACK_INFO_TOPIC = "/clip2_test/cam_back/camera_info"
T_LIDAR_TO_BACK = np.array([[0, 1, 0, 0], [0, 0, -1, 0], [-1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)


def sweep_msg(seed: int, stamp: float):
    scene = make_sweep(seed)
    msg = array_to_pointcloud2(
        scene.points, ("x", "y", "z", "intensity", "ring"), frame_id="lidar", stamp=seconds_to_stamp(stamp),
        dtypes={"ring": np.uint16},
    )
    return msg, scene


def back_camera_msgs(stamp: float):
    rgb = np.full((CAM_SIZE[1], CAM_SIZE[0], 3), 90, dtype=np.uint8)
    img = rgb_to_compressed_image(rgb, "jpeg", frame_id="cam_back", stamp=seconds_to_stamp(stamp))
    info = make_camera_info(CAM_K, CAM_SIZE, frame_id="cam_back", stamp=seconds_to_stamp(stamp))
    return img, info


def camera_msgs(stamp: float):
    rgb = np.zeros((CAM_SIZE[1], CAM_SIZE[0], 3), dtype=np.uint8)
    rgb[: CAM_SIZE[1] // 2] = (120, 160, 220)  # sky
    rgb[CAM_SIZE[1] // 2 :] = (70, 70, 70)  # road
    img = rgb_to_image(rgb, "bgr8", frame_id="cam_front", stamp=seconds_to_stamp(stamp))
    info = make_camera_info(CAM_K, CAM_SIZE, frame_id="cam_front", stamp=seconds_to_stamp(stamp))
    return img, info


class Probe(Node):
    """Publishes inputs and records every output of the node under test."""

    def __init__(self, context):
        super().__init__("clip2_tester", context=context)
        self.pub_cloud = self.create_publisher(PointCloud2, LIDAR_TOPIC, 1)
        self.pub_image = self.create_publisher(Image, IMAGE_TOPIC, 5)
        self.pub_info = self.create_publisher(CameraInfo, INFO_TOPIC, 5)
        self.pub_back = self.create_publisher(CompressedImage, BACK_IMAGE_TOPIC, 5)
        self.pub_back_info = self.create_publisher(CameraInfo, BACK_INFO_TOPIC, 5)
        self.lock = threading.Lock()
        self.json, self.markers, self.points, self.times = [], [], [], []
        self.create_subscription(String, f"{OUT}/detections/json", self._rec(self.json), 50)
        self.create_subscription(MarkerArray, f"{OUT}/detections/markers", self._rec(self.markers), 50)
        self.create_subscription(PointCloud2, f"{OUT}/detections/points", self._rec(self.points), sensor_qos(5))
        self.create_subscription(Float64, f"{OUT}/debug/processing_time_ms", self._rec(self.times), 50)

    def _rec(self, store):
        def cb(msg):
            with self.lock:
                store.append(msg)

        return cb

    def doc_for(self, stamp: float):
        with self.lock:
            for m in self.json:
                d = json.loads(m.data)
                if abs(d["stamp"] - stamp) < 1e-6:
                    return d
        return None

    def markers_for(self, stamp: float):
        with self.lock:
            for m in self.markers:
                s = m.markers[0].header.stamp
                if abs(s.sec + 1e-9 * s.nanosec - stamp) < 1e-6:
                    return m
        return None


def publish_until(tester, wait_for, publish, predicate, timeout=30.0, every=0.5):
    """Publish (again every ``every`` s) until ``predicate()``; returns its final value."""
    last = [0.0]

    def tick():
        now = time.monotonic()
        if now - last[0] >= every:
            last[0] = now
            publish()

    assert wait_for(predicate, timeout=timeout, on_tick=tick), "no output from the node in time"
    return predicate()


def gt_recall(doc, scene, min_points=10):
    """Fraction of GT objects (with >= min_points returns) whose box holds a detection's centre."""
    inside = points_in_boxes(scene.points[:, :3].astype(np.float64), scene.boxes)
    visible = inside.sum(axis=0) >= min_points
    centres = np.array([d["box"]["center"] for d in doc["detections"]]).reshape(-1, 3)
    grown = scene.boxes.copy()
    grown[:, 3:6] += 0.6
    hit = points_in_boxes(centres, grown).any(axis=0) if len(centres) else np.zeros(len(grown), bool)
    matched = {}
    for j in np.flatnonzero(visible & hit):
        k = np.flatnonzero(points_in_boxes(centres, grown[j : j + 1])[:, 0])[0]
        matched[int(j)] = doc["detections"][int(k)]
    return hit[visible].mean(), matched, int(visible.sum())


def node_overrides(model_params):
    """Parameter overrides: the test topics, two cameras, and the model (with its vocabulary)."""
    return [
        Parameter("lidar.topic", value=LIDAR_TOPIC),
        Parameter("cameras.enabled", value=True),
        Parameter("cameras.names", value=["CAM_FRONT", "CAM_BACK"]),
        Parameter("cameras.CAM_FRONT.image_topic", value=IMAGE_TOPIC),
        Parameter("cameras.CAM_FRONT.compressed", value=False),
        Parameter("cameras.CAM_FRONT.camera_info_topic", value=INFO_TOPIC),
        Parameter("cameras.CAM_FRONT.T_lidar_to_cam", value=T_LIDAR_TO_CAM.reshape(-1).tolist()),
        Parameter("cameras.CAM_BACK.image_topic", value=BACK_IMAGE_TOPIC),
        Parameter("cameras.CAM_BACK.compressed", value=True),
        Parameter("cameras.CAM_BACK.camera_info_topic", value=BACK_INFO_TOPIC),
        Parameter("cameras.CAM_BACK.T_lidar_to_cam", value=T_LIDAR_TO_BACK.reshape(-1).tolist()),
        Parameter("max_time_offset", value=0.05),
        Parameter("ensemble", value=True),
        Parameter("warn_throttle_s", value=0.0),
        Parameter("unknown_threshold", value=0.0),  # every detection gets a vocabulary label
        *[Parameter(k, value=v) for k, v in model_params.items()],
    ]


@pytest.fixture(scope="module")
def running(ros_context, node_model):
    """(node, tester, vocabulary) spinning in one MultiThreadedExecutor for the whole module."""
    from rclpy.executors import MultiThreadedExecutor

    from clip2_ros.node import LidarOpenVocabNode

    model_params, vocab = node_model
    node = LidarOpenVocabNode(context=ros_context, parameter_overrides=node_overrides(model_params))
    tester = Probe(ros_context)
    ex = MultiThreadedExecutor(num_threads=4, context=ros_context)
    ex.add_node(node)
    ex.add_node(tester)
    th = threading.Thread(target=ex.spin, daemon=True)
    th.start()
    # outputs are built only for subscribed topics: let discovery match the probe first
    pubs = (node.pub_markers, node.pub_points, node.pub_json)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(p.get_subscription_count() > 0 for p in pubs):
        time.sleep(0.02)
    yield node, tester, vocab
    ex.shutdown(timeout_sec=5.0)
    th.join(timeout=5.0)
    node.destroy_node()
    tester.destroy_node()


def test_detections_match_ground_truth(running, wait_for):
    node, tester, vocab = running
    stamp = 100.0
    cloud, scene = sweep_msg(1, stamp)
    img, info = camera_msgs(stamp + 0.02)
    back, back_info = back_camera_msgs(stamp - 0.03)

    def publish_camera():
        tester.pub_info.publish(info)
        tester.pub_image.publish(img)
        tester.pub_back_info.publish(back_info)
        tester.pub_back.publish(back)

    def publish():
        publish_camera()
        tester.pub_cloud.publish(cloud)

    def cameras_in():  # both camera frames are in before the sweep
        return all(c.info is not None and c.pick(stamp, 1.0)[0] is not None for c in node.cameras.values())

    publish_until(tester, wait_for, publish_camera, cameras_in)
    skipped = node.stats["camera_skipped"]
    doc = publish_until(tester, wait_for, publish, lambda: tester.doc_for(stamp))
    assert wait_for(lambda: tester.markers_for(stamp) is not None, timeout=10)
    assert doc["frame_id"] == "lidar" and doc["vocabulary"] == vocab
    dets = doc["detections"]
    assert 10 <= len(dets) <= 64
    assert {d["label"] for d in dets} <= set(vocab)
    assert all(0.0 <= d["score"] <= 1.0 for d in dets)
    recall, matched, n_visible = gt_recall(doc, scene)
    assert n_visible >= 10 and recall >= 0.9, f"recall {recall:.2f} of {n_visible} visible objects"
    # the markers carry the same boxes and labels as the JSON; they went out as CDR bytes
    # written by clip2_ros.marker_cdr, and rclpy read them as a MarkerArray
    assert node._marker_encoder.usable, node._marker_encoder.reason
    markers = tester.markers_for(stamp)
    assert markers.markers[0].action == Marker.DELETEALL
    boxes, labels, scores = markers_to_boxes(markers)
    np.testing.assert_allclose(boxes, [d["box"]["center"] + d["box"]["size"] + [d["box"]["yaw"]] for d in dets], atol=1e-3)
    assert labels == [d["label"] for d in dets]
    # both camera frames were used (in sync, decodable): objects ahead and behind got a crop fused,
    # objects well to the side (outside both 77-degree fields of view) did not
    assert node.stats["camera_skipped"] == skipped
    x, y = (np.array([d["box"]["center"][i] for d in dets]) for i in (0, 1))
    used = np.array([d["image_used"] for d in dets])
    assert used[(x > 5) & (np.abs(y) < 0.5 * x)].any() and used[(x < -5) & (np.abs(y) < -0.5 * x)].any()
    side = np.abs(y) > 3.0 * np.abs(x) + 3.0
    assert side.any() and not used[side].any()
    assert set(doc["timings_ms"]) >= {"decode", "cameras", "publish", "total"}
    assert wait_for(lambda: len(tester.times) > 0, timeout=5)
    # labelled points: only detected clusters' points, with fields for rviz
    assert wait_for(lambda: len(tester.points) > 0, timeout=10, on_tick=publish)
    rec = pointcloud2_to_structured(tester.points[-1])
    assert set(rec.dtype.names) == {"x", "y", "z", "label_id", "score", "cluster_id"}
    assert rec.shape[0] > 0 and (rec["label_id"] >= -1).all() and (rec["label_id"] < len(vocab)).all()
    _check_label_ids(rec, tester, vocab)
    # the JSON says which CLIP produced the labels, and that it is random (allowed by clip.allow_random)
    assert doc["random_clip"] is True and doc["clip"]["random"] is True and "RANDOM" in doc["warning"]
    assert doc["clip"]["weights_id"] == node.pipeline.clip.weights_id


def _check_label_ids(rec, tester, vocab):
    """Every labelled point's label_id indexes ``vocab`` at its detection's label."""
    with tester.lock:
        docs = [json.loads(m.data) for m in tester.json]
    s = tester.points[-1].header.stamp
    doc = next(d for d in docs if abs(d["stamp"] - (s.sec + 1e-9 * s.nanosec)) < 1e-6)
    label_of = {d["cluster_id"]: d["label"] for d in doc["detections"]}
    assert set(np.unique(rec["cluster_id"]).tolist()) <= set(label_of)
    for cid, lid in zip(rec["cluster_id"], rec["label_id"]):
        want = label_of[int(cid)]
        assert (vocab[lid] if lid >= 0 else "unknown") == want


def _good_frame(tester, wait_for, stamp, seed=2):
    cloud, _ = sweep_msg(seed, stamp)
    img, info = camera_msgs(stamp)

    def publish():
        tester.pub_info.publish(info)
        tester.pub_image.publish(img)
        tester.pub_cloud.publish(cloud)

    return publish_until(tester, wait_for, publish, lambda: tester.doc_for(stamp))


def _raw_cloud(fields, point_step, width, data, stamp, row_step=None):
    msg = PointCloud2()
    msg.header.frame_id = "lidar"
    msg.header.stamp = seconds_to_stamp(stamp)
    msg.height, msg.width = 1, width
    msg.fields = [PointField(name=n, offset=o, datatype=PointField.FLOAT32, count=1) for n, o in fields]
    msg.point_step = point_step
    msg.row_step = row_step if row_step is not None else point_step * width
    msg.data = data
    return msg


def test_malformed_inputs_never_stop_the_node(running, wait_for):
    node, tester, vocab = running
    xyz = [("x", 0), ("y", 4), ("z", 8)]
    bad_clouds = {
        "malformed_cloud": [
            _raw_cloud(xyz[:2], 8, 4, bytes(32), 200.0),  # no z
            _raw_cloud(xyz, 12, 4, bytes(47), 201.0),  # data length != width * point_step
            _raw_cloud(xyz + [("intensity", 10)], 12, 4, bytes(48), 202.0),  # field beyond point_step
            _raw_cloud(xyz, 12, 4, bytes(24), 203.0, row_step=6),  # row_step < width * point_step
        ],
    }
    before = dict(node.stats)
    for kind, msgs in bad_clouds.items():
        for m in msgs:
            publish_until(tester, wait_for, lambda: tester.pub_cloud.publish(m), lambda: node.stats[kind] > before[kind])
            before[kind] = node.stats[kind]
    # NaN / inf points: dropped, the rest processed
    pts = make_sweep(3).points[:, :4].copy()
    pts[::7, 0] = np.nan
    pts[1::11, 2] = np.inf
    nan_cloud = array_to_pointcloud2(pts, ("x", "y", "z", "intensity"), "lidar", seconds_to_stamp(210.0))
    img, info = camera_msgs(210.0)
    doc = publish_until(
        tester, wait_for, lambda: (tester.pub_info.publish(info), tester.pub_image.publish(img), tester.pub_cloud.publish(nan_cloud)),
        lambda: tester.doc_for(210.0),
    )
    assert len(doc["detections"]) > 0 and node.stats["nonfinite_points"] > 0
    # empty cloud: an empty result, markers cleared
    empty = array_to_pointcloud2(np.zeros((0, 3), np.float32), ("x", "y", "z"), "lidar", seconds_to_stamp(220.0))
    doc = publish_until(tester, wait_for, lambda: tester.pub_cloud.publish(empty), lambda: tester.doc_for(220.0))
    assert doc["detections"] == []
    assert wait_for(lambda: tester.markers_for(220.0) is not None, timeout=10)
    assert [m.action for m in tester.markers_for(220.0).markers] == [Marker.DELETEALL]
    # extreme but finite coordinates (a broken driver): dropped, the rest of the sweep is processed
    far = pts.copy()
    far[~np.isfinite(far)] = 0.0
    far[:10, :2] = 1e18
    far_cloud = array_to_pointcloud2(far, ("x", "y", "z", "intensity"), "lidar", seconds_to_stamp(225.0))
    doc = publish_until(tester, wait_for, lambda: tester.pub_cloud.publish(far_cloud), lambda: tester.doc_for(225.0))
    assert len(doc["detections"]) > 0 and node.stats["out_of_range_points"] >= 10
    # undecodable image: the camera is skipped, the sweep is processed LiDAR-only
    skipped = node.stats["camera_skipped"]
    cloud, _ = sweep_msg(4, 230.0)
    broken = Image(height=CAM_SIZE[1], width=CAM_SIZE[0], encoding="bgr8", step=CAM_SIZE[0] * 3, data=bytes(100))
    broken.header.stamp = seconds_to_stamp(230.0)
    doc = publish_until(
        tester, wait_for, lambda: (tester.pub_image.publish(broken), tester.pub_cloud.publish(cloud)),
        lambda: tester.doc_for(230.0),
    )
    assert node.stats["camera_skipped"] > skipped and len(doc["detections"]) > 0
    assert not any(d["image_used"] for d in doc["detections"])  # LiDAR-only
    # camera frame too far in time: not used
    skipped = node.stats["camera_skipped"]
    img, info = camera_msgs(240.0 + 1.0)
    cloud, _ = sweep_msg(5, 240.0)
    publish_until(
        tester, wait_for, lambda: (tester.pub_image.publish(img), tester.pub_cloud.publish(cloud)),
        lambda: tester.doc_for(240.0),
    )
    assert node.stats["camera_skipped"] > skipped
    # and after all that, a good frame still gives detections
    doc = _good_frame(tester, wait_for, 250.0)
    assert len(doc["detections"]) > 0
    assert node.context.ok()


def test_node_output_equals_the_offline_pipeline(running, wait_for):
    """The node adds no logic: its JSON equals Pipeline.process on the same points (LiDAR-only)."""
    from clip2_core.frames import frame_from_arrays

    node, tester, vocab = running
    stamp = 500.0  # no camera frame within max_time_offset: LiDAR-only
    cloud, scene = sweep_msg(7, stamp)
    doc = publish_until(tester, wait_for, lambda: tester.pub_cloud.publish(cloud), lambda: tester.doc_for(stamp))
    assert not any(d["image_used"] for d in doc["detections"])
    frame, _ = frame_from_arrays(scene.points, ("x", "y", "z", "intensity", "ring"), stamp=stamp, intensity_max=255.0)
    offline = node.pipeline.process(frame).detections
    assert [d["label"] for d in doc["detections"]] == [d.label for d in offline]
    np.testing.assert_allclose([d["score"] for d in doc["detections"]], [d.score for d in offline], atol=1e-5)
    np.testing.assert_allclose(
        [d["box"]["center"] + d["box"]["size"] + [d["box"]["yaw"]] for d in doc["detections"]],
        [d.box.as_array() for d in offline], atol=1e-3,
    )
    assert [d["cluster_id"] for d in doc["detections"]] == [d.cluster_id for d in offline]


def test_labels_match_ground_truth_on_held_out_sweeps(running, wait_for):
    """The trained tiny model's labels, through the node (LiDAR-only: no camera frame in time)."""
    node, tester, vocab = running
    pairs, visible = [], 0
    for i, seed in enumerate((300, 301, 302)):
        stamp = 600.0 + i
        cloud, scene = sweep_msg(seed, stamp)
        doc = publish_until(tester, wait_for, lambda: tester.pub_cloud.publish(cloud), lambda: tester.doc_for(stamp))
        # every GT object with >= 20 returns, matched to the detection whose centre is within 1 m
        vis = points_in_boxes(scene.points[:, :3].astype(np.float64), scene.boxes).sum(axis=0) >= 20
        visible += int(vis.sum())
        centres = np.array([d["box"]["center"] for d in doc["detections"]]).reshape(-1, 3)
        for j in np.flatnonzero(vis):
            dist = np.linalg.norm(centres[:, :2] - scene.boxes[j, :2], axis=1) if len(centres) else np.array([np.inf])
            k = int(np.argmin(dist))
            if dist[k] <= 1.0:
                pairs.append((scene.names[j].replace("_", " "), doc["detections"][k]["label"]))
    assert visible >= 15
    recall = len(pairs) / visible
    accuracy = float(np.mean([gt == label for gt, label in pairs]))
    assert recall >= 0.7, recall
    assert accuracy >= 0.7, (accuracy, pairs)


def test_vocabulary_change_at_run_time(running, wait_for):
    node, tester, vocab = running
    # rejected updates: the parameter keeps its value
    bad = node.set_parameters([Parameter("vocabulary", value=["car", "car"])])[0]
    assert not bad.successful and "duplicate" in bad.reason
    bad = node.set_parameters([Parameter("clip.templates", value=["no placeholder"])])[0]
    assert not bad.successful and "{}" in bad.reason
    bad = node.set_parameters([Parameter("clip.templates", value=["{} and {}"])])[0]  # refused here, not at rebuild
    assert not bad.successful and "exactly one" in bad.reason
    ro = node.set_parameters([Parameter("score_threshold", value=0.5)])[0]
    assert not ro.successful and "read-only" in ro.reason
    assert list(node.get_parameter("vocabulary").value) == vocab

    new_vocab = ["sedan", "lorry", "person", "cyclist", "cone", "post", "tree"]
    stamps = iter(np.arange(300.0, 400.0, 0.25))
    cloud, _ = sweep_msg(6, 300.0)

    def publish():
        cloud.header.stamp = seconds_to_stamp(next(stamps))
        tester.pub_cloud.publish(cloud)

    def docs_since(t, words):
        with tester.lock:
            docs = [json.loads(m.data) for m in tester.json]
        return [d for d in docs if d["stamp"] >= t and d["vocabulary"] == words]

    updates = node.stats["vocabulary_updates"]
    # Hold the pipeline's text-bank build lock: the rebuild cannot finish while we hold it, so
    # frames that come out meanwhile prove the LiDAR callback does not wait for the rebuild.
    with node.pipeline.recognizer._lock:
        ok = node.set_parameters([Parameter("vocabulary", value=new_vocab)])[0]
        assert ok.successful
        t_set = next(stamps)
        old = publish_until(tester, wait_for, publish, lambda: docs_since(t_set, vocab), every=0.3)
        assert node.stats["vocabulary_updates"] == updates
        assert {d["label"] for doc in old for d in doc["detections"]} <= set(vocab)
    # released: the new text bank is swapped in and later frames carry the new labels
    docs = publish_until(tester, wait_for, publish, lambda: docs_since(300.0, new_vocab), timeout=60.0, every=0.3)
    labels = {d["label"] for doc in docs for d in doc["detections"]}
    assert labels and labels <= set(new_vocab)
    assert node.stats["vocabulary_updates"] >= 1
    # the prompt set did not change with the vocabulary: still the encoder's training templates
    trained = tuple(node.pipeline.recognizer.trained["extra"]["templates"])
    assert node.pipeline.recognizer.templates == trained != tuple(DEFAULT_TEMPLATES)
    with tester.lock:
        old = [json.loads(m.data) for m in tester.json]
    # no frame mixes vocabularies: each document's labels come from its own vocabulary
    for d in old:
        assert {x["label"] for x in d["detections"]} <= set(d["vocabulary"]) | {"unknown"}


def test_prompt_templates_change_at_run_time(running, wait_for):
    node, _, _ = running
    before = node.stats["vocabulary_updates"]
    assert node.set_parameters([Parameter("clip.templates", value=["a lidar scan of a {}."])])[0].successful
    assert wait_for(lambda: node.stats["vocabulary_updates"] > before, timeout=30)
    assert node.pipeline.config.clip.templates == ["a lidar scan of a {}."]
    before = node.stats["vocabulary_updates"]
    assert node.set_parameters([Parameter("clip.templates", value=[""])])[0].successful  # back to the default
    assert wait_for(lambda: node.stats["vocabulary_updates"] > before, timeout=30)
    # the default is the encoder's training templates (not the built-in set they differ from)
    trained = list(node.pipeline.recognizer.trained["extra"]["templates"])
    assert node.pipeline.config.clip.templates == trained != list(DEFAULT_TEMPLATES)
    assert list(node.pipeline.recognizer.templates) == trained


def test_label_ids_follow_a_reordered_vocabulary(running, wait_for):
    """label_id indexes the vocabulary the frame was labelled with, also after a reorder."""
    node, tester, vocab = running
    reordered = list(reversed(vocab))
    before = node.stats["vocabulary_updates"]
    assert node.set_parameters([Parameter("vocabulary", value=reordered)])[0].successful
    assert wait_for(lambda: node.stats["vocabulary_updates"] > before, timeout=30)
    try:
        stamp = 700.0
        cloud, _ = sweep_msg(8, stamp)
        with tester.lock:
            tester.points.clear()

        def got():
            d = tester.doc_for(stamp)
            with tester.lock:
                return d is not None and any(abs(p.header.stamp.sec + 1e-9 * p.header.stamp.nanosec - stamp) < 1e-6
                                             for p in tester.points)

        publish_until(tester, wait_for, lambda: tester.pub_cloud.publish(cloud), got)
        doc = tester.doc_for(stamp)
        assert doc["vocabulary"] == reordered
        with tester.lock:
            tester.points[:] = [p for p in tester.points
                                if abs(p.header.stamp.sec + 1e-9 * p.header.stamp.nanosec - stamp) < 1e-6]
        rec = pointcloud2_to_structured(tester.points[-1])
        assert rec.shape[0] > 0
        _check_label_ids(rec, tester, reordered)
    finally:
        before = node.stats["vocabulary_updates"]
        node.set_parameters([Parameter("vocabulary", value=vocab)])
        wait_for(lambda: node.stats["vocabulary_updates"] > before, timeout=30)
