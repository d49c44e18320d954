"""Open-vocabulary detection metrics and the nuScenes submission (clip2_core.eval.detection), hand-worked."""
import json
import math

import numpy as np
import pytest

from clip2_core.eval.detection import (
    ScoredFrame,
    canonical_label,
    confusion_matrix,
    detection_class,
    greedy_match,
    latency_stats,
    load_label_map,
    nuscenes_box,
    nuscenes_submission,
    open_vocab_metrics,
    operating_point,
    score_curve,
)
from clip2_core.geometry import make_transform, quaternion_to_matrix, yaw_to_rotation


def box(x, y, l=4.0, w=2.0, h=1.5, yaw=0.0, z=0.0):
    return [x, y, z, l, w, h, yaw]


def test_greedy_match_takes_the_closest_pair_first():
    det = np.array([[0.0, 0.0], [0.9, 0.0]])
    gt = np.array([[1.0, 0.0], [0.0, 0.5]])
    # distances: d0-g0 1.0, d0-g1 0.5, d1-g0 0.1, d1-g1 1.03 -> (1, 0) then (0, 1)
    assert sorted(greedy_match(det, gt, 1.0)) == [(0, 1), (1, 0)]
    assert greedy_match(det, gt, 0.2) == [(1, 0)]
    assert greedy_match(np.zeros((0, 2)), gt, 1.0) == []


def hand_frame():
    """Objects: a car (50 pts) at (10, 0), a pedestrian (12 pts) at (5, 5), a barrier (3 pts) at (0, 8),
    debris (20 pts) at (-6, 0). Detections: car at 0.5 m off (label car), a duplicate near the car
    (1.5 m off), a pedestrian labelled "person" 0.3 m off, unknown on the debris, a wall piece at (30, 30)."""
    gt = [box(10, 0), box(5, 5, 0.6, 0.6, 1.8), box(0, 8, 2, 0.5, 1), box(-6, 0, 0.5, 0.5, 0.3)]
    det = [box(10.5, 0), box(11.5, 0), box(5.3, 5), box(-6.2, 0.1, 0.5, 0.5, 0.3), box(30, 30, 10, 0.3, 2)]
    return ScoredFrame(stamp=1.0, gt_boxes=gt, gt_labels=["car", "pedestrian", "barrier", "debris"],
                       gt_points=[50, 12, 3, 20], det_boxes=det,
                       det_labels=["car", "car", "person", "unknown", "truck"],
                       det_scores=[0.9, 0.6, 0.8, 0.4, 0.7], sample_token="s1")


def test_open_vocab_metrics_on_a_hand_worked_frame():
    m = open_vocab_metrics([hand_frame()], min_points=10)
    at1, at2 = m["at"]["1m"], m["at"]["2m"]
    # eligible objects (>= 10 pts): car, pedestrian, debris = 3; all three found at 1 m
    assert (at1["objects"], at1["found"], at1["recall"]) == (3, 3, 1.0)
    # 1 m: car dup at 1.5 m is near no object within 1 m -> false alarm; the wall too -> 2 of 5
    assert (at1["false_alarms"], at1["duplicates"], at1["detections"]) == (2, 0, 5)
    assert at1["false_alarm_rate"] == pytest.approx(0.4)
    # 2 m: the duplicate is within 2 m of the car (matched by the other detection) -> duplicate; wall -> false alarm
    assert (at2["false_alarms"], at2["duplicates"]) == (1, 1)
    assert at2["false_alarm_rate"] == pytest.approx(0.2)
    # labels at 1 m: car right, "person" -> pedestrian right, unknown on debris wrong -> 2/3
    assert m["label_accuracy"] == pytest.approx(2 / 3)
    assert m["confusion"] == {"car": {"car": 1}, "debris": {"unknown": 1}, "pedestrian": {"pedestrian": 1}}
    assert m["unknown"] == {"detections": 1, "on_objects": 1, "on_long_tail_objects": 1}
    assert m["per_class"]["car"]["recall"] == 1.0 and "barrier" not in m["per_class"]  # 3 points: not eligible


def test_a_keyframe_without_results_counts_as_misses():
    f = hand_frame()
    empty = ScoredFrame(stamp=2.0, gt_boxes=f.gt_boxes, gt_labels=f.gt_labels, gt_points=f.gt_points,
                        processed=False, sample_token="s2")
    m = open_vocab_metrics([f, empty], min_points=10)
    assert m["at"]["1m"]["objects"] == 6 and m["at"]["1m"]["found"] == 3 and m["keyframes_processed"] == 1
    assert math.isnan(open_vocab_metrics([], min_points=10)["at"]["1m"]["recall"])


def test_scored_frame_rejects_ragged_inputs():
    with pytest.raises(ValueError, match="one entry per detection"):
        ScoredFrame(stamp=0, gt_boxes=[], gt_labels=[], gt_points=[], det_boxes=[box(0, 0)], det_labels=[],
                    det_scores=[1.0])


