"""Vectorised ray casting against oriented boxes, vertical cylinders, ellipsoids and one plane.

Every object of the synthetic world is a handful of primitives. A sensor casts a *grid* of rays
from its own origin (a LiDAR: beams x azimuth columns; a camera: pixel rows x columns). For each
primitive only the grid window that its bounding sphere can cover is intersected, so the cost is
proportional to the rays that can actually hit it; (ray, primitive) pairs are intersected in
vectorised batches and the nearest hit per ray wins (z-buffer).

All arrays here are in the *sensor* frame: rays start at the origin.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

BOX, CYLINDER, ELLIPSOID = 0, 1, 2
_EPS = 1e-9
_CUBE = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
_CUBE_EDGES = np.array(
    [[i, j] for i in range(8) for j in range(i + 1, 8) if int(np.abs(_CUBE[i] - _CUBE[j]).sum()) == 2], dtype=np.int64
)


@dataclass
class Primitives:
    """A set of solid primitives, each with its own local frame.

    Local frame of a cylinder: axis along local z. Sizes are half extents.
    """

    kind: np.ndarray  # (P,) int8: BOX, CYLINDER or ELLIPSOID
    R: np.ndarray  # (P, 3, 3) float64 local -> frame rotation
    c: np.ndarray  # (P, 3) float64 centre in the frame
    half: np.ndarray  # (P, 3) float64 half extents (box hx,hy,hz; cylinder r,r,hz; ellipsoid rx,ry,rz)
    material: np.ndarray  # (P,) int32 index into the material table
    owner: np.ndarray  # (P,) int32 object index, -1 for static structure

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    @property
    def radius(self) -> np.ndarray:
        """(P,) bounding-sphere radius."""
        return np.linalg.norm(self.half, axis=1)

    def transformed(self, R: np.ndarray, t: np.ndarray) -> "Primitives":
        """The same primitives expressed in another frame: p' = R p + t."""
        return Primitives(
            kind=self.kind,
            R=np.einsum("ij,pjk->pik", R, self.R),
            c=self.c @ R.T + t,
            half=self.half,
            material=self.material,
            owner=self.owner,
        )

    def subset(self, mask: np.ndarray) -> "Primitives":
        return Primitives(self.kind[mask], self.R[mask], self.c[mask], self.half[mask], self.material[mask], self.owner[mask])

    @staticmethod
    def concat(parts: "list[Primitives]") -> "Primitives":
        parts = [p for p in parts if len(p)]
        if not parts:
            return Primitives(
                np.zeros(0, np.int8), np.zeros((0, 3, 3)), np.zeros((0, 3)), np.zeros((0, 3)),
                np.zeros(0, np.int32), np.zeros(0, np.int32),
            )
        return Primitives(
            kind=np.concatenate([p.kind for p in parts]),
            R=np.concatenate([p.R for p in parts]),
            c=np.concatenate([p.c for p in parts]),
            half=np.concatenate([p.half for p in parts]),
            material=np.concatenate([p.material for p in parts]),
            owner=np.concatenate([p.owner for p in parts]),
        )


