"""Scene planes inside a proposal's frustum: the unsupervised background removal of indoor mining.

Indoors the object a 2D box frames usually touches structure: a night stand against a wall, a
bed on the floor, a bookshelf in a corner. DBSCAN then joins the object and the wall into one
cluster. Structure and furniture faces are both planes, but they differ in one way that needs
no labels: **structure continues beyond the box**. A wall behind a night stand fills the image
around the box too; the night stand's front ends at its own edges.

:func:`structure_planes` fits planes to the frustum's points with RANSAC (largest first) and
removes a plane's points when the same plane holds at least ``outside_ratio`` times as many of
the frame's points around the box (beyond it by ``pad``, within ``reach``) as inside it, spread
over a patch of the plane rather than along a line. A plane that does not continue is kept (it
is the object's own face) and the search goes on among the remaining points.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np


def ransac_plane(xyz: np.ndarray, tolerance: Union[float, np.ndarray], iterations: int = 128,
                 rng: Optional[np.random.Generator] = None,
                 max_score_points: int = 2048) -> Tuple[np.ndarray, float, np.ndarray]:
    """The plane ``n . p + d = 0`` (``|n| = 1``) with most points within ``tolerance`` of it
    (a float, or (K,) per point: depth noise grows with range).

    All ``iterations`` hypotheses (random point triples) are scored at once on at most
    ``max_score_points`` points; the best is refined by least squares on its inliers.

    Returns:
        ``(n (3,), d, inliers (K,) bool)``; ``inliers`` all False when ``xyz`` has < 3 points
        or is degenerate (collinear).
    """
    p = np.asarray(xyz, dtype=np.float64)[:, :3]
    k = p.shape[0]
    none = (np.zeros(3), 0.0, np.zeros(k, dtype=bool))
    if k < 3:
        return none
    tol = np.broadcast_to(np.asarray(tolerance, dtype=np.float64), (k,))
    rng = rng if rng is not None else np.random.default_rng(0)
    tri = rng.integers(0, k, size=(iterations, 3))
    a, b, c = p[tri[:, 0]], p[tri[:, 1]], p[tri[:, 2]]
    n = np.cross(b - a, c - a)
    norm = np.linalg.norm(n, axis=1)
    ok = norm > 1e-9
    if not ok.any():
        return none
    n = n[ok] / norm[ok, None]
    d = -np.einsum("ij,ij->i", n, a[ok])
    pick = slice(None) if k <= max_score_points else rng.choice(k, max_score_points, replace=False)
    counts = (np.abs(p[pick] @ n.T + d) <= tol[pick, None]).sum(axis=0)
    best = int(np.argmax(counts))
    n_best, d_best = n[best], float(d[best])
    inl = np.abs(p @ n_best + d_best) <= tol
    for _ in range(3):  # least-squares refinement on the core inliers (within half the tolerance)
        core = np.abs(p @ n_best + d_best) <= 0.5 * tol
        if core.sum() < 3:
            break
        q = p[core]
        centre = q.mean(axis=0)
        _, _, vt = np.linalg.svd(q - centre, full_matrices=False)
        n_ref = vt[-1]
        d_ref = -float(n_ref @ centre)
        inl_ref = np.abs(p @ n_ref + d_ref) <= tol
        if inl_ref.sum() < inl.sum():
            break
        n_best, d_best, inl = n_ref, d_ref, inl_ref
    return n_best, d_best, inl


def _continuing_points(inside: np.ndarray, around: np.ndarray, ring: np.ndarray, n: np.ndarray, min_spread: float,
                       cell: float = 0.05) -> int:
    """How many points of the ring around the box continue the plane's surface from inside it.

    ``inside`` (I, 3): the plane's points in the frustum; ``around`` (A, 3): the frame's points
    on the plane near the box, ``ring`` (A,) bool those beyond its padding. All are rasterised in
    the plane (``cell`` [m]) and split into connected pieces; a ring point counts when its piece
    holds inside points too and its ring part is a piece of surface, not a line (minor in-plane
    standard deviation >= ``min_spread`` [m]). A wall seen through and around a box is one such piece;
    an object's face ends at its edges, and its plane meets the walls and furniture around it
    in lines or in separate pieces (another table top at the same height).
    """
    if not ring.any() or inside.shape[0] < 3:
        return 0
    from scipy import ndimage

    a = np.cross(n, [1.0, 0.0, 0.0] if abs(n[0]) < 0.9 else [0.0, 1.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(n, a)
    pts = np.vstack([inside, around])
    q = np.column_stack([pts @ a, pts @ b])
    ij = np.floor((q - q.min(axis=0)) / cell).astype(np.int64)
    grid = np.zeros(tuple(ij.max(axis=0) + 1), dtype=bool)
    grid[ij[:, 0], ij[:, 1]] = True
    labels, _ = ndimage.label(grid, structure=np.ones((3, 3), dtype=bool))
    piece = labels[ij[:, 0], ij[:, 1]]
    k_in = inside.shape[0]
    ring_piece = piece[k_in:][ring]
    total = 0
    q_ring = q[k_in:][ring]
    for c in np.intersect1d(np.unique(piece[:k_in]), np.unique(ring_piece)):
        m = ring_piece == c  # the piece's part beyond the box must itself be surface
        k = int(m.sum())
        if k < 3:
            continue
        sv = np.linalg.svd(q_ring[m] - q_ring[m].mean(axis=0), compute_uv=False)
        if float(sv[-1]) / np.sqrt(k) >= min_spread:
            total += k
    return total


def structure_planes(xyz: np.ndarray, frame_xyz: np.ndarray, frame_uv: np.ndarray, box2d,
                     max_planes: int = 3, tolerance: float = 0.03, min_share: float = 0.05,
                     outside_ratio: float = 0.5, pad: float = 0.15, reach: float = 1.0, min_spread: float = 0.08,
                     depth: Optional[np.ndarray] = None, frame_depth: Optional[np.ndarray] = None,
                     noise: float = 0.0, iterations: int = 128, seed: int = 0) -> np.ndarray:
    """(K,) bool: the frustum points ``xyz`` (K, 3) on structure planes.

    Args:
        frame_xyz, frame_uv: every candidate point of the frame in front of the camera and its pixel
            (the frustum points among them), to see whether a plane continues outside the box.
        box2d: (4,) x0, y0, x1, y1 of the proposal.
        max_planes: planes tried at most; min_share: a plane holding fewer than this share of the
            frustum's points ends the search; outside_ratio, pad: the continuation test above, counted
            in the ring between the box padded by ``pad`` and by ``reach`` (fractions of its size);
            min_spread: those points must continue the plane's surface from inside the box (:func:`_continuing_points`).
        depth, frame_depth, noise: camera depths of ``xyz`` and ``frame_xyz``; a point's tolerance
            is then ``max(tolerance, noise * depth**2)`` (depth cameras' noise grows with the square
            of range: ~3 cm at 4.5 m for a Kinect-class sensor).
    """
    k = xyz.shape[0]
    drop = np.zeros(k, dtype=bool)
    if max_planes <= 0 or k < 3:
        return drop
    x0, y0, x1, y1 = (float(v) for v in box2d)
    px, py = pad * (x1 - x0), pad * (y1 - y0)
    fu, fv = frame_uv[:, 0], frame_uv[:, 1]
    rx, ry = reach * (x1 - x0), reach * (y1 - y0)
    near = (fu >= x0 - rx) & (fu <= x1 + rx) & (fv >= y0 - ry) & (fv <= y1 + ry)
    ring = ~((fu >= x0 - px) & (fu <= x1 + px) & (fv >= y0 - py) & (fv <= y1 + py))[near]
    near_xyz = np.asarray(frame_xyz, dtype=np.float64)[near]
    tol = np.full(k, float(tolerance))
    near_tol = np.full(near_xyz.shape[0], float(tolerance))
    if noise > 0 and depth is not None and frame_depth is not None:
        tol = np.maximum(tol, noise * np.asarray(depth, dtype=np.float64) ** 2)
        near_tol = np.maximum(near_tol, noise * np.asarray(frame_depth, dtype=np.float64)[near] ** 2)
    rng = np.random.default_rng(seed)
    free = np.ones(k, dtype=bool)  # neither dropped nor an object face already
    for _ in range(max_planes):
        idx = np.flatnonzero(free)
        if idx.size < max(3, int(min_share * k)):
            break
        n, d, inl = ransac_plane(xyz[idx], tol[idx], iterations, rng)
        count = int(inl.sum())
        if count < max(3, min_share * k):
            break
        on = np.abs(near_xyz @ n + d) <= near_tol
        members = idx[inl]
        if (int((on & ring).sum()) >= outside_ratio * count
                and _continuing_points(xyz[members], near_xyz[on], ring[on], n, min_spread) >= outside_ratio * count):
            drop[members] = True
        free[members] = False
    return drop
