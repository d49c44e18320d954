"""From a 2D proposal to the object's LiDAR points: frustum, DBSCAN, choice of the cluster.

The rule (``FrustumConfig.rule``):
- ``"front"`` (default): among the clusters that span the box nearly as well as the best one
  (coverage >= ``front_ratio`` x the best), the nearest. The boxed object spans the box; so
  may the background cut by the frustum behind it, but the object is in front of it; clutter
  in front spans too little to compete.
- ``"coverage"``: project each DBSCAN cluster in the frustum into the image and keep
  the one whose horizontal image extent best matches the proposal box's (1D IoU of the u
  ranges), ties to the nearer. The object a detector boxed spans its box's width; background
  seen around or through it (signs behind, a wall, the next car) spans only part of it, and
  small clutter in front spans little. Only the horizontal extent is used because a spinning
  LiDAR samples a distant object with one or two rings: a thin horizontal line that spans the
  object's width but almost none of its height.
- ``"largest"``: the cluster with most points (the classic choice; picks big backgrounds).
- ``"nearest"``: the cluster with the smallest median depth (picks occluders and clutter).
- ``"span"``: among the clusters that span the box nearly as well as the best one (as for
  ``"front"``), the one with most points. The indoor preset's rule: after structure planes are
  removed the object is the big thing that spans its box; an occluder in front (a desk before
  a bathtub) spans only part of it.
The five are measured against ground truth on synthetic data (purity and recall) in
docs/mining.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from clip2_core.geometry import project_points
from clip2_core.mining.planes import structure_planes
from clip2_core.segmentation import dbscan
from clip2_core.types import CameraView

RULES = ("front", "coverage", "largest", "nearest", "span")


@dataclass
class FrustumConfig:
    """Frustum + DBSCAN proxy selection parameters (metres, points)."""

    near: float = 1.0  # camera depth limits of the frustum
    far: float = 80.0
    shrink: float = 0.05  # shrink the 2D box by this fraction per side before extruding (less background)
    eps: float = 0.5  # DBSCAN radius at short range
    eps_per_meter: float = 0.03  # radius grows with depth (beam spacing grows too): max(eps, eps_per_meter * depth)
    min_samples: int = 3  # DBSCAN core threshold (itself included)
    rule: str = "front"  # see module docstring
    front_ratio: float = 0.6  # "front"/"span" rules: clusters spanning >= this fraction of the best coverage compete
    min_points: int = 8  # fewer points: no proxy
    max_extent: float = 20.0  # a cluster longer than this (BEV) is background, not an object
    min_coverage: float = 0.1  # coverage rule: a best IoU below this means no object found
    # structure planes removed before DBSCAN (clip2_core.mining.planes; indoor frames: walls, floor)
    planes: int = 0  # planes tried per proposal (0: off, the LiDAR default)
    plane_tolerance: float = 0.03  # point-to-plane distance of a plane's points [m] ...
    plane_noise: float = 0.003  # ... at least this x depth**2 (2 sigma of a Kinect-class depth camera's noise)
    plane_min_share: float = 0.05  # a plane with fewer of the frustum's points ends the search
    plane_outside_ratio: float = 0.5  # a plane is structure when it holds this many points around the box per point inside

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown cluster rule {self.rule!r}; choose one of {RULES}")
        if not 0 < self.near < self.far:
            raise ValueError(f"need 0 < near < far, got near={self.near}, far={self.far}")
        if self.planes < 0 or self.plane_tolerance <= 0:
            raise ValueError(f"need planes >= 0 and plane_tolerance > 0, got {self.planes}, {self.plane_tolerance}")


@dataclass
class MinedObject:
    """The object points chosen for one proposal."""

    indices: np.ndarray  # (K,) int64 rows of the sweep's points
    coverage: float  # 1D IoU of the cluster's horizontal image extent with the proposal box's
    depth: float  # median camera depth of the cluster [m]
    candidates: int  # DBSCAN clusters found in the frustum


def _interval_iou(a0: float, a1: float, b0: float, b1: float) -> float:
    inter = max(0.0, min(a1, b1) - max(a0, b0))
    union = max(a1, b1) - min(a0, b0)
    return inter / union if union > 0 else 0.0


def shrink_box(box2d, fraction: float) -> np.ndarray:
    x0, y0, x1, y1 = (float(v) for v in box2d)
    dx, dy = (x1 - x0) * fraction, (y1 - y0) * fraction
    return np.array([x0 + dx, y0 + dy, x1 - dx, y1 - dy])


@dataclass
class ProjectedSweep:
    """A sweep's candidate points projected once into one camera (reused by all its proposals)."""

    index: np.ndarray  # (M,) int64 rows of the sweep: candidate points in front of the camera, within near/far
    xyz: np.ndarray  # (M, 3) float64 their LiDAR-frame coordinates
    uv: np.ndarray  # (M, 2) float64 pixel coordinates
    depth: np.ndarray  # (M,) float64 camera depth


