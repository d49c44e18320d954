"""MarkerArray, JSON and labelled-cloud outputs built from Detections."""
import json

import numpy as np
import pytest
from visualization_msgs.msg import Marker

from clip2_core.types import Box3D, Detection
from clip2_core.viz import label_color
from clip2_ros.conversions import pointcloud2_to_structured, seconds_to_stamp
from clip2_ros.markers import (
    LABELLED_CLOUD_DTYPE,
    detections_to_dict,
    detections_to_json,
    detections_to_markers,
    json_to_detections,
    labelled_cloud,
    labelled_points,
    markers_to_boxes,
)


def _dets():
    return [
        Detection(box=Box3D([10, 2, -0.9], [4.5, 1.9, 1.6], 0.3), label="car", score=0.83, cluster_id=0,
                  num_points=120, top_k=[("car", 0.83), ("truck", 0.1)]),
        Detection(box=Box3D([-5, 7, -1.0], [0.6, 0.6, 1.7], -2.0), label="pedestrian", score=0.512, cluster_id=2,
                  num_points=40),
        Detection(box=Box3D([3, -8, -1.2], [4.2, 1.8, 1.5], 3.0), label="car", score=0.6, cluster_id=3,
                  num_points=90),
    ]


def test_marker_array_layout_colours_and_text():
    dets = _dets()
    msg = detections_to_markers(dets, "lidar", seconds_to_stamp(5.5))
    m = msg.markers
    assert m[0].action == Marker.DELETEALL
    cubes = [x for x in m if x.ns == "boxes"]
    texts = [x for x in m if x.ns == "labels"]
    outlines = [x for x in m if x.ns == "outlines"]
    assert len(cubes) == len(texts) == 3 and len(outlines) == 1 and len(m) == 8
    assert all(x.type == Marker.CUBE for x in cubes) and all(x.type == Marker.TEXT_VIEW_FACING for x in texts)
    assert [t.text for t in texts] == ["car 0.83", "pedestrian 0.51", "car 0.60"]
    for c, t, d in zip(cubes, texts, dets):
        assert c.header.frame_id == "lidar" and c.header.stamp.sec == 5 and c.header.stamp.nanosec == 500_000_000
        assert (c.color.r, c.color.g, c.color.b) == pytest.approx(label_color(d.label))
        assert (t.color.r, t.color.g, t.color.b) == pytest.approx(label_color(d.label))
        assert t.pose.position.z > d.box.center[2] + d.box.size[2] / 2  # text above the box
    assert cubes[0].color == cubes[2].color  # same label, same colour
    assert len(outlines[0].points) == 3 * 24 and len(outlines[0].colors) == 3 * 24
    assert len({x.id for x in cubes}) == 3  # unique ids within a namespace


def test_markers_read_back_the_boxes():
    dets = _dets()
    boxes, labels, scores = markers_to_boxes(detections_to_markers(dets, "lidar"))
    np.testing.assert_allclose(boxes, np.stack([d.box.as_array() for d in dets]), atol=1e-9)
    assert labels == ["car", "pedestrian", "car"]
    assert scores == [0.83, 0.51, 0.6]


def test_no_detections_only_clears():
    msg = detections_to_markers([], "lidar")
    assert len(msg.markers) == 1 and msg.markers[0].action == Marker.DELETEALL


def test_json_document_round_trip():
    dets = _dets()
    doc = detections_to_json(dets, 12.5, "lidar", ["car", "pedestrian"], {"ground": 1.23456})
    d = json.loads(doc)
    assert d["stamp"] == 12.5 and d["frame_id"] == "lidar" and d["vocabulary"] == ["car", "pedestrian"]
    assert d["timings_ms"] == {"ground": 1.235}
    assert d["detections"][0]["box"] == {"center": [10, 2, -0.9], "size": [4.5, 1.9, 1.6], "yaw": 0.3}
    assert d["detections"][0]["top_k"] == [["car", 0.83], ["truck", 0.1]]
    assert [x["image_used"] for x in d["detections"]] == [False] * 3
    used = json.loads(detections_to_json(dets, 0.0, "lidar", None, None, [True, False, True]))
    assert [x["image_used"] for x in used["detections"]] == [True, False, True]
    back = json_to_detections(doc)
    assert [b.label for b in back] == ["car", "pedestrian", "car"]
    for a, b in zip(dets, back):
        np.testing.assert_allclose(a.box.as_array(), b.box.as_array(), atol=1e-4)
        assert (a.cluster_id, a.num_points) == (b.cluster_id, b.num_points)
    assert detections_to_dict([], 0.0, "x")["detections"] == []


