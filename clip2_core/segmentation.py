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


@dataclass
class SegmentationConfig:
    ground: GroundConfig = field(default_factory=GroundConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> "SegmentationConfig":
        """Build from ``{"ground": {...}, "cluster": {...}}``; unknown keys and wrong types raise ValueError."""
        from clip2_core.configio import build_dataclass

        return build_dataclass(cls, d, "segmentation")

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
    return np.isfinite(points[:, :3]).all(axis=1)


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
        cells = (pts.max(axis=0) - pts.min(axis=0)) / (tolerance / np.sqrt(3.0)) + 1
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
        _kernels.warmup()  # compile / load the kernels now, not on the first sweep

    def masks(self, points: np.ndarray):
        """(ground_mask, candidate_mask), both (N,) bool: ground points, and the points clustering
        considers (finite, not ground, within the height and range limits)."""
        gcfg, ccfg = self.config.ground, self.config.cluster
        g = ground_height(points, gcfg)
        finite = np.isfinite(g)
        with np.errstate(invalid="ignore"):
            height = points[:, 2] - g
            ground_mask = finite & (height < gcfg.height_threshold)
            r = np.hypot(points[:, 0], points[:, 1])
            candidate = finite & ~ground_mask & (height <= ccfg.max_height) & (r >= ccfg.min_range) & (r <= ccfg.max_range)
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
        ground_mask, candidate = self.masks(pts)
        t1 = time.perf_counter()
        idx = np.flatnonzero(candidate)
        clusters: List[Cluster] = []
        if idx.size:
            cand = np.ascontiguousarray(pts[idx, :3], dtype=np.float64)
            lab = euclidean_clusters(cand, ccfg.tolerance)
            order = np.argsort(lab, kind="stable")
            counts = np.bincount(lab)
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            t2 = time.perf_counter()
            keep = np.flatnonzero((counts >= ccfg.min_points) & (counts <= ccfg.max_points))
            if _kernels.HAVE_NUMBA:  # every box in one compiled call
                boxes = _kernels.fit_boxes_kernel(cand, order, starts[keep], counts[keep], 0.05)
            else:
                boxes = [fit_box(cand[order[starts[c] : starts[c] + counts[c]]]) for c in keep]
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