def project_sweep(points: np.ndarray, camera: CameraView, config: FrustumConfig = FrustumConfig(),
                  candidate_mask: Optional[np.ndarray] = None) -> ProjectedSweep:
    uv, depth, valid = project_points(points, camera.K, camera.T_lidar_to_cam, min_depth=config.near * 0.5)
    keep = valid & (depth >= config.near) & (depth <= config.far)
    if candidate_mask is not None:
        keep &= candidate_mask
    idx = np.flatnonzero(keep)
    return ProjectedSweep(idx, np.asarray(points, dtype=np.float64)[idx, :3], uv[idx], depth[idx])


def select_object_points(
    points: np.ndarray,
    box2d,
    camera: CameraView,
    config: FrustumConfig = FrustumConfig(),
    candidate_mask: Optional[np.ndarray] = None,
    projected: Optional[ProjectedSweep] = None,
) -> Optional[MinedObject]:
    """Pick the proposal's object points.

    Args:
        points: (N, 3+) sweep points, LiDAR frame. box2d: (4,) x0, y0, x1, y1 in ``camera``'s pixels.
        camera: intrinsics and LiDAR->camera transform at the image's timestamp.
        candidate_mask: (N,) bool, points allowed at all (typically ``~ground_mask``).
        projected: :func:`project_sweep` of the same points, camera, config and mask (faster for
            many proposals in one image).
    Returns:
        The chosen object, or None when nothing plausible is in the frustum.
    """
    box2d = np.asarray(box2d, dtype=np.float64)
    if not (np.isfinite(box2d).all() and box2d[2] > box2d[0] and box2d[3] > box2d[1]):
        return None
    if projected is None:
        projected = project_sweep(points, camera, config, candidate_mask)
    x0, y0, x1, y1 = shrink_box(box2d, config.shrink)
    u, v = projected.uv[:, 0], projected.uv[:, 1]
    sel = np.flatnonzero((u >= x0) & (u <= x1) & (v >= y0) & (v <= y1))
    if sel.size < config.min_points:
        return None
    idx = projected.index[sel]
    xyz = projected.xyz[sel]
    uv, depth = projected.uv[sel], projected.depth[sel]
    if config.planes > 0:
        keep = ~structure_planes(xyz, projected.xyz, projected.uv, box2d, max_planes=config.planes,
                                 tolerance=config.plane_tolerance, min_share=config.plane_min_share,
                                 outside_ratio=config.plane_outside_ratio, depth=depth,
                                 frame_depth=projected.depth, noise=config.plane_noise)
        if int(keep.sum()) < config.min_points:
            return None
        idx, xyz, uv, depth = idx[keep], xyz[keep], uv[keep], depth[keep]
    eps = max(config.eps, config.eps_per_meter * float(np.median(depth)))
    labels = dbscan(xyz, eps, config.min_samples)
    cands = []  # (mask, coverage, depth, points)
    n_clusters = int(labels.max()) + 1 if labels.size else 0
    for c in range(n_clusters):
        m = labels == c
        k = int(m.sum())
        if k < config.min_points:
            continue
        extent = np.ptp(xyz[m, :2], axis=0)
        if float(np.hypot(*extent)) > config.max_extent:
            continue
        cov = _interval_iou(uv[m, 0].min(), uv[m, 0].max(), box2d[0], box2d[2])
        cands.append((m, cov, float(np.median(depth[m])), k))
    if not cands:
        return None
    if config.rule in ("front", "span"):
        top = max(c[1] for c in cands)
        if top < config.min_coverage:
            return None
        spanning = [c for c in cands if c[1] >= config.front_ratio * top]
        if config.rule == "front":
            m, cov, d, _ = min(spanning, key=lambda c: c[2])
        else:
            m, cov, d, _ = max(spanning, key=lambda c: (c[3], -c[2]))
    else:
        if config.rule == "coverage":
            key = lambda c: (round(c[1], 2), -c[2])  # noqa: E731
        elif config.rule == "largest":
            key = lambda c: (c[3], -c[2])  # noqa: E731
        else:  # nearest
            key = lambda c: (-c[2], c[3])  # noqa: E731
        m, cov, d, _ = max(cands, key=key)
        if config.rule == "coverage" and cov < config.min_coverage:
            return None
    return MinedObject(indices=idx[m].astype(np.int64), coverage=float(cov), depth=d, candidates=n_clusters)