def test_labelled_points_worked_example():
    pts = np.arange(18, dtype=np.float32).reshape(6, 3)
    cluster = np.array([0, 0, -1, 1, 2, 3])
    dets = [
        Detection(box=Box3D([0, 0, 0], [1, 1, 1], 0), label="car", score=0.9, cluster_id=0),
        Detection(box=Box3D([0, 0, 0], [1, 1, 1], 0), label="unknown", score=0.2, cluster_id=2),
        Detection(box=Box3D([0, 0, 0], [1, 1, 1], 0), label="pedestrian", score=0.7, cluster_id=3),
    ]
    rec = labelled_points(pts, cluster, dets, ["pedestrian", "car"])
    assert rec.dtype == LABELLED_CLOUD_DTYPE
    # points of clusters 0, 2, 3 (cluster 1 had no detection, point 2 no cluster)
    assert rec["x"].tolist() == [0, 3, 12, 15]
    assert rec["label_id"].tolist() == [1, 1, -1, 0]
    assert rec["cluster_id"].tolist() == [0, 0, 2, 3]
    np.testing.assert_allclose(rec["score"], [0.9, 0.9, 0.2, 0.7], rtol=1e-6)
    msg = labelled_cloud(pts, cluster, dets, ["pedestrian", "car"], "lidar")
    back = pointcloud2_to_structured(msg)
    assert [f.name for f in msg.fields] == ["x", "y", "z", "label_id", "score", "cluster_id"]
    np.testing.assert_array_equal(back["label_id"], rec["label_id"])
    assert labelled_points(pts, np.full(6, -1), [], ["car"]).shape == (0,)
    with pytest.raises(ValueError, match="cluster labels"):
        labelled_points(pts, cluster[:3], dets, ["car"])


def _wire(msg):
    """What a subscriber gets: the message after rclpy's CDR round trip (float32 colours)."""
    from rclpy.serialization import deserialize_message, serialize_message
    from visualization_msgs.msg import MarkerArray

    return deserialize_message(serialize_message(msg), MarkerArray)


def _random_dets(rng, n):
    words = ["car", "pedestrian", "traffic cone", "ç", "a" * 37, "x", "construction vehicle", "über-bus"]
    return [Detection(box=Box3D(rng.normal(size=3) * 30, rng.uniform(0, 6, size=3) * (rng.random(3) > 0.1),
                                float(rng.uniform(-10, 10))),
                      label=str(rng.choice(words)), score=float(rng.random()), cluster_id=i, num_points=5)
            for i in range(n)]


def test_cdr_markers_read_back_as_the_message_classes_build_them():
    """The bytes the node publishes deserialise (rclpy) to exactly the MarkerArray that
    detections_to_markers builds, for any frame: box counts, label lengths (alignment), frame ids."""
    from rclpy.serialization import deserialize_message
    from visualization_msgs.msg import MarkerArray

    from clip2_ros.marker_cdr import MarkerEncoder, encode_markers

    enc = MarkerEncoder()
    assert enc.usable, enc.reason
    rng = np.random.default_rng(3)
    for trial in range(60):
        n = int(rng.integers(0, 70)) if trial else 0
        frame_id = ["lidar", "", "LIDAR_TOP", "a/b/c_d", "lidar_top_"][trial % 5]
        stamp = seconds_to_stamp(float(rng.uniform(0, 2e9)))
        dets = _random_dets(rng, n)
        ours = deserialize_message(enc.encode(dets, frame_id, stamp), MarkerArray)
        assert ours == _wire(detections_to_markers(dets, frame_id, stamp)), (trial, n, frame_id)
    assert deserialize_message(encode_markers(_dets(), "lidar"), MarkerArray) == _wire(detections_to_markers(_dets(), "lidar"))


def test_a_wrong_cdr_layout_is_caught_before_use():
    """A writer whose bytes do not read back as rclpy's is refused with a reason (the node then
    publishes messages): one byte short, or the right length with a field out of place."""
    from clip2_ros.marker_cdr import MarkerEncoder, encode_markers

    short = MarkerEncoder(lambda *a: encode_markers(*a)[:-1])
    assert not short.usable and "differs" in short.reason
    with pytest.raises(RuntimeError, match="not usable"):
        short.encode(_dets(), "lidar")

    def renamed(*a):  # the first cube's namespace "boxes" written as "label": same length, other content
        b = encode_markers(*a)
        i = b.find(b"boxes\x00")
        return b[:i] + b"label" + b[i + 5:] if i >= 0 else b

    assert not MarkerEncoder(renamed).usable
