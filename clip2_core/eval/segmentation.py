"""Segmentation quality against annotated boxes: what clustering gives recognition to work with.

:func:`segmentation_quality` scores one sweep's :class:`~clip2_core.segmentation.SegmentationResult`
against its ground-truth boxes (sensor frame). It answers, per annotated object with at least
``min_points`` points in the sweep, whether a cluster stands for it and if not why:

* ``found``: one-to-one greedy match of cluster box centres to object centres within ``max_dist``
  (BEV), the same rule the replay evaluation uses for detections, so this recall is the ceiling of
  the node's recall.
* a miss is put in one bucket, checked in this order:
  ``ground`` — fewer than 5 of its points are left after ground removal (low objects, and far
  objects whose box points are mostly road returns under them);
  ``no_cluster`` — no kept cluster holds at least half of its remaining points (too few points
  after ground removal, a dropped cluster, or points spread over several small clusters: ``split``
  when two or more clusters each hold a fifth or more);
  ``merged`` — the cluster holding most of its points also holds points of another object, or more
  points outside the (0.3 m grown) box than inside it;
  ``offset`` — a pure cluster whose box centre is off by more than ``max_dist`` (partial views).
* ``background``: kept clusters with less than half their points in any (grown) annotated box —
  scene structure or clutter that recognition must reject.

Objects are every annotated box given (pass the long-tail classes too: debris, a tyre or a stroller
are objects a cluster should stand for).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Sequence

import numpy as np

from clip2_core.eval.detection import greedy_match
from clip2_core.geometry import points_in_boxes

MISS_REASONS = ("ground", "no_cluster", "split", "merged", "offset")
GROW = 0.3  # [m] boxes grown by this on every side when asking "is this point part of the object"
GROUND_LOST = 5  # an object with fewer points than this left after ground removal is lost to the ground


@dataclass
class SegmentationScore:
    """One sweep's counts (see the module docstring); ``misses`` lists (object index, reason)."""

    objects: int = 0
    found: int = 0
    clusters: int = 0
    background: int = 0
    reasons: Dict[str, int] = field(default_factory=lambda: {r: 0 for r in MISS_REASONS})
    per_class: Dict[str, Dict[str, int]] = field(default_factory=dict)
    misses: List[tuple] = field(default_factory=list)

    def add(self, other: "SegmentationScore") -> "SegmentationScore":
        self.objects += other.objects
        self.found += other.found
        self.clusters += other.clusters
        self.background += other.background
        for r, n in other.reasons.items():
            self.reasons[r] = self.reasons.get(r, 0) + n
        for c, d in other.per_class.items():
            row = self.per_class.setdefault(c, {"objects": 0, "found": 0})
            row["objects"] += d["objects"]
            row["found"] += d["found"]
        return self

    def summary(self) -> Dict[str, object]:
        return {
            "objects": self.objects, "found": self.found,
            "recall": self.found / self.objects if self.objects else float("nan"),
            "clusters": self.clusters, "background_clusters": self.background,
            "background_share": self.background / self.clusters if self.clusters else 0.0,
            "misses": dict(self.reasons),
            "per_class": {c: dict(d, recall=d["found"] / d["objects"] if d["objects"] else float("nan"))
                          for c, d in sorted(self.per_class.items())},
        }


def _grown(boxes: np.ndarray, by: float) -> np.ndarray:
    g = np.array(boxes, dtype=np.float64).reshape(-1, 7)
    g[:, 3:6] += 2 * by
    return g


def segmentation_quality(points: np.ndarray, ground_mask: np.ndarray, labels: np.ndarray, cluster_boxes: np.ndarray,
                         gt_boxes: np.ndarray, gt_labels: Sequence[str], min_points: int = 10,
                         max_dist: float = 1.0) -> SegmentationScore:
    """Score one sweep (module docstring).

    Args:
        points: (N, 3+) sweep. ground_mask: (N,) bool. labels: (N,) cluster id per point (-1: none),
        ids index ``cluster_boxes`` (C, 7). gt_boxes: (G, 7) annotated boxes, same frame; gt_labels: (G,).
    """
    pts = np.asarray(points)[:, :3]
    labels = np.asarray(labels).reshape(-1)
    ground_mask = np.asarray(ground_mask, dtype=bool).reshape(-1)
    cb = np.asarray(cluster_boxes, dtype=np.float64).reshape(-1, 7)
    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 7)
    score = SegmentationScore(clusters=len(cb))
    inside = points_in_boxes(pts, gt)  # (N, G)
    near = points_in_boxes(pts, _grown(gt, GROW)) if len(gt) else inside
    n_in = inside.sum(axis=0)
    eligible = n_in >= min_points
    # background clusters: under half their points in any grown box
    if len(cb):
        in_any = near.any(axis=1) if len(gt) else np.zeros(len(pts), dtype=bool)
        on = labels >= 0
        tot = np.bincount(labels[on], minlength=len(cb))
        obj = np.bincount(labels[on & in_any], minlength=len(cb))
        score.background = int((obj < 0.5 * np.maximum(tot, 1)).sum())
    pairs = greedy_match(cb[:, :2], gt[:, :2], max_dist)
    found = {g for _, g in pairs}
    for g in np.flatnonzero(eligible):
        cls = str(gt_labels[g])
        row = score.per_class.setdefault(cls, {"objects": 0, "found": 0})
        row["objects"] += 1
        score.objects += 1
        if g in found:
            row["found"] += 1
            score.found += 1
            continue
        members = np.flatnonzero(inside[:, g])
        reason = _miss_reason(members, g, ground_mask, labels, near, cb, gt, max_dist)
        score.reasons[reason] += 1
        score.misses.append((int(g), reason))
    return score


def _miss_reason(members: np.ndarray, g: int, ground_mask: np.ndarray, labels: np.ndarray, near: np.ndarray,
                 cb: np.ndarray, gt: np.ndarray, max_dist: float) -> str:
    rest = members[~ground_mask[members]]
    if rest.size < GROUND_LOST:
        return "ground"
    lab = labels[rest]
    lab = lab[lab >= 0]
    if lab.size == 0:
        return "no_cluster"
    ids, counts = np.unique(lab, return_counts=True)
    if counts.max() < 0.5 * rest.size:
        return "split" if (counts >= 0.2 * rest.size).sum() >= 2 else "no_cluster"
    c = int(ids[np.argmax(counts)])
    cpts = np.flatnonzero(labels == c)
    others = np.delete(near[cpts], g, axis=1) if near.shape[1] > 1 else np.zeros((len(cpts), 0), dtype=bool)
    own = near[cpts, g]
    other_obj = (others.any(axis=1) & ~own).sum() if others.size else 0
    outside = (~near[cpts].any(axis=1)).sum()
    if other_obj >= 5 or outside > own.sum():
        return "merged"
    return "offset" if np.linalg.norm(cb[c, :2] - gt[g, :2]) > max_dist else "merged"


def score_sweeps(items: Iterable[Mapping], segmenter, min_points: int = 10, max_dist: float = 1.0) -> SegmentationScore:
    """Sum :func:`segmentation_quality` over sweeps given as dicts with ``points``, ``gt_boxes``, ``gt_labels``."""
    total = SegmentationScore()
    for it in items:
        res = segmenter.segment(it["points"])
        cb = np.array([c.box.as_array() for c in res.clusters]).reshape(-1, 7)
        total.add(segmentation_quality(it["points"], res.ground_mask, res.labels, cb, it["gt_boxes"], it["gt_labels"],
                                       min_points=min_points, max_dist=max_dist))
    return total
