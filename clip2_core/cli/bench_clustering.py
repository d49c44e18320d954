"""Clustering benchmark: our ground removal + Euclidean clustering vs sklearn and open3d DBSCAN.

Peers get the same input our clusterer gets (the non-ground, range/height-filtered points) and the
equivalent parameters: DBSCAN ``eps = tolerance`` and ``min_samples = 1`` is exactly single-linkage
Euclidean clustering, so the partitions should agree (adjusted Rand index 1.0). Our time
(``ours_ms``) includes ground removal; the peers' times do not, which favours the peers.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from clip2_core import _kernels
from clip2_core.segmentation import Segmenter, SegmentationConfig, euclidean_clusters, ground_height

log = logging.getLogger(__name__)


def _median_ms(fn: Callable[[], object], repeats: int) -> Tuple[float, object]:
    out = fn()  # warm-up (also the result we compare)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times)), out


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index of two labelings (N,) — pure numpy, same definition as sklearn's."""
    a = np.unique(np.asarray(a), return_inverse=True)[1].reshape(-1)
    b = np.unique(np.asarray(b), return_inverse=True)[1].reshape(-1)
    n = a.shape[0]
    if n < 2:
        return 1.0
    table = np.zeros((a.max() + 1, b.max() + 1), dtype=np.int64)
    np.add.at(table, (a, b), 1)

    def comb2(x):
        x = np.asarray(x, dtype=np.float64)
        return (x * (x - 1) / 2).sum()

    index = comb2(table)
    sa, sb = comb2(table.sum(1)), comb2(table.sum(0))
    expected = sa * sb / comb2(n)
    maximum = 0.5 * (sa + sb)
    if maximum == expected:
        return 1.0
    return float((index - expected) / (maximum - expected))


def bench_sweep(name: str, points: np.ndarray, cfg: SegmentationConfig, repeats: int = 7) -> List[Dict]:
    """Time ours vs each installed peer on one sweep; one result dict per peer."""
    seg = Segmenter(cfg)
    tol = cfg.cluster.tolerance
    ground_ms, _ = _median_ms(lambda: ground_height(points, cfg.ground), repeats)
    cand = points[seg.masks(points)[1], :3].astype(np.float64)
    cluster_ms, ours = _median_ms(lambda: euclidean_clusters(cand, tol), repeats)
    full_ms, _ = _median_ms(lambda: seg.segment(points), repeats)
    peers: Dict[str, Callable[[], np.ndarray]] = {}
    try:
        from sklearn.cluster import DBSCAN

        peers["sklearn.DBSCAN"] = lambda: DBSCAN(eps=tol, min_samples=1).fit_predict(cand)
    except ImportError:
        log.warning("scikit-learn not installed: no sklearn peer")
    try:
        import open3d as o3d

        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(cand))
        peers["open3d.cluster_dbscan"] = lambda: np.asarray(pcd.cluster_dbscan(eps=tol, min_points=1))
    except (ImportError, OSError) as exc:
        log.warning("open3d not usable (%s): no open3d peer", exc)
    rows = []
    for peer, fn in peers.items():
        peer_ms, labels = _median_ms(fn, repeats)
        ours_ms = ground_ms + cluster_ms
        rows.append(
            {
                "sweep": name,
                "points": int(points.shape[0]),
                "cluster_input_points": int(cand.shape[0]),
                "tolerance_m": tol,
                "ours_impl": "numba" if _kernels.HAVE_NUMBA else "scipy",
                "ours_ground_ms": round(ground_ms, 3),
                "ours_cluster_ms": round(cluster_ms, 3),
                "ours_ms": round(ours_ms, 3),
                "ours_full_segment_ms": round(full_ms, 3),
                "peer": peer,
                "peer_ms": round(peer_ms, 3),
                "ratio": round(ours_ms / peer_ms, 4),
                "ari": round(adjusted_rand_index(ours, labels), 6),
                "clusters_ours": int(ours.max() + 1) if ours.size else 0,
                "clusters_peer": int(np.unique(labels).shape[0]),
                "repeats": repeats,
            }
        )
    return rows


def run_clustering_bench(kitti_dir: Optional[Path], repeats: int = 7, seed: int = 0) -> List[Dict]:
    from clip2_core.datasets.synth.sweep import make_sweep

    cfg = SegmentationConfig()
    rows = bench_sweep(f"synthetic-32beam-seed{seed}", make_sweep(seed).points, cfg, repeats)
    if kitti_dir is not None and (Path(kitti_dir) / "points.npy").is_file():
        rows += bench_sweep("kitti_000008", np.load(Path(kitti_dir) / "points.npy", allow_pickle=False), cfg, repeats)
    return rows
