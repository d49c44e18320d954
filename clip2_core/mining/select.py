"""From a 2D proposal to the object's LiDAR points: frustum, DBSCAN, choice of the cluster.

The rule (``FrustumConfig.rule``):
- ``"coverage"`` (default): project each DBSCAN cluster in the frustum into the image and keep
  the one whose projected 2D extent best matches the proposal box (IoU), ties to the nearer.
  The object a detector boxed fills its box; background seen around or through it (road signs
  behind, a wall, the next car) covers only part of it, and small clutter in front covers little.
- ``"largest"``: the cluster with most points (the classic choice; picks big backgrounds).
- ``"nearest"``: the cluster with the smallest median depth (picks occluders and clutter).
The three are measured against ground truth on synthetic data (purity and recall) in
docs/mining.md; ``coverage`` wins there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from clip2_core.geometry import frustum_mask, iou_2d, project_points
from clip2_core.segmentation import dbscan
from clip2_core.types import CameraView

RULES = ("coverage", "largest", "nearest")


@dataclass
class FrustumConfig:
    """Frustum + DBSCAN proxy selection parameters (metres, points)."""

    near: float = 1.0  # camera depth limits of the frustum
    far: float = 80.0
    shrink: float = 0.05  # shrink the 2D box by this fraction per side before extruding (less background)
    eps: float = 0.5  # DBSCAN radius
    min_samples: int = 3  # DBSCAN core threshold (itself included)
    rule: str = "coverage"  # see module docstring
    min_points: int = 8  # fewer points: no proxy
    max_extent: float = 20.0  # a cluster longer than this (BEV) is background, not an object
    min_coverage: float = 0.1  # coverage rule: a best IoU below this means no object found

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown cluster rule {self.rule!r}; choose one of {RULES}")
        if not 0 < self.near < self.far:
            raise ValueError(f"need 0 < near < far, got near={self.near}, far={self.far}")


@dataclass
class MinedObject:
    """The object points chosen for one proposal."""

    indices: np.ndarray  # (K,) int64 rows of the sweep's points
    coverage: float  # IoU of the cluster's projected extent with the proposal box
    depth: float  # median camera depth of the cluster [m]
    candidates: int  # DBSCAN clusters found in the frustum


def shrink_box(box2d, fraction: float) -> np.ndarray:
    x0, y0, x1, y1 = (float(v) for v in box2d)
    dx, dy = (x1 - x0) * fraction, (y1 - y0) * fraction
    return np.array([x0 + dx, y0 + dy, x1 - dx, y1 - dy])


def select_object_points(
    points: np.ndarray,
    box2d,
    camera: CameraView,
    config: FrustumConfig = FrustumConfig(),
    candidate_mask: Optional[np.ndarray] = None,
) -> Optional[MinedObject]:
    """Pick the proposal's object points.

    Args:
        points: (N, 3+) sweep points, LiDAR frame. box2d: (4,) x0, y0, x1, y1 in ``camera``'s pixels.
        camera: intrinsics and LiDAR->camera transform at the image's timestamp.
        candidate_mask: (N,) bool, points allowed at all (typically ``~ground_mask``).
    Returns:
        The chosen object, or None when nothing plausible is in the frustum.
    """
    box2d = np.asarray(box2d, dtype=np.float64)
    if not (np.isfinite(box2d).all() and box2d[2] > box2d[0] and box2d[3] > box2d[1]):
        return None
    inner = shrink_box(box2d, config.shrink)
    mask = frustum_mask(points, inner, camera.K, camera.T_lidar_to_cam, near=config.near, far=config.far)
    if candidate_mask is not None:
        mask &= candidate_mask
    idx = np.flatnonzero(mask)
    if idx.size < config.min_points:
        return None
    xyz = np.asarray(points, dtype=np.float64)[idx, :3]
    labels = dbscan(xyz, config.eps, config.min_samples)
    uv, depth, _ = project_points(xyz, camera.K, camera.T_lidar_to_cam)
    best = None
    best_key = None
    n_clusters = int(labels.max()) + 1 if labels.size else 0
    for c in range(n_clusters):
        m = labels == c
        k = int(m.sum())
        if k < config.min_points:
            continue
        extent = np.ptp(xyz[m, :2], axis=0)
        if float(np.hypot(*extent)) > config.max_extent:
            continue
        cov = iou_2d([*uv[m].min(axis=0), *uv[m].max(axis=0)], box2d)
        d = float(np.median(depth[m]))
        if config.rule == "coverage":
            key = (round(cov, 2), -d)
        elif config.rule == "largest":
            key = (k, -d)
        else:
            key = (-d, k)
        if best_key is None or key > best_key:
            best_key, best = key, (m, cov, d)
    if best is None:
        return None
    m, cov, d = best
    if config.rule == "coverage" and cov < config.min_coverage:
        return None
    return MinedObject(indices=idx[m].astype(np.int64), coverage=float(cov), depth=d, candidates=n_clusters)


def deduplicate(index_sets, scores, min_jaccard: float = 0.3) -> np.ndarray:
    """Indices of proxies to keep when one object was mined twice (e.g. seen by two cameras).

    Greedy by score: a proxy is dropped when its point set overlaps an already kept one with
    Jaccard index >= ``min_jaccard``.

    Args:
        index_sets: list of (K_i,) int arrays of sweep point indices. scores: (P,) floats.
    Returns:
        (P',) int64 positions into the inputs, in descending score order.
    """
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    kept: list = []
    kept_sets: list = []
    for i in order:
        s = np.asarray(index_sets[i])
        dup = False
        for t in kept_sets:
            inter = np.intersect1d(s, t, assume_unique=True).size
            if inter and inter / (s.size + t.size - inter) >= min_jaccard:
                dup = True
                break
        if not dup:
            kept.append(int(i))
            kept_sets.append(s)
    return np.array(kept, dtype=np.int64)