def intersect(kind: int, R: np.ndarray, c: np.ndarray, half: np.ndarray, dirs: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Intersect rays from the origin with one primitive.

    Args:
        kind: BOX, CYLINDER or ELLIPSOID. R: (3, 3) local -> sensor rotation. c: (3,) centre. half: (3,) half extents.
        dirs: (n, 3) unit ray directions in the sensor frame.
    Returns:
        t: (n,) distance to the first hit in front of the origin, ``inf`` where the ray misses.
        normal: (n, 3) outward unit normal at the hit in the sensor frame (zeros on misses).
    """
    n = dirs.shape[0]
    d = dirs @ R  # R^T d
    o = np.broadcast_to(-(c @ R), (n, 3))  # R^T (0 - c)
    h = np.broadcast_to(np.asarray(half, dtype=np.float64), (n, 3))
    t = _pair_hits(kind, d, o, h)
    normal = np.zeros((n, 3))
    hit = np.isfinite(t)
    if hit.any():
        p = o[hit] + t[hit, None] * d[hit]
        normal[hit] = _local_normals(np.full(int(hit.sum()), kind), p, h[hit]) @ R.T
    return t, normal


class RayGrid:
    """A grid of unit rays from the sensor origin (rows x columns) with window lookups for primitives."""

    dirs: np.ndarray  # (H, W, 3) unit directions, sensor frame
    shape: Tuple[int, int]

    def windows(self, c: np.ndarray, R: np.ndarray, half: np.ndarray, radius: np.ndarray) -> np.ndarray:
        """(P, 4) int64 ``[r0, r1, c0, c1)`` grid windows holding every ray that can hit each primitive."""
        raise NotImplementedError


class LidarGrid(RayGrid):
    """Spinning LiDAR: rows are beams (elevations ascending), columns uniform azimuths.

    Sensor frame: azimuth measured from +x towards +y, elevation from the xy-plane up.
    """

    def __init__(self, elevations_deg: np.ndarray, n_azimuth: int):
        self.elev = np.deg2rad(np.sort(np.asarray(elevations_deg, dtype=np.float64)))
        self.n_az = int(n_azimuth)
        self.az = -np.pi + (np.arange(self.n_az) + 0.5) * (2 * np.pi / self.n_az)
        ce, se = np.cos(self.elev), np.sin(self.elev)
        self.dirs = np.stack(
            [ce[:, None] * np.cos(self.az)[None, :], ce[:, None] * np.sin(self.az)[None, :], np.broadcast_to(se[:, None], (len(self.elev), self.n_az))],
            axis=-1,
        )
        self.shape = (len(self.elev), self.n_az)
        self._flat = np.arange(self.shape[0] * self.shape[1]).reshape(self.shape)
        self._step = np.deg2rad(0.5)  # beam spacing slack

    def windows(self, c: np.ndarray, R: np.ndarray, half: np.ndarray, radius: np.ndarray) -> np.ndarray:
        """(P, 4) int64 ``[r0, r1, c0, c1)`` windows of many primitives at once (columns may wrap: taken mod W)."""
        P = c.shape[0]
        out = np.zeros((P, 4), dtype=np.int64)
        if P == 0:
            return out
        corners = c[:, None, :] + np.einsum("pij,pkj->pki", R, _CUBE[None] * half[:, None, :])
        dist = np.linalg.norm(c, axis=1)
        rxy = np.hypot(corners[..., 0] - c[:, None, 0], corners[..., 1] - c[:, None, 1]).max(axis=1)
        horiz = np.hypot(c[:, 0], c[:, 1])
        zmin, zmax = corners[..., 2].min(axis=1), corners[..., 2].max(axis=1)
        r_min = np.maximum(horiz - rxy, 1e-3)
        r_max = horiz + rxy
        el_lo = np.arctan2(zmin, np.where(zmin < 0, r_min, r_max))
        el_hi = np.arctan2(zmax, np.where(zmax > 0, r_min, r_max))
        out[:, 0] = np.searchsorted(self.elev, el_lo - 1e-6, side="left")
        out[:, 1] = np.searchsorted(self.elev, el_hi + 1e-6, side="right")
        azc = np.arctan2(c[:, 1], c[:, 0])
        daz = np.mod(np.arctan2(corners[..., 1], corners[..., 0]) - azc[:, None] + np.pi, 2 * np.pi) - np.pi
        step = 2 * np.pi / self.n_az
        out[:, 2] = np.floor((azc + daz.min(axis=1) + np.pi) / step - 0.5)
        out[:, 3] = np.ceil((azc + daz.max(axis=1) + np.pi) / step - 0.5) + 1
        full_az = (horiz <= rxy * 1.01) | (out[:, 3] - out[:, 2] >= self.n_az)
        out[full_az, 2], out[full_az, 3] = 0, self.n_az
        full = dist <= radius * 1.01
        out[full] = (0, self.shape[0], 0, self.n_az)
        return out


class CameraGrid(RayGrid):
    """Pinhole camera rays through pixel centres (optical frame: x right, y down, z forward)."""

    def __init__(self, K: np.ndarray, width: int, height: int):
        self.K = np.asarray(K, dtype=np.float64)
        self.shape = (int(height), int(width))
        u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
        pix = np.stack([u, v, np.ones_like(u)], axis=-1)
        d = pix @ np.linalg.inv(self.K).T
        self.depth_per_t = 1.0 / np.linalg.norm(d, axis=-1)  # z of a unit ray
        self.dirs = d * self.depth_per_t[..., None]
        self._flat = np.arange(height * width).reshape(self.shape)

    def windows(self, c: np.ndarray, R: np.ndarray, half: np.ndarray, radius: np.ndarray) -> np.ndarray:
        """(P, 4) int64 ``[r0, r1, c0, c1)`` pixel windows of many primitives at once (empty when unseen)."""
        P = c.shape[0]
        out = np.zeros((P, 4), dtype=np.int64)
        if P == 0:
            return out
        near = 0.05
        corners = c[:, None, :] + np.einsum("pij,pkj->pki", R, _CUBE[None] * half[:, None, :])
        front = corners[..., 2] > near
        h, w = self.shape
        allf = front.all(axis=1)
        uv = corners[allf] @ self.K.T
        u = uv[..., 0] / uv[..., 2]
        v = uv[..., 1] / uv[..., 2]
        out[allf, 0] = np.clip(np.floor(v.min(axis=1)), 0, h)
        out[allf, 1] = np.clip(np.ceil(v.max(axis=1)) + 1, 0, h)
        out[allf, 2] = np.clip(np.floor(u.min(axis=1)), 0, w)
        out[allf, 3] = np.clip(np.ceil(u.max(axis=1)) + 1, 0, w)
        for i in np.nonzero(front.any(axis=1) & ~allf)[0]:  # straddling the near plane: clip edges
            idx = self.window(c[i], float(radius[i]), R[i], half[i])
            if idx is not None:
                rows, cols = idx // w, idx % w
                out[i] = (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1)
        return out

    def window(self, centre: np.ndarray, radius: float, R: np.ndarray, half: np.ndarray) -> Optional[np.ndarray]:
        """Flat pixel indices that may see one primitive (edges clipped at the near plane); None if none."""
        near = 0.05
        if centre[2] + radius <= near:
            return None
        corners = centre[None, :] + (_CUBE * half[None, :]) @ R.T  # (8, 3) oriented-box corners
        front = corners[:, 2] > near
        if not front.any():
            return None
        pts = [corners[front]]
        if not front.all():  # clip the box's edges at the near plane: exact bound of the visible part
            p0, p1 = corners[_CUBE_EDGES[:, 0]], corners[_CUBE_EDGES[:, 1]]
            cross = (p0[:, 2] > near) != (p1[:, 2] > near)
            if cross.any():
                p0, p1 = p0[cross], p1[cross]
                s_ = (near - p0[:, 2]) / (p1[:, 2] - p0[:, 2])
                pts.append(p0 + s_[:, None] * (p1 - p0))
        pts = np.concatenate(pts)
        uv = pts @ self.K.T
        u = uv[:, 0] / uv[:, 2]
        v = uv[:, 1] / uv[:, 2]
        h, w = self.shape
        c0, c1 = int(max(0, np.floor(u.min()))), int(min(w, np.ceil(u.max()) + 1))
        r0, r1 = int(max(0, np.floor(v.min()))), int(min(h, np.ceil(v.max()) + 1))
        if c1 <= c0 or r1 <= r0:
            return None
        return self._flat[r0:r1, c0:c1].reshape(-1)


@dataclass
class Hits:
    """Nearest hit per ray of a grid (flat arrays over H*W rays)."""

    t: np.ndarray  # (n,) range along the unit ray, inf = no hit
    prim: np.ndarray  # (n,) int primitive index, -1 = none / plane
    normal: np.ndarray  # (n, 3) unit normal, sensor frame
    silhouettes: Optional[dict] = None  # owner -> number of rays hitting it, ignoring occlusion


def _pair_hits(kind: int, d: np.ndarray, o: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Distances (n,) along local rays ``o + t d`` (rows are (ray, primitive) pairs) to a primitive kind."""
    if kind == BOX:
        dd = np.where(np.abs(d) < _EPS, _EPS, d)
        inv = 1.0 / dd
        t1 = (-half - o) * inv
        t2 = (half - o) * inv
        t_near = np.minimum(t1, t2).max(axis=1)
        t_far = np.maximum(t1, t2).min(axis=1)
        return np.where((t_far >= t_near) & (t_near > _EPS), t_near, np.inf)
    if kind == CYLINDER:
        r, hz = half[:, 0], half[:, 2]
        a = d[:, 0] ** 2 + d[:, 1] ** 2
        b = 2.0 * (o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1])
        cc = o[:, 0] ** 2 + o[:, 1] ** 2 - r * r
        disc = b * b - 4.0 * a * cc
        with np.errstate(invalid="ignore", divide="ignore"):
            ts = (-b - np.sqrt(disc)) / (2.0 * a)
        side = (disc >= 0) & (a > _EPS) & (ts > _EPS) & (np.abs(o[:, 2] + ts * d[:, 2]) <= hz)
        zc = np.where(o[:, 2] > 0, hz, -hz)
        dz = np.where(np.abs(d[:, 2]) < _EPS, _EPS, d[:, 2])
        tc = (zc - o[:, 2]) / dz
        px = o[:, 0] + tc * d[:, 0]
        py = o[:, 1] + tc * d[:, 1]
        cap = (tc > _EPS) & (px * px + py * py <= r * r) & (np.abs(o[:, 2]) > hz)
        return np.minimum(np.where(side, ts, np.inf), np.where(cap, tc, np.inf))
    os_ = o / half
    ds = d / half
    a = (ds * ds).sum(1)
    b = 2.0 * (ds * os_).sum(1)
    cc = (os_ * os_).sum(1) - 1.0
    disc = b * b - 4.0 * a * cc
    with np.errstate(invalid="ignore"):
        ts = (-b - np.sqrt(disc)) / (2.0 * a)
    return np.where((disc >= 0) & (ts > _EPS), ts, np.inf)


