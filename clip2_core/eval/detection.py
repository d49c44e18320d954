"""Detection-level metrics of a replayed run: what the nuScenes devkit lacks, plus the submission file.

Pure functions on arrays (no ROS, no devkit): the replay evaluator (:mod:`clip2_ros.replay`)
collects one :class:`ScoredFrame` per keyframe and calls :func:`open_vocab_metrics`,
:func:`latency_stats` and :func:`nuscenes_submission`. Definitions (also in docs/replay.md):

- **Matching**: per keyframe, detections and annotated objects (every annotated object, whatever
  its category or point count) are paired one to one, greedily by bird's-eye centre distance
  (closest pair first) among pairs within the threshold ``d``.
- **Class-agnostic recall@d**: matched objects with >= ``min_points`` LiDAR points / objects with
  >= ``min_points`` points. Any label counts, ``unknown`` included.
- **False alarm@d**: a detection with no annotated object within ``d``; **duplicate**: unmatched, but
  within ``d`` of an object that another detection matched. False-alarm rate = false alarms /
  detections.
- **Label accuracy** (at ``label_threshold``): among matched objects with >= ``min_points`` points,
  the share whose detection label, mapped to a class name (:func:`canonical_label`), equals the
  object's class. ``unknown`` is a wrong label.
- **Confusion**: ground-truth class x predicted class over the same matched pairs.
- **Recall by range** (``by_range``): class-agnostic recall@``label_threshold`` of the objects whose
  bird's-eye distance from the sensor falls in each of ``RANGE_BINS`` (far objects are where
  multi-sweep accumulation is meant to help).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

UNKNOWN = "unknown"
# the 10 classes of the nuScenes detection benchmark
NUSCENES_DETECTION_CLASSES = ("car", "truck", "bus", "trailer", "construction_vehicle", "pedestrian", "motorcycle",
                              "bicycle", "traffic_cone", "barrier")
# vocabulary words (normalised, see canonical_label) that name a detection class by another name
LABEL_SYNONYMS: Dict[str, str] = {
    "person": "pedestrian", "people": "pedestrian", "pedestrians": "pedestrian", "child": "pedestrian",
    "cone": "traffic_cone", "cones": "traffic_cone", "bike": "bicycle", "cyclist": "bicycle",
    "motorbike": "motorcycle", "scooter": "motorcycle", "lorry": "truck", "van": "car", "suv": "car",
    "excavator": "construction_vehicle", "crane": "construction_vehicle", "jersey_barrier": "barrier",
}
# attribute_name written for each class (the devkit scores it as AAE; we do not predict attributes,
# so the most common attribute of the class in nuScenes is written)
DEFAULT_ATTRIBUTE: Dict[str, str] = {
    "car": "vehicle.parked", "truck": "vehicle.parked", "bus": "vehicle.moving", "trailer": "vehicle.parked",
    "construction_vehicle": "vehicle.parked", "pedestrian": "pedestrian.moving", "motorcycle": "cycle.without_rider",
    "bicycle": "cycle.without_rider", "traffic_cone": "", "barrier": "",
}
MAX_BOXES_PER_SAMPLE = 500  # the devkit refuses more
RANGE_BINS = (0.0, 20.0, 40.0, float("inf"))  # [m] bird's-eye distance bins of recall by range


def canonical_label(label: str, label_map: Optional[Mapping[str, Optional[str]]] = None) -> str:
    """The class name a vocabulary label stands for: ``label_map[label]`` when given, else the label
    lower-cased with spaces and hyphens as underscores, then :data:`LABEL_SYNONYMS`
    (``"traffic cone"`` -> ``traffic_cone``, ``"person"`` -> ``pedestrian``)."""
    if label_map is not None and label in label_map and label_map[label]:
        return str(label_map[label])
    norm = "_".join(str(label).strip().lower().replace("-", " ").split())
    return LABEL_SYNONYMS.get(norm, norm)


def detection_class(label: str, label_map: Optional[Mapping[str, Optional[str]]] = None) -> Optional[str]:
    """The nuScenes detection class of a label, or None (``unknown``, long-tail words, mapped to null)."""
    if label_map is not None and label in label_map and not label_map[label]:
        return None
    c = canonical_label(label, label_map)
    return c if c in NUSCENES_DETECTION_CLASSES else None


def load_label_map(spec: Union[None, str, Path, Mapping[str, Optional[str]]]) -> Dict[str, Optional[str]]:
    """``None`` -> {} (the default rules of :func:`canonical_label`); a dict; or a JSON file
    ``{"vocabulary word": "nuscenes_class" or null}`` (null: never submitted to the devkit)."""
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        return dict(spec)
    from clip2_core.fileio import read_json_object

    data = read_json_object(spec, "label map")  # {label: class or null}
    bad = sorted(v for v in data.values() if v is not None and v not in NUSCENES_DETECTION_CLASSES)
    if bad:
        raise ValueError(f"label map {spec}: {bad} are not nuScenes detection classes {list(NUSCENES_DETECTION_CLASSES)}")
    return data


# ---------------------------------------------------------------------------------------------- frames
@dataclass
class ScoredFrame:
    """One keyframe: its annotations and what the node published for its sweep (LiDAR frame, [x y z l w h yaw])."""

    stamp: float
    gt_boxes: np.ndarray  # (G, 7)
    gt_labels: Sequence[str]  # class names (the bag's class map)
    gt_points: np.ndarray  # (G,) LiDAR points per object (num_lidar_pts)
    det_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 7)))  # (D, 7)
    det_labels: Sequence[str] = ()
    det_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    processed: bool = True  # False: the node published nothing for this sweep (scored as no detections)
    sample_token: str = ""

    def __post_init__(self):
        self.gt_boxes = np.asarray(self.gt_boxes, dtype=np.float64).reshape(-1, 7)
        self.gt_points = np.asarray(self.gt_points, dtype=np.int64).reshape(-1)
        self.det_boxes = np.asarray(self.det_boxes, dtype=np.float64).reshape(-1, 7)
        self.det_scores = np.asarray(self.det_scores, dtype=np.float64).reshape(-1)
        if len(self.gt_labels) != len(self.gt_boxes) or len(self.gt_points) != len(self.gt_boxes):
            raise ValueError("gt_boxes, gt_labels and gt_points must have one entry per object")
        if len(self.det_labels) != len(self.det_boxes) or len(self.det_scores) != len(self.det_boxes):
            raise ValueError("det_boxes, det_labels and det_scores must have one entry per detection")


def greedy_match(det_xy: np.ndarray, gt_xy: np.ndarray, max_dist: float) -> List[Tuple[int, int]]:
    """One-to-one (detection, object) pairs within ``max_dist``, closest pair first."""
    det_xy = np.asarray(det_xy, dtype=np.float64).reshape(-1, 2)
    gt_xy = np.asarray(gt_xy, dtype=np.float64).reshape(-1, 2)
    if not len(det_xy) or not len(gt_xy):
        return []
    dist = np.linalg.norm(det_xy[:, None, :] - gt_xy[None, :, :], axis=2)
    di, gi = np.nonzero(dist <= max_dist)
    order = np.argsort(dist[di, gi], kind="stable")
    used_d, used_g, pairs = set(), set(), []
    for k in order:
        d, g = int(di[k]), int(gi[k])
        if d in used_d or g in used_g:
            continue
        used_d.add(d)
        used_g.add(g)
        pairs.append((d, g))
    return pairs


def _frame_counts(f: ScoredFrame, d: float, min_points: int) -> Dict[str, int]:
    pairs = greedy_match(f.det_boxes[:, :2], f.gt_boxes[:, :2], d)
    matched_d = {p[0] for p in pairs}
    eligible = f.gt_points >= min_points
    near_any = np.zeros(len(f.det_boxes), dtype=bool)
    if len(f.det_boxes) and len(f.gt_boxes):
        dist = np.linalg.norm(f.det_boxes[:, None, :2] - f.gt_boxes[None, :, :2], axis=2)
        near_any = (dist <= d).any(axis=1)
    unmatched = np.array([i not in matched_d for i in range(len(f.det_boxes))], dtype=bool)
    return {
        "objects": int(eligible.sum()),
        "found": int(sum(1 for _, g in pairs if eligible[g])),
        "detections": int(len(f.det_boxes)),
        "matched": len(pairs),
        "false_alarms": int((unmatched & ~near_any).sum()),
        "duplicates": int((unmatched & near_any).sum()),
    }


def open_vocab_metrics(
    frames: Iterable[ScoredFrame],
    min_points: int = 10,
    thresholds: Sequence[float] = (1.0, 2.0),
    label_threshold: float = 1.0,
    label_map: Optional[Mapping[str, Optional[str]]] = None,
) -> Dict[str, object]:
    """Recall, false alarms, label accuracy and confusion over keyframes (definitions: module docstring)."""
    frames = list(frames)
    out: Dict[str, object] = {"min_points": int(min_points), "keyframes": len(frames),
                              "keyframes_processed": int(sum(f.processed for f in frames))}
    by_d: Dict[str, Dict[str, float]] = {}
    for d in thresholds:
        tot = {"objects": 0, "found": 0, "detections": 0, "matched": 0, "false_alarms": 0, "duplicates": 0}
        for f in frames:
            for k, v in _frame_counts(f, float(d), min_points).items():
                tot[k] += v
        tot_out: Dict[str, float] = dict(tot)
        tot_out["recall"] = tot["found"] / tot["objects"] if tot["objects"] else float("nan")
        tot_out["false_alarm_rate"] = tot["false_alarms"] / tot["detections"] if tot["detections"] else 0.0
        by_d[f"{float(d):g}m"] = tot_out
    out["at"] = by_d

    # labels on matched, eligible objects
    confusion: Dict[str, Dict[str, int]] = {}
    per_class: Dict[str, Dict[str, int]] = {}
    unknown_total = unknown_on_object = unknown_on_long_tail = 0
    correct = matched = 0
    for f in frames:
        pairs = greedy_match(f.det_boxes[:, :2], f.gt_boxes[:, :2], label_threshold)
        eligible = f.gt_points >= min_points
        for dj, lbl in enumerate(f.det_labels):
            if lbl == UNKNOWN:
                unknown_total += 1
        matched_dets = {d: g for d, g in pairs}
        for dj, g in matched_dets.items():
            if f.det_labels[dj] == UNKNOWN:
                unknown_on_object += 1
                if str(f.gt_labels[g]) not in NUSCENES_DETECTION_CLASSES:
                    unknown_on_long_tail += 1
        for g in range(len(f.gt_boxes)):
            if not eligible[g]:
                continue
            gt_cls = str(f.gt_labels[g])
            pc = per_class.setdefault(gt_cls, {"objects": 0, "found": 0, "correct": 0})
            pc["objects"] += 1
        for dj, g in pairs:
            if not eligible[g]:
                continue
            gt_cls = str(f.gt_labels[g])
            pred = UNKNOWN if f.det_labels[dj] == UNKNOWN else canonical_label(f.det_labels[dj], label_map)
            row = confusion.setdefault(gt_cls, {})
            row[pred] = row.get(pred, 0) + 1
            per_class[gt_cls]["found"] += 1
            ok = pred == gt_cls
            per_class[gt_cls]["correct"] += int(ok)
            correct += int(ok)
            matched += 1
    out["label_threshold_m"] = float(label_threshold)
    out["label_accuracy"] = correct / matched if matched else float("nan")
    out["labelled_objects"] = matched
    out["per_class"] = {c: dict(v, recall=v["found"] / v["objects"] if v["objects"] else float("nan"),
                                label_accuracy=v["correct"] / v["found"] if v["found"] else float("nan"))
                        for c, v in sorted(per_class.items())}
    out["confusion"] = {g: dict(sorted(r.items())) for g, r in sorted(confusion.items())}
    out["unknown"] = {"detections": unknown_total, "on_objects": unknown_on_object,
                      "on_long_tail_objects": unknown_on_long_tail}
    out["by_range"] = recall_by_range(frames, min_points, label_threshold)
    return out


def recall_by_range(frames: Iterable[ScoredFrame], min_points: int = 10, max_dist: float = 1.0,
                    bins: Sequence[float] = RANGE_BINS) -> Dict[str, Dict[str, float]]:
    """Class-agnostic recall@``max_dist`` per bird's-eye range bin of the objects (``"0-20m"``: objects,
    found, recall)."""
    edges = list(bins)
    tot = {i: [0, 0] for i in range(len(edges) - 1)}
    for f in frames:
        pairs = greedy_match(f.det_boxes[:, :2], f.gt_boxes[:, :2], max_dist)
        found = {g for _, g in pairs}
        rng = np.hypot(f.gt_boxes[:, 0], f.gt_boxes[:, 1])
        for g in np.flatnonzero(f.gt_points >= min_points):
            i = int(np.searchsorted(edges, rng[g], side="right")) - 1
            if 0 <= i < len(edges) - 1:
                tot[i][0] += 1
                tot[i][1] += int(g in found)
    out = {}
    for i, (n, k) in tot.items():
        hi = "" if not np.isfinite(edges[i + 1]) else f"{edges[i + 1]:g}"
        out[f"{edges[i]:g}-{hi}m" if hi else f">{edges[i]:g}m"] = {
            "objects": n, "found": k, "recall": k / n if n else float("nan")}
    return out


def score_curve(frames: Iterable[ScoredFrame], min_points: int = 10, max_dist: float = 1.0,
                thresholds: Optional[Sequence[float]] = None) -> List[Dict[str, float]]:
    """Class-agnostic recall and false-alarm rate of the detections scoring at least each threshold.

    The published detections are filtered by score (``ScoredFrame.det_scores``: the probability of
    the label) and scored as in :func:`open_vocab_metrics` at ``max_dist``; the curve shows what a
    ``score_threshold`` would trade. Default thresholds: 0, 0.05, ..., 0.95.
    """
    frames = list(frames)
    ts = np.round(np.arange(0.0, 1.0, 0.05), 2) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    out = []
    for t in ts:
        tot = {"objects": 0, "found": 0, "detections": 0, "false_alarms": 0}
        for f in frames:
            keep = f.det_scores >= t
            g = ScoredFrame(stamp=f.stamp, gt_boxes=f.gt_boxes, gt_labels=f.gt_labels, gt_points=f.gt_points,
                            det_boxes=f.det_boxes[keep], det_labels=[l for l, k in zip(f.det_labels, keep) if k],
                            det_scores=f.det_scores[keep], processed=f.processed)
            c = _frame_counts(g, float(max_dist), min_points)
            for k in tot:
                tot[k] += c[k]
        out.append({"threshold": float(t), "recall": tot["found"] / tot["objects"] if tot["objects"] else float("nan"),
                    "false_alarm_rate": tot["false_alarms"] / tot["detections"] if tot["detections"] else 0.0,
                    "detections": tot["detections"], "false_alarms": tot["false_alarms"], "found": tot["found"]})
    return out


def operating_point(curve: Sequence[Mapping[str, float]], max_false_alarm_rate: float = 0.10) -> Optional[Dict[str, float]]:
    """The curve point with the highest recall whose false-alarm rate is at most the given one (None if none)."""
    ok = [p for p in curve if p["detections"] and p["false_alarm_rate"] <= max_false_alarm_rate]
    return dict(max(ok, key=lambda p: (p["recall"], -p["threshold"]))) if ok else None


def confusion_matrix(confusion: Mapping[str, Mapping[str, int]]) -> Tuple[np.ndarray, List[str], List[str]]:
    """``(matrix, rows, cols)`` of a nested confusion dict (rows: GT classes; cols: predicted classes)."""
    rows = sorted(confusion)
    cols = sorted({c for r in confusion.values() for c in r} | set(rows))
    if UNKNOWN in cols:  # unknown last
        cols = [c for c in cols if c != UNKNOWN] + [UNKNOWN]
    m = np.zeros((len(rows), len(cols)), dtype=np.int64)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            m[i, j] = confusion[r].get(c, 0)
    return m, rows, cols


def latency_stats(values_ms: Sequence[float]) -> Dict[str, float]:
    """n, mean, p50, p95, p99 and max of latencies [ms] (NaN when empty; percentiles by linear interpolation)."""
    v = np.asarray([x for x in values_ms if x is not None and np.isfinite(x)], dtype=np.float64)
    if not len(v):
        return {"n": 0, "mean": float("nan"), "p50": float("nan"), "p95": float("nan"), "p99": float("nan"),
                "max": float("nan")}
    p50, p95, p99 = np.percentile(v, [50, 95, 99])
    return {"n": int(len(v)), "mean": float(v.mean()), "p50": float(p50), "p95": float(p95), "p99": float(p99),
            "max": float(v.max())}


# ---------------------------------------------------------------------------------------------- submission
def nuscenes_box(box: Sequence[float], T_global_lidar: np.ndarray) -> Dict[str, List[float]]:
    """translation / size (w, l, h) / rotation (w, x, y, z) in the global frame of a LiDAR-frame box."""
    from clip2_core.geometry import matrix_to_quaternion, yaw_to_rotation

    b = np.asarray(box, dtype=np.float64)
    T = np.asarray(T_global_lidar, dtype=np.float64)
    centre = T[:3, :3] @ b[:3] + T[:3, 3]
    R = T[:3, :3] @ yaw_to_rotation(float(b[6]))
    q = matrix_to_quaternion(R, scalar_first=True)
    return {"translation": [float(v) for v in centre], "size": [float(b[4]), float(b[3]), float(b[5])],
            "rotation": [float(v) for v in q]}


def nuscenes_submission(
    frames: Iterable[ScoredFrame],
    T_global_lidar: Mapping[str, np.ndarray],
    label_map: Optional[Mapping[str, Optional[str]]] = None,
    meta: Optional[Mapping[str, bool]] = None,
) -> Dict[str, object]:
    """A nuScenes detection results document: every keyframe's sample token (an empty list when the
    node published nothing for it), boxes of labels that map to a detection class (at most 500 per
    sample, best scores first), velocity 0 (not estimated), the class's default attribute."""
    results: Dict[str, List[dict]] = {}
    for f in frames:
        if not f.sample_token:
            raise ValueError("every scored frame needs its sample_token for a submission")
        boxes = []
        for j in np.argsort(-f.det_scores, kind="stable"):
            cls = detection_class(f.det_labels[j], label_map)
            if cls is None:
                continue
            rec = {"sample_token": f.sample_token, **nuscenes_box(f.det_boxes[j], T_global_lidar[f.sample_token]),
                   "velocity": [0.0, 0.0], "detection_name": cls,
                   "detection_score": float(np.clip(f.det_scores[j], 0.0, 1.0)),
                   "attribute_name": DEFAULT_ATTRIBUTE[cls]}
            boxes.append(rec)
            if len(boxes) == MAX_BOXES_PER_SAMPLE:
                break
        results[f.sample_token] = boxes
    m = {"use_camera": False, "use_lidar": True, "use_radar": False, "use_map": False, "use_external": False}
    m.update(meta or {})
    return {"meta": m, "results": results}