@dataclass
class CompletionConfig:
    """Grow each frustum selection to the whole LiDAR cluster it belongs to (see :func:`complete_objects`)."""

    enabled: bool = True
    tolerance: float = 0.6  # single-linkage link length of the sweep's clusters [m] (the segmenter's default)
    min_seed_share: float = 0.5  # the cluster must hold at least this share of the selection's points
    max_extent: float = 20.0  # a completed cluster longer than this (BEV) is background: keep the selection
    max_height: float = 6.0  # ... or taller than this


def complete_objects(points: np.ndarray, candidate_mask: np.ndarray, seeds, cameras, labels,
                     config: CompletionConfig = CompletionConfig()):
    """Complete frustum selections with the rest of their object's points.

    A camera frustum cuts an object at the image border, and DBSCAN drops the sparse returns of a
    surface seen at a grazing angle (the side of a truck ahead), so frustum selections are often
    an object's front face only, while the online pipeline feeds the encoder whole LiDAR clusters.
    Here each selection ("seed") is replaced by the union of itself and the single-linkage cluster
    (over the sweep's non-ground points) that holds most of it, unless that is ambiguous:

    * the cluster holds fewer than ``min_seed_share`` of the seed's points, or is implausibly
      large (``max_extent``, ``max_height``): the seed is kept as is;
    * the cluster holds (a real part of) several *objects*: seeds of one object are those
      sharing points (one frustum saw the other's object), or
      seen by different cameras with the same label (one object across an image border); two
      disjoint seeds from one camera, or with different labels, are two objects (e.g. parked cars
      touching) and both keep their seeds.

    Args:
        points: (N, 3+) sweep. candidate_mask: (N,) bool non-ground finite points.
        seeds: list of (K_i,) int64 point indices. cameras, labels: per seed, for the object rule.
    Returns:
        (list of (K_i',) int64 index arrays, (S,) bool completed-or-not).
    """
    from clip2_core.segmentation import euclidean_clusters

    n_seeds = len(seeds)
    out = [np.asarray(s, dtype=np.int64) for s in seeds]
    done = np.zeros(n_seeds, dtype=bool)
    if not config.enabled or n_seeds == 0:
        return out, done
    idx = np.flatnonzero(candidate_mask)
    if idx.size == 0:
        return out, done
    lab = np.full(points.shape[0], -1, dtype=np.int64)
    lab[idx] = euclidean_clusters(points[idx, :3], config.tolerance)
    owner = np.full(n_seeds, -1, dtype=np.int64)
    touches = []  # per seed: the clusters holding a real part of it (>= 20 % or >= 5 points)
    for i, s in enumerate(out):
        ls = lab[s]
        ls = ls[ls >= 0]
        if ls.size == 0:
            touches.append(set())
            continue
        uniq, counts = np.unique(ls, return_counts=True)
        touches.append({int(u) for u, k in zip(uniq, counts) if k >= min(5, 0.2 * s.size)})
        j = int(counts.argmax())
        if counts[j] >= config.min_seed_share * s.size:
            owner[i] = int(uniq[j])
    for c in np.unique(owner[owner >= 0]):
        # every selection with a real part in this cluster, owner or not: completing must not
        # swallow another detected object, even one whose selection lies mostly elsewhere
        members = np.array([i for i in range(n_seeds) if int(c) in touches[i] or owner[i] == c], dtype=np.int64)
        parent = list(range(members.size))

        def find(a):
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        for a in range(members.size):
            for b in range(a + 1, members.size):
                i, j = members[a], members[b]
                same = np.intersect1d(out[i], out[j]).size > 0 or (cameras[i] != cameras[j] and labels[i] == labels[j])
                if same:
                    parent[find(a)] = find(b)
        if len({find(a) for a in range(members.size)}) > 1:
            continue  # several objects in one cluster: completing would merge them
        cluster = np.flatnonzero(lab == c)
        xyz = points[cluster, :3]
        if float(np.hypot(*np.ptp(xyz[:, :2], axis=0))) > config.max_extent or float(np.ptp(xyz[:, 2])) > config.max_height:
            continue
        for i in members[owner[members] == c]:
            out[i] = np.union1d(out[i], cluster)
            done[i] = True
    return out, done


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
