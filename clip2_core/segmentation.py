"""Ground removal and Euclidean clustering of LiDAR sweeps.

Ground removal: grid morphological filter
------------------------------------------
Points are binned into a BEV grid (``cell_size``). Each cell keeps its lowest z. A grey
*opening* (minimum filter, then maximum filter, over a ``window`` metres square) removes
anything narrower than the window that stands above its surroundings — cars, people, poles —
while keeping surfaces wider than the window: road, slopes, the sidewalk behind a kerb. A point
is ground when it is less than ``height_threshold`` above its cell's opened ground height
(points below the ground, e.g. multipath returns, count as ground too).

Why this one: it is fully vectorised (two separable scipy filters over a few hundred thousand
cells), has no plane model to break on gentle slopes or crowned roads, and treats a kerb as a
step between two flat surfaces rather than as an obstacle. Its limit is objects wider than the
window in every direction whose underside is never seen (a large truck trailer seen only from
the roof): keep the window larger than the objects you care about (default 6 m).

Clustering: exact Euclidean clustering
--------------------------------------
Two points belong to one cluster when a chain of points links them with every link shorter than
``tolerance`` (single linkage; the same partition as DBSCAN with ``min_samples=1``). Points are
first binned into cubes of side ``tolerance / sqrt(3)``: any two points in one cube are within
``tolerance``, so a cube's points are joined without distance checks. The exact radius pairs
from a KD-tree are then reduced to the (far fewer) linked cube pairs, and connected components
of that cube graph (``scipy.sparse.csgraph``) give the clusters.

Links are measured with vertical distances scaled by ``z_scale`` (0.5): a spinning LiDAR's rings
are far apart vertically at range (a 32-beam sensor's ~1.3 degree spacing is 0.9 m at 40 m) while
points along a ring stay close, so a plain 3D tolerance cuts far vehicles into one piece per ring;
halving vertical distances joins the rings without joining objects that stand side by side.

Boxes: each cluster's box takes its heading from an L-shape fit to the cluster's visible outline
(:func:`clip2_core.shape.fit_l_shape`, closeness criterion), class-agnostic; ``box_fit: min_area``
gives the minimum-area rectangle instead, whose heading ties between the true one and the diagonal
for an L-shaped view (measured: partly seen trailers 1.1-1.3 m off centre with it).

Both steps run as compiled numba kernels (``clip2_core._kernels``) when numba is installed (the
pinned requirements install it): same results, 6-20x faster. The scipy code here is the fallback.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from clip2_core import _kernels
from clip2_core.geometry import fit_box
from clip2_core.types import Box3D, Cluster


@dataclass
class GroundConfig:
    """Ground removal parameters (metres)."""

    cell_size: float = 0.5  # BEV grid cell side
    window: float = 6.0  # side of the opening window; larger than the widest object to keep
    height_threshold: float = 0.25  # points lower than this above the ground estimate are ground
    max_range: float = 150.0  # points further (|x| or |y|) are not gridded: no ground estimate, never clustered


# Ground removal for indoor RGB-D frames (depth points in the upright camera frame, z up): a
# floor is flat and furniture stands on it, so a finer grid, a narrower window and a tight
# threshold. On the real SUN RGB-D frame 000017 it removes 15.5k of 50k points as floor and keeps
# 84% of the annotated bed's points and 86% of the night stand's (their lowest ~5 cm go with the floor).
INDOOR_GROUND = GroundConfig(cell_size=0.1, window=3.0, height_threshold=0.05, max_range=20.0)


@dataclass
class ClusterConfig:
    """Euclidean clustering parameters (metres, points)."""

    tolerance: float = 0.6  # max link length between neighbouring points of one object
    min_points: int = 5  # smaller clusters are dropped
    max_points: int = 30000  # larger clusters (buildings, walls) are dropped
    min_range: float = 1.5  # points closer to the sensor (in BEV) are ignored: ego vehicle returns
    max_range: float = 80.0  # points further than this (BEV) are ignored
    max_height: float = 4.5  # points higher than this above the ground estimate are ignored
    max_box_extent: float = 25.0  # clusters whose fitted box is longer than this are dropped
    # vertical distances count this much when linking points: a 32-beam sensor's rings are ~0.9 m
    # apart at 40 m, so with 1.0 a far car or truck falls apart ring by ring into clutter-sized pieces
    # (measured on the held-out synthetic scenes: background clusters 864 -> 454, split objects 21 -> 1)
    z_scale: float = 0.5
    # cluster boxes: "l_shape" (heading from the visible outline, clip2_core.shape.fit_l_shape: partly
    # seen vehicles get their true heading) or "min_area" (minimum-area rectangle, which ties between
    # the true heading and the diagonal for an L-shaped view and so misplaces the centre)
    box_fit: str = "l_shape"
    # neighbours joined at ``tolerance`` (a pedestrian beside a car, a row of barriers 0.3-0.6 m apart)
    # are split again at this finer tolerance where the sweep is dense enough for it: clusters whose
    # mean range is within ``split_range`` and that fall apart into two or more parts of at least
    # ``min_points`` each, and where the sensor saw through the gap (``split_min_gap_deg``); smaller
    # pieces rejoin their nearest part. 0 (default) disables. Measured on the held-out synthetic scenes
    # with the hard cases (BENCHMARKS.md, issue 13): recall ceiling 591 -> 607 of 869 (barriers in rows
    # 62 -> 73 of 75), but in the replay mAP 0.228 -> 0.224 and the cluster stage 3.9 -> 6.8 ms median
    # (fewer sweeps processed at quarter speed, 301 -> 268): opt-in until it is faster.
    split_tolerance: float = 0.0
    split_range: float = 20.0  # [m] beyond it a 32-beam sweep is too sparse to split at 0.3 m
    # a split is kept only where the parts are this far apart in azimuth, seen from the sensor: the
    # sensor saw through the gap (two barriers side by side), not pieces of one surface seen at a
    # grazing angle (a car's flank along the line of sight), whose azimuths touch
    split_min_gap_deg: float = 0.75
    # low parts of objects (a barrier's foot, a cone's base) fall under the ground threshold: points
    # classified as ground but at least this high above the ground estimate rejoin the cluster of their
    # nearest cluster point within ``tolerance`` (they never link two clusters). 0 (default) disables:
    # measured on the demo replay (rate 0.25) with 0.08, recall@1m 65.2% -> 65.8% and false alarms
    # 43.5% -> 41.6%, but label accuracy 77.4% -> 71.3% and mAP 0.154 -> 0.131 with an encoder trained on
    # crops without the reclaimed points (the crops gain a skirt of near-ground returns)
    reclaim_height: float = 0.0


BOX_FITS = ("l_shape", "min_area")
# L-shape search (clip2_core.shape.fit_l_shape defaults): coarse / fine heading steps [deg], closeness
# floor [m], visible-contour azimuth bin [deg]
L_SHAPE = (1.0, 0.1, 0.01, 0.25)


@dataclass
class SegmentationConfig:
    ground: GroundConfig = field(default_factory=GroundConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> "SegmentationConfig":
        """Build from ``{"ground": {...}, "cluster": {...}}``; unknown keys and wrong types raise ValueError."""
        from clip2_core.configio import build_dataclass

        cfg = build_dataclass(cls, d, "segmentation")
        cfg.validate()
        return cfg

    def validate(self) -> None:
        c = self.cluster
        if c.box_fit not in BOX_FITS:
            raise ValueError(f"segmentation.cluster.box_fit must be one of {'|'.join(BOX_FITS)}, got {c.box_fit!r}")
        if not (c.tolerance > 0 and c.z_scale > 0):
            raise ValueError(f"segmentation.cluster.tolerance and z_scale must be > 0, got {c.tolerance}, {c.z_scale}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SegmentationResult:
    """Per-point masks and the clusters of one sweep."""

    ground_mask: np.ndarray  # (N,) bool: point classified as ground
    labels: np.ndarray  # (N,) int64 cluster id per point, -1 for ground / filtered / dropped clusters
    clusters: List[Cluster]  # kept clusters, ids = index in this list
    timings_ms: Dict[str, float]  # "ground", "cluster", "boxes"


def _finite_rows(points: np.ndarray) -> np.ndarray:
    # three column tests, not isfinite(...).all(axis=1): numpy's reduction over a 3-wide axis is ~10x slower
    return np.isfinite(points[:, 0]) & np.isfinite(points[:, 1]) & np.isfinite(points[:, 2])


def ground_height(points: np.ndarray, config: GroundConfig = GroundConfig()) -> np.ndarray:
    """Estimated ground height under each point.

    Args:
        points: (N, 3+) LiDAR-frame points (z up). Non-finite rows get NaN.
    Returns:
        (N,) float64 ground z below each point.
    """
    pts = np.asarray(points)
    n = pts.shape[0]
    out = np.full(n, np.nan)
    ok = _finite_rows(pts) if n else np.zeros(0, dtype=bool)
    with np.errstate(invalid="ignore"):
        ok &= (np.abs(pts[:, 0]) <= config.max_range) & (np.abs(pts[:, 1]) <= config.max_range)
    if not ok.any():
        return out
    cs = float(config.cell_size)
    win = max(1, int(round(config.window / cs)) | 1)  # odd number of cells
    if _kernels.HAVE_NUMBA:
        return _kernels.ground_kernel(np.ascontiguousarray(pts[:, :3]), ok, cs, win)
    xyz = pts[ok, :3].astype(np.float64)
    ij = np.floor(xyz[:, :2] / cs).astype(np.int64)
    lo = ij.min(axis=0)
    ij -= lo
    shape = tuple(ij.max(axis=0) + 1)
    flat = ij[:, 0] * shape[1] + ij[:, 1]
    cell_min = np.full(shape[0] * shape[1], np.inf)
    np.minimum.at(cell_min, flat, xyz[:, 2])
    cell_min = cell_min.reshape(shape)
    eroded = ndimage.minimum_filter(cell_min, size=win, mode="constant", cval=np.inf)
    eroded[~np.isfinite(eroded)] = -np.inf  # empty neighbourhoods must not win the dilation
    opened = ndimage.maximum_filter(eroded, size=win, mode="constant", cval=-np.inf)
    g = opened.reshape(-1)[flat]
    # A cell can never have ground above its own lowest point.
    g = np.minimum(g, cell_min.reshape(-1)[flat])
    out[ok] = g
    return out


def remove_ground(points: np.ndarray, config: GroundConfig = GroundConfig()) -> np.ndarray:
    """(N,) bool ground mask (True = ground). Non-finite points are neither ground nor kept."""
    g = ground_height(points, config)
    with np.errstate(invalid="ignore"):
        return np.asarray(points)[:, 2] - g < config.height_threshold


def euclidean_clusters(points: np.ndarray, tolerance: float) -> np.ndarray:
    """Exact single-linkage clustering at ``tolerance``.

    Args:
        points: (N, 3) finite points. tolerance: link length [m] (> 0).
    Returns:
        (N,) int64 cluster label per point, 0..C-1, numbered by first appearance.
    """
    pts = np.ascontiguousarray(np.asarray(points, dtype=np.float64)[:, :3])
    n = pts.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if not tolerance > 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    if not np.isfinite(pts).all():
        raise ValueError("euclidean_clusters: points must be finite (drop NaN/inf rows first)")
    if _kernels.HAVE_NUMBA:
        # per column: a reduction over axis 0 of an (N, 3) array runs 3-wide inner loops (1.2 ms for 12k points)
        extent = np.array([pts[:, j].max() - pts[:, j].min() for j in range(3)])
        cells = extent / (tolerance / np.sqrt(3.0)) + 1
        if cells[0] * cells[1] <= _kernels.MAX_BEV_CELLS and cells.prod() < 2.0**60:
            labels = _kernels.cluster_kernel(pts, float(tolerance))
            if labels.shape[0] == n:
                return labels
    return _euclidean_clusters_scipy(pts, tolerance)


def _euclidean_clusters_scipy(pts: np.ndarray, tolerance: float) -> np.ndarray:
    """Vectorised fallback of :func:`euclidean_clusters` (no numba, or a huge extent)."""
    n = pts.shape[0]
    # 1) cubes of side tol/sqrt(3): points sharing a cube are linked for free.
    side = tolerance / np.sqrt(3.0) * (1 - 1e-9)
    cube = np.floor(pts / side).astype(np.int64)
    cube -= cube.min(axis=0)
    dims = cube.max(axis=0) + 1
    key = (cube[:, 0] * dims[1] + cube[:, 1]) * dims[2] + cube[:, 2]
    _, cube_id = np.unique(key, return_inverse=True)
    cube_id = cube_id.reshape(-1)
    n_cubes = int(cube_id.max()) + 1
    # 2) links between different cubes from the exact radius pairs, reduced to unique cube pairs
    #    before the graph is built (the pair list is large in dense returns; the cube graph is not).
    # sliding-midpoint tree without compaction: builds and queries faster on LiDAR point layouts (measured)
    pairs = cKDTree(pts, leafsize=32, balanced_tree=False, compact_nodes=False).query_pairs(tolerance, output_type="ndarray")
    a = cube_id[pairs[:, 0]]
    b = cube_id[pairs[:, 1]]
    if n_cubes <= 8192:  # dense bitmap dedupe: n^2 bytes, at most 64 MiB; self-links are harmless
        a *= n_cubes
        a += b
        seen = np.zeros(n_cubes * n_cubes, dtype=bool)
        seen[a] = True
        edge = np.flatnonzero(seen)
    else:
        edge = np.unique(a * n_cubes + b)
    graph = coo_matrix(
        (np.ones(edge.shape[0], dtype=np.int8), (edge // n_cubes, edge % n_cubes)), shape=(n_cubes, n_cubes)
    )
    _, cube_label = connected_components(graph, directed=False)
    raw = cube_label[cube_id]
    # Renumber by first appearance so labels are stable and compact.
    uniq, first = np.unique(raw, return_index=True)
    order = np.argsort(first)
    remap = np.empty_like(order)
    remap[order] = np.arange(order.shape[0])
    return remap[np.searchsorted(uniq, raw)].astype(np.int64)


class Segmenter:
    """Ground removal + clustering + box fitting for one sweep: ``Segmenter(cfg).segment(points)``."""

    def __init__(self, config: Optional[SegmentationConfig] = None):
        self.config = config or SegmentationConfig()
        self.config.validate()
        _kernels.warmup()  # compile / load the kernels now, not on the first sweep

    def masks(self, points: np.ndarray, with_height: bool = False):
        """(ground_mask, candidate_mask), both (N,) bool: ground points, and the points clustering
        considers (finite, not ground, within the height and range limits); with ``with_height`` also
        (N,) heights above the ground estimate and (N,) BEV ranges (NaN where non-finite)."""
        gcfg, ccfg = self.config.ground, self.config.cluster
        g = ground_height(points, gcfg)
        finite = np.isfinite(g)
        with np.errstate(invalid="ignore"):
            height = points[:, 2] - g
            ground_mask = finite & (height < gcfg.height_threshold)
            r = np.hypot(points[:, 0], points[:, 1])
            in_range = (r >= ccfg.min_range) & (r <= ccfg.max_range)
            candidate = finite & ~ground_mask & (height <= ccfg.max_height) & in_range
        if with_height:
            return ground_mask, candidate, height, r
        return ground_mask, candidate

    def segment(self, points: np.ndarray) -> SegmentationResult:
        """Segment (N, 3+) LiDAR-frame points. Never raises on empty / NaN input."""
        pts = np.asarray(points)
        if pts.ndim != 2 or pts.shape[1] < 3:
            raise ValueError(f"points must be (N, >=3), got shape {pts.shape}")
        n = pts.shape[0]
        ccfg = self.config.cluster
        labels = np.full(n, -1, dtype=np.int64)
        t0 = time.perf_counter()
        ground_mask, candidate, height, rng = self.masks(pts, with_height=True)
        t1 = time.perf_counter()
        idx = np.flatnonzero(candidate)
        clusters: List[Cluster] = []
        if idx.size:
            scale = np.array([1.0, 1.0, ccfg.z_scale])
            cand = np.ascontiguousarray(pts[idx, :3], dtype=np.float64)
            scaled = cand * scale
            lab = euclidean_clusters(scaled, ccfg.tolerance)
            if ccfg.split_tolerance > 0:
                lab = self._split(scaled, lab, rng[idx])
            if ccfg.reclaim_height > 0:
                with np.errstate(invalid="ignore"):
                    low = np.flatnonzero(ground_mask & (height >= ccfg.reclaim_height) & (rng >= ccfg.min_range)
                                         & (rng <= ccfg.max_range))
                if low.size:
                    low_xyz = pts[low, :3].astype(np.float64)
                    dist, nn = cKDTree(scaled).query(low_xyz * scale, k=1, distance_upper_bound=ccfg.tolerance)
                    ok = np.isfinite(dist)
                    if ok.any():
                        back = low[ok]
                        ground_mask = ground_mask.copy()
                        ground_mask[back] = False
                        idx = np.concatenate([idx, back])
                        lab = np.concatenate([lab, lab[nn[ok]]])
                        cand = np.concatenate([cand, low_xyz[ok]])
            order = np.argsort(lab, kind="stable")
            counts = np.bincount(lab)
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            t2 = time.perf_counter()
            keep = np.flatnonzero((counts >= ccfg.min_points) & (counts <= ccfg.max_points))
            boxes = self._boxes(cand, order, starts[keep], counts[keep])
            for c, box in zip(keep, boxes):
                members = idx[order[starts[c] : starts[c] + counts[c]]]
                if max(box[3], box[4]) > ccfg.max_box_extent:
                    continue
                cid = len(clusters)
                labels[members] = cid
                clusters.append(Cluster(indices=members.astype(np.int64), box=Box3D.from_array(box), cluster_id=cid))
        else:
            t2 = time.perf_counter()
        t3 = time.perf_counter()
        timings = {
            "ground": (t1 - t0) * 1e3,
            "cluster": (t2 - t1) * 1e3,
            "boxes": (t3 - t2) * 1e3,
        }
        return SegmentationResult(ground_mask=ground_mask, labels=labels, clusters=clusters, timings_ms=timings)


    def _split(self, scaled: np.ndarray, lab: np.ndarray, rng: np.ndarray) -> np.ndarray:
        """Clusters split at ``split_tolerance`` where the sensor saw through the gap (see
        ClusterConfig); returns compact labels."""
        ccfg = self.config.cluster
        counts = np.bincount(lab)
        mean_r = np.bincount(lab, weights=rng) / np.maximum(counts, 1)
        elig = (counts >= 2 * ccfg.min_points) & (mean_r <= ccfg.split_range)
        sel = np.flatnonzero(elig[lab])
        if sel.size == 0:
            return lab
        sub = euclidean_clusters(scaled[sel], ccfg.split_tolerance)
        parent = lab[sel]
        big = np.bincount(sub)[sub] >= ccfg.min_points
        span = int(sub.max()) + 1
        part_keys = np.unique(parent[big] * span + sub[big]) // span
        candidates = np.flatnonzero(np.bincount(part_keys, minlength=counts.size) >= 2)
        if candidates.size == 0:
            return lab
        out = lab.copy()
        next_id = counts.size
        az = np.arctan2(scaled[sel, 1], scaled[sel, 0])
        min_gap = np.deg2rad(ccfg.split_min_gap_deg)
        for p in candidates:
            members = np.flatnonzero(parent == p)
            group, n_groups = _azimuth_groups(az[members], sub[members], big[members], min_gap)
            if n_groups < 2:
                continue  # no gap the sensor saw through: one object (e.g. a flank seen at a grazing angle)
            core = np.flatnonzero(group >= 0)
            frag = np.flatnonzero(group < 0)
            if frag.size:  # small pieces rejoin the nearest big part
                _, nn = cKDTree(scaled[sel[members[core]]]).query(scaled[sel[members[frag]]], k=1)
                group[frag] = group[core[nn]]
            out[sel[members]] = next_id + group
            next_id += n_groups
        return np.unique(out, return_inverse=True)[1].reshape(-1).astype(np.int64)

    def _boxes(self, cand: np.ndarray, order: np.ndarray, starts: np.ndarray, counts: np.ndarray):
        """Boxes of the clusters ``cand[order[starts[c]:starts[c] + counts[c]]]`` (sensor at the origin)."""
        if self.config.cluster.box_fit == "l_shape":
            if _kernels.HAVE_NUMBA:  # every box in one compiled call
                return _kernels.l_shape_boxes_kernel(cand, order, starts, counts, 0.0, 0.0, *L_SHAPE, 0.05)
            from clip2_core.shape import fit_l_shape

            step, fine, d0, bin_deg = L_SHAPE
            return [fit_l_shape(cand[order[s : s + n]], step_deg=step, fine_step_deg=fine, d0=d0,
                                contour_bin_deg=bin_deg) for s, n in zip(starts, counts)]
        if _kernels.HAVE_NUMBA:
            return _kernels.fit_boxes_kernel(cand, order, starts, counts, 0.05)
        return [fit_box(cand[order[s : s + n]]) for s, n in zip(starts, counts)]


def _azimuth_groups(az: np.ndarray, sub: np.ndarray, big: np.ndarray, min_gap: float):
    """Group the big parts (``sub`` ids where ``big``) of one cluster by azimuth: parts whose azimuth
    intervals, seen from the sensor, are less than ``min_gap`` [rad] apart form one group. Returns
    (group per point, -1 for points of small parts; number of groups)."""
    ref = np.arctan2(np.sin(az).mean(), np.cos(az).mean())
    rel = (az - ref + np.pi) % (2 * np.pi) - np.pi  # no wrap inside one cluster
    ids = np.unique(sub[big])
    lo = np.array([rel[big & (sub == i)].min() for i in ids])
    hi = np.array([rel[big & (sub == i)].max() for i in ids])
    order = np.argsort(lo, kind="stable")
    gid = np.empty(ids.size, dtype=np.int64)
    g, reach = 0, -np.inf
    for k, j in enumerate(order):
        if k and lo[j] - reach >= min_gap:
            g += 1
        gid[j] = g
        reach = max(reach, hi[j])
    group = np.full(az.shape[0], -1, dtype=np.int64)
    pos = np.searchsorted(ids, sub[big])
    group[big] = gid[pos]
    return group, g + 1


def dbscan(points: np.ndarray, eps: float, min_samples: int) -> np.ndarray:
    """DBSCAN (Ester et al. 1996) on (N, 3) points; returns (N,) int64 labels, -1 for noise.

    Core points (at least ``min_samples`` points, itself included, within ``eps``) are clustered by
    exact single linkage at ``eps`` (:func:`euclidean_clusters`); each border point joins the
    cluster of its nearest core point within ``eps``. With ``min_samples=1`` this is exactly
    :func:`euclidean_clusters`.
    """
    pts = np.ascontiguousarray(np.asarray(points, dtype=np.float64)[:, :3])
    n = pts.shape[0]
    labels = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return labels
    if min_samples <= 1:
        return euclidean_clusters(pts, eps)
    tree = cKDTree(pts, leafsize=32)
    counts = tree.query_ball_point(pts, eps, return_length=True)
    core = np.flatnonzero(counts >= min_samples)
    if core.size == 0:
        return labels
    labels[core] = euclidean_clusters(pts[core], eps)
    border = np.flatnonzero(counts < min_samples)
    if border.size:
        dist, nearest = cKDTree(pts[core]).query(pts[border], k=1, distance_upper_bound=eps * (1 + 1e-9))
        ok = np.isfinite(dist)
        labels[border[ok]] = labels[core[nearest[ok]]]
    return labels