def _local_normals(kind: np.ndarray, p: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Outward unit normals (n, 3) at local hit points ``p`` on primitives of the given kinds."""
    q = np.abs(p) / half
    n = np.zeros_like(p)
    box = kind == BOX
    if box.any():
        ax = np.argmax(q[box], axis=1)
        nb = np.zeros((int(box.sum()), 3))
        nb[np.arange(len(ax)), ax] = np.sign(p[box][np.arange(len(ax)), ax])
        n[box] = nb
    cyl = kind == CYLINDER
    if cyl.any():
        pc, hc = p[cyl], half[cyl]
        radial = np.hypot(pc[:, 0], pc[:, 1]) / hc[:, 0]
        on_cap = np.abs(pc[:, 2]) / hc[:, 2] > radial
        nc = np.zeros_like(pc)
        nc[:, 0] = np.where(on_cap, 0.0, pc[:, 0])
        nc[:, 1] = np.where(on_cap, 0.0, pc[:, 1])
        nc[:, 2] = np.where(on_cap, np.sign(pc[:, 2]), 0.0)
        n[cyl] = nc
    ell = kind == ELLIPSOID
    if ell.any():
        n[ell] = p[ell] / half[ell] ** 2
    return n / (np.linalg.norm(n, axis=1, keepdims=True) + _EPS)


def cast(
    grid: RayGrid,
    prims: Primitives,
    max_range: float,
    plane: Optional[Tuple[np.ndarray, float]] = None,
    collect_silhouettes: bool = False,
    chunk: int = 400_000,
    rounds: int = 4,
) -> Hits:
    """Cast every ray of ``grid`` against ``prims`` (sensor frame) and an optional plane ``n . p = d``.

    Primitives are taken near to far in ``rounds`` batches; in each, all (ray, primitive) pairs inside
    the primitives' grid windows whose ray is not already blocked nearer are intersected at once
    (vectorised), and the nearest hit per ray wins. The plane gets ``prim == -2``. With
    ``collect_silhouettes`` the rays hitting each object (``owner >= 0``) are counted ignoring occlusion.
    """
    dirs = grid.dirs.reshape(-1, 3)
    n = dirs.shape[0]
    tbuf = np.full(n, np.inf)
    pbuf = np.full(n, -1, dtype=np.int64)
    nbuf = np.zeros((n, 3))
    if plane is not None:
        pn, pd = plane
        denom = dirs @ pn
        with np.errstate(divide="ignore", invalid="ignore"):
            tp = pd / denom
        ok = (denom < -1e-6) & (tp > 0) & (tp < max_range)
        tbuf[ok] = tp[ok]
        pbuf[ok] = -2
        nbuf[ok] = pn
    radius = prims.radius
    near = np.linalg.norm(prims.c, axis=1) - radius
    wins = grid.windows(prims.c, prims.R, prims.half, radius)
    live = np.nonzero((wins[:, 1] > wins[:, 0]) & (wins[:, 3] > wins[:, 2]) & (near < max_range))[0]
    live = live[np.argsort(near[live], kind="stable")]
    W = grid.shape[1]
    o_local = -np.einsum("pij,pi->pj", prims.R, prims.c)  # (P, 3) sensor origin in each local frame
    t_plane = tbuf.copy()
    sil_keys = []
    # near-to-far rounds: rays already blocked by nearer hits are not intersected again
    for batch in np.array_split(live, min(rounds, max(1, live.size))):
        # all (ray, primitive) pairs of the batch's windows, built without a Python loop
        r0, r1, c0, c1 = wins[batch].T
        nc = c1 - c0
        sizes = (r1 - r0) * nc
        total = int(sizes.sum())
        if total == 0:
            continue
        prim = np.repeat(batch, sizes)
        start = np.repeat(np.cumsum(sizes) - sizes, sizes)
        k = np.arange(total, dtype=np.int64) - start
        ncp = np.repeat(nc, sizes)
        idx = (np.repeat(r0, sizes) + k // ncp) * W + (np.repeat(c0, sizes) + k % ncp) % W
        # objects keep every ray for their silhouettes (occlusion ignored); all else is culled
        if collect_silhouettes:
            ref = np.where(prims.owner[prim] >= 0, t_plane[idx], tbuf[idx])
        else:
            ref = tbuf[idx]
        keep = ref > near[prim]
        idx, prim = idx[keep], prim[keep]
        if idx.size == 0:
            continue
        t = np.full(idx.size, np.inf)
        for s0 in range(0, idx.size, chunk):
            sl = slice(s0, s0 + chunk)
            pi, ii = prim[sl], idx[sl]
            kinds = prims.kind[pi]
            d_local = np.einsum("nij,ni->nj", prims.R[pi], dirs[ii])
            tc = np.full(pi.size, np.inf)
            for kind in (BOX, CYLINDER, ELLIPSOID):
                m = kinds == kind
                if m.any():
                    tc[m] = _pair_hits(kind, d_local[m], o_local[pi[m]], prims.half[pi[m]])
            t[sl] = tc
        t[t >= max_range] = np.inf
        hit = np.isfinite(t)
        idx, prim, t = idx[hit], prim[hit], t[hit]
        if collect_silhouettes:
            own = prims.owner[prim]
            keep = own >= 0
            sil_keys.append(own[keep].astype(np.int64) * n + idx[keep])
        np.minimum.at(tbuf, idx, t)
        win = t == tbuf[idx]
        wi, wp, wt = idx[win], prim[win], t[win]
        pbuf[wi] = wp
        p_local = np.einsum("nij,ni->nj", prims.R[wp], dirs[wi] * wt[:, None]) + o_local[wp]
        nl = _local_normals(prims.kind[wp], p_local, prims.half[wp])
        nbuf[wi] = np.einsum("nij,nj->ni", prims.R[wp], nl)
    sil = None
    if collect_silhouettes:
        sil = {}
        if sil_keys:
            keys = np.unique(np.concatenate(sil_keys))
            owners, counts = np.unique(keys // n, return_counts=True)
            sil = {int(o): int(c) for o, c in zip(owners, counts)}
    return Hits(t=tbuf, prim=pbuf, normal=nbuf, silhouettes=sil)