def test_labels_map_to_classes():
    assert canonical_label("traffic cone") == "traffic_cone"
    assert canonical_label("Person") == "pedestrian"
    assert canonical_label("construction-vehicle") == "construction_vehicle"
    assert detection_class("pole") is None and detection_class("unknown") is None
    assert detection_class("lorry") == "truck"
    assert detection_class("van", {"van": None}) is None
    assert detection_class("tuk tuk", {"tuk tuk": "car"}) == "car"


def test_label_map_file_is_checked(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"tuk tuk": "car", "pole": None}))
    assert load_label_map(good) == {"tuk tuk": "car", "pole": None}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"tuk tuk": "rickshaw"}))
    with pytest.raises(ValueError, match="rickshaw"):
        load_label_map(bad)
    with pytest.raises(FileNotFoundError):
        load_label_map(tmp_path / "missing.json")


def test_confusion_matrix_puts_unknown_last():
    m, rows, cols = confusion_matrix({"car": {"car": 3, "unknown": 1}, "truck": {"car": 2}})
    assert rows == ["car", "truck"] and cols == ["car", "truck", "unknown"]
    assert m.tolist() == [[3, 0, 1], [2, 0, 0]]


def test_latency_stats():
    s = latency_stats([10.0, 20.0, 30.0, 40.0, float("nan")])
    assert s["n"] == 4 and s["p50"] == 25.0 and s["max"] == 40.0 and s["mean"] == 25.0
    assert s["p99"] == pytest.approx(39.7)
    assert latency_stats([])["n"] == 0


def test_nuscenes_box_goes_to_the_global_frame():
    # LiDAR frame yawed 90 deg and shifted (100, 200, 1): a box at (1, 0) with yaw 0 lands at (100, 201)
    T = make_transform(yaw_to_rotation(np.pi / 2), [100.0, 200.0, 1.0])
    b = nuscenes_box(box(1.0, 0.0, l=4.0, w=2.0, h=1.5, yaw=0.0, z=0.5), T)
    assert np.allclose(b["translation"], [100.0, 201.0, 1.5])
    assert b["size"] == [2.0, 4.0, 1.5]  # w, l, h
    R = quaternion_to_matrix(b["rotation"], scalar_first=True)
    assert np.allclose(R, yaw_to_rotation(np.pi / 2), atol=1e-9)


def test_submission_keeps_detection_classes_and_every_sample():
    f = hand_frame()
    empty = ScoredFrame(stamp=2.0, gt_boxes=[], gt_labels=[], gt_points=[], processed=False, sample_token="s2")
    T = {"s1": np.eye(4), "s2": np.eye(4)}
    sub = nuscenes_submission([f, empty], T)
    assert set(sub["results"]) == {"s1", "s2"} and sub["results"]["s2"] == []
    names = [b["detection_name"] for b in sub["results"]["s1"]]
    # unknown is not submitted; truck/car/person are; sorted by score
    assert names == ["car", "pedestrian", "truck", "car"]
    first = sub["results"]["s1"][0]
    assert first["attribute_name"] == "vehicle.parked" and first["velocity"] == [0.0, 0.0]
    assert sub["meta"]["use_lidar"] is True
    with pytest.raises(ValueError, match="sample_token"):
        nuscenes_submission([ScoredFrame(stamp=0, gt_boxes=[], gt_labels=[], gt_points=[])], T)


def test_score_curve_trades_false_alarms_for_recall_hand_worked():
    # two objects; detections: on object 0 (score 0.9), on object 1 (0.4), clutter (0.6) and (0.2)
    f = ScoredFrame(stamp=0.0, gt_boxes=[box(0, 0), box(10, 0)], gt_labels=["car", "car"], gt_points=[50, 50],
                    det_boxes=[box(0.2, 0), box(10.3, 0), box(30, 0), box(-20, 5)],
                    det_labels=["car", "car", "car", "unknown"], det_scores=[0.9, 0.4, 0.6, 0.2])
    curve = score_curve([f], thresholds=[0.0, 0.3, 0.5, 0.7, 0.95])
    got = [(p["threshold"], p["recall"], p["false_alarm_rate"], p["detections"]) for p in curve]
    assert got == [(0.0, 1.0, 0.5, 4), (0.3, 1.0, pytest.approx(1 / 3), 3), (0.5, 0.5, 0.5, 2), (0.7, 0.5, 0.0, 1),
                   (0.95, 0.0, 0.0, 0)]
    # the best recall at <= 10% false alarms is at 0.7; at <= 40% it is 0.3 (recall 1.0)
    assert operating_point(curve, 0.10)["threshold"] == 0.7
    assert operating_point(curve, 0.40)["threshold"] == 0.3
    assert operating_point(curve[:1], 0.10) is None
    assert len(score_curve([f])) == 20  # default thresholds 0, 0.05, ..., 0.95
