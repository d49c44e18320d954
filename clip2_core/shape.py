"""Boxes for partly seen objects: L-shape fitting and a per-class size corrector.

A LiDAR sees an object only from one side: a car ahead shows its rear (an "I"), a car at a corner
shows two faces (an "L"), and the rest of it is hidden behind those faces. The cluster's tight box
(:func:`clip2_core.geometry.fit_box`) is then too small and its centre lies between the sensor and
the object's true centre. This module follows the design of Autoware's ``shape_estimation``: fit
the heading to the visible faces, then correct the size with a prior for the object's class.

L-shape fitting (:func:`fit_l_shape`)
-------------------------------------
Search-based rectangle fitting of Zhang et al., "Efficient L-Shape Fitting for Vehicle Detection
Using Laser Scanners" (IEEE IV 2017). For each candidate heading ``theta`` in [0, 90) degrees the
bird's-eye points are projected on ``e1 = (cos, sin)`` and ``e2 = (-sin, cos)``; the rectangle is
their bounding rectangle in that frame, scored with the *closeness criterion*: every point is
``d`` from the nearest of the rectangle's edges (clipped below at ``d0``), and the score is
``sum(1 / d)``: the heading whose rectangle has the most points lying on its edges wins. Distances
are per point to the nearer edge in each direction (as Autoware implements it; the paper picks one
edge per direction for the whole cluster). The search runs on a 1 degree grid, then 0.1 degree
around the best. All candidates are scored at once (one ``(points, angles)`` array).

The paper fits 2D scans, one return per bearing. A 3D cluster also has returns on roofs, hoods and
windows inside its footprint, which pull the score away from the true faces, so the heading is
fitted to the cluster's *visible contour*: its nearest point to the sensor in each 0.25 degree
azimuth bin. The box extent then comes from all the cluster's points.

Size correction (:func:`correct_box`)
-------------------------------------
``SIZE_PRIORS`` holds, per class, a minimum and a typical length and width (the typical sizes are
close to the nuScenes training-set means; the minima follow Autoware's corrector parameters).
When a fitted box is shorter than the class minimum along ``l`` or ``w``, that side is grown to
the typical size, keeping the box face nearest the sensor where it is (the visible faces are where
the points are) and so moving the centre away from the sensor. A side is never shrunk. When the
fitted long side is too short to be the class's length but fits its width (a car seen from behind:
the visible rear face is the car's width), the axes are swapped first and the length is grown
across the visible face. Heights are not corrected: the points measure them.

One exception to "keep the nearest face": a sensor with a limited field of view (a solid-state
LiDAR, or a sweep cropped to a camera's view as KITTI's usually are) cuts objects at its edges, and
there the nearest face is not seen at all. Given the sweep's azimuth coverage
(:func:`field_of_view`), a side whose nearest face lies at an edge of the view (and whose opposite
face does not) keeps the opposite face instead, and grows towards the edge.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from clip2_core.types import Box3D

__all__ = ["SIZE_PRIORS", "SizePrior", "correct_box", "field_of_view", "fit_l_shape", "size_prior", "visible_contour"]


@dataclass(frozen=True)
class SizePrior:
    """Bird's-eye size prior of a class [m]; length is the longer side, along the heading."""

    min_length: float  # a fitted length below this is a partial view: grown to typical_length
    typical_length: float
    min_width: float  # a fitted width below this is a partial view: grown to typical_width
    typical_width: float
    max_width: float  # a fitted long side up to this (and below min_length) may be the width: axes swapped


# Typical sizes: about the nuScenes means (car 4.6 x 1.95, truck 6.7 x 2.5, bus 11.2 x 2.9,
# motorcycle 2.1 x 0.8, bicycle 1.7 x 0.6, pedestrian 0.7 x 0.7, traffic cone 0.4 x 0.4,
# barrier 2.5 x 0.5). Minima and max widths: Autoware's shape_estimation corrector (car, truck, bus,
# bicycle) where it has one, but tighter max widths for cars (2.2 m: the widest cars are ~2.1 m
# without mirrors) and trucks (2.8 m: road vehicles are at most 2.55-2.6 m wide), so a longer
# visible side is taken as part of the length, not as the width.
SIZE_PRIORS: Mapping[str, SizePrior] = MappingProxyType({
    "car": SizePrior(3.0, 4.5, 1.2, 1.9, 2.2),
    "truck": SizePrior(4.0, 6.7, 1.5, 2.5, 2.8),
    "bus": SizePrior(5.0, 11.0, 2.0, 2.9, 3.2),
    "motorcycle": SizePrior(1.2, 2.1, 0.4, 0.8, 1.2),
    "bicycle": SizePrior(1.0, 1.7, 0.3, 0.6, 1.2),
    "pedestrian": SizePrior(0.3, 0.7, 0.3, 0.65, 1.0),
    "traffic_cone": SizePrior(0.2, 0.4, 0.2, 0.4, 0.6),
    "barrier": SizePrior(0.8, 2.5, 0.2, 0.5, 1.0),
})


def size_prior(label: Optional[str], priors: Mapping[str, SizePrior] = SIZE_PRIORS) -> Optional[SizePrior]:
    """The prior of a label (case, spaces and hyphens ignored: "Traffic cone" = "traffic_cone"), or None."""
    if not label:
        return None
    return priors.get(label.strip().lower().replace(" ", "_").replace("-", "_"))


def visible_contour(xy: np.ndarray, sensor_xy: Sequence[float] = (0.0, 0.0), bin_deg: float = 0.25) -> np.ndarray:
    """The nearest point to the sensor in each azimuth bin: the outline a 2D scan would see.

    Args:
        xy: (K, 2) bird's-eye points. sensor_xy: (2,) sensor position. bin_deg: azimuth bin width.
    Returns:
        (M, 2) float64, M <= K: one point per occupied bin.
    """
    p = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if p.shape[0] == 0:
        return p
    d = p - np.asarray(sensor_xy, dtype=np.float64)
    az = np.arctan2(d[:, 1], d[:, 0])
    az = (az - az[0] + np.pi) % (2 * np.pi)  # relative to the first point: no wrap inside one object
    b = np.floor(az / np.deg2rad(bin_deg)).astype(np.int64)
    order = np.lexsort((np.hypot(d[:, 0], d[:, 1]), b))
    first = np.ones(order.shape[0], dtype=bool)
    first[1:] = b[order[1:]] != b[order[:-1]]
    return p[order[first]]


def _closeness(xy: np.ndarray, theta: np.ndarray, d0: float) -> np.ndarray:
    """Closeness score (A,) of the bounding rectangles of (K, 2) points at headings theta (A,)."""
    c, s = np.cos(theta), np.sin(theta)
    c1 = xy @ np.stack([c, s])  # (K, A) coordinates along e1
    c2 = xy @ np.stack([-s, c])  # (K, A) along e2
    d1 = np.minimum(c1.max(axis=0) - c1, c1 - c1.min(axis=0))
    d2 = np.minimum(c2.max(axis=0) - c2, c2 - c2.min(axis=0))
    return (1.0 / np.maximum(np.minimum(d1, d2), d0)).sum(axis=0)


def fit_l_shape(points: np.ndarray, sensor_xy: Sequence[float] = (0.0, 0.0), *, step_deg: float = 1.0,
                fine_step_deg: float = 0.1, d0: float = 0.01, contour_bin_deg: float = 0.25,
                min_size: float = 0.05) -> np.ndarray:
    """Oriented box of a cluster with the heading of its best L-shape (see the module docstring).

    Args:
        points: (K, 3+) cluster points, K >= 1 (non-finite rows dropped).
        sensor_xy: (2,) sensor position in the points' frame (the visible contour is seen from it).
        step_deg, fine_step_deg: heading search steps: the coarse grid over [0, 90), then +-step_deg
            around its best. d0: closeness distance floor [m]. contour_bin_deg: azimuth bin of the
            visible contour. min_size: floor for each extent [m].
    Returns:
        (7,) float64 ``[x, y, z, l, w, h, yaw]`` with ``l >= w`` and yaw in (-pi/2, pi/2] (a cluster's
        heading is ambiguous by pi), like :func:`clip2_core.geometry.fit_box`.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"fit_l_shape needs (K, 3+) points, got shape {pts.shape}")
    pts = pts[:, :3][np.isfinite(pts[:, :3]).all(axis=1)]
    if pts.shape[0] == 0:
        raise ValueError("fit_l_shape needs at least one finite point")
    xy = pts[:, :2]
    origin = xy.mean(axis=0)  # centred coordinates: no precision loss far from the sensor
    local = xy - origin
    contour = visible_contour(local, np.asarray(sensor_xy, dtype=np.float64) - origin, contour_bin_deg)
    if contour.shape[0] < 3:
        contour = local
    theta = np.deg2rad(np.arange(0.0, 90.0, step_deg))
    best = theta[int(np.argmax(_closeness(contour, theta, d0)))]
    n_fine = int(round(step_deg / fine_step_deg))
    offsets = np.arange(-n_fine, n_fine + 1)
    offsets = offsets[np.argsort(np.abs(offsets), kind="stable")]  # the coarse best first: it wins ties
    fine = best + np.deg2rad(fine_step_deg) * offsets
    yaw = float(fine[int(np.argmax(_closeness(contour, fine, d0)))])
    c, s = np.cos(yaw), np.sin(yaw)
    u = local @ np.array([c, s])
    v = local @ np.array([-s, c])
    uc, vc = 0.5 * (u.max() + u.min()), 0.5 * (v.max() + v.min())
    length, width = float(u.max() - u.min()), float(v.max() - v.min())
    if width > length:
        length, width, yaw = width, length, yaw + np.pi / 2
    yaw = (yaw + np.pi / 2) % np.pi - np.pi / 2
    if yaw <= -np.pi / 2 + 1e-12:
        yaw += np.pi
    zmin, zmax = pts[:, 2].min(), pts[:, 2].max()
    return np.array([origin[0] + c * uc - s * vc, origin[1] + s * uc + c * vc, 0.5 * (zmin + zmax),
                     max(length, min_size), max(width, min_size), max(zmax - zmin, min_size), yaw])


def field_of_view(points: np.ndarray, sensor_xy: Sequence[float] = (0.0, 0.0), bin_deg: float = 0.5,
                  min_gap_deg: float = 10.0) -> Optional[Tuple[float, float]]:
    """Azimuth interval a sweep covers, seen from the sensor, or None when it covers all around.

    The azimuths are binned (``bin_deg``); the longest circular run of empty bins, when at least
    ``min_gap_deg`` long, is the blind sector, and the field of view is the rest.

    Args:
        points: (N, 2+) sweep points (x, y first). sensor_xy: (2,) sensor position.
    Returns:
        ``(right, left)`` [rad] in [-pi, pi): the sensor sees from ``right`` counter-clockwise to
        ``left``; None for a 360 degree sweep or an empty one.
    """
    p = np.asarray(points)
    if p.shape[0] == 0:
        return None
    n_bins = int(round(360.0 / bin_deg))
    width = 2 * np.pi / n_bins
    sensor = np.asarray(sensor_xy, dtype=np.float64)

    def occupancy(xy):
        dx, dy = xy[:, 0] - sensor[0], xy[:, 1] - sensor[1]
        ok = np.isfinite(dx) & np.isfinite(dy)
        az = np.arctan2(dy[ok], dx[ok])
        k = np.minimum(((az + np.pi) / width).astype(np.int64), n_bins - 1)
        return np.bincount(k, minlength=n_bins) > 0, az.size

    # every 4th point first: when those already fill every bin, so do all (a 360-degree sweep: 0.2 vs 2.4 ms)
    if p.shape[0] >= 8 * n_bins:
        occ, _ = occupancy(p[::4, :2].astype(np.float64))
        if occ.all():
            return None
    occupied, n_finite = occupancy(p[:, :2].astype(np.float64))
    if n_finite == 0:
        return None
    empty = np.flatnonzero(~occupied)
    if empty.size == 0:
        return None
    # longest run of empty bins on the circle: start from an occupied bin so no run wraps
    shift = int(np.flatnonzero(occupied)[0])
    e = np.sort((empty - shift) % n_bins)
    breaks = np.flatnonzero(np.diff(e) != 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [e.size - 1]])
    r = int(np.argmax(ends - starts))
    if (ends[r] - starts[r] + 1) * bin_deg < min_gap_deg:
        return None
    first_empty, last_empty = (e[starts[r]] + shift) % n_bins, (e[ends[r]] + shift) % n_bins
    wrap = lambda a: float((a + np.pi) % (2 * np.pi) - np.pi)
    # the view starts where the blind sector ends, and ends where it starts
    return wrap(-np.pi + (last_empty + 1) * width), wrap(-np.pi + first_empty * width)


def _at_fov_edge(xy: np.ndarray, sensor_xy: np.ndarray, fov: Tuple[float, float], margin: float) -> bool:
    """Whether a point's azimuth is within ``margin`` [rad] of an edge of ``fov`` (or outside it)."""
    right, left = fov
    span = (left - right) % (2 * np.pi)
    rel = (np.arctan2(xy[1] - sensor_xy[1], xy[0] - sensor_xy[0]) - right) % (2 * np.pi)  # 0: right edge
    if rel > span:  # outside the view: count it at the nearer edge
        return True
    return bool(rel <= margin or rel >= span - margin)


def _grow_shift(sensor_coord: float, old: float, new: float) -> float:
    """Centre shift along one box axis when its extent grows from old to new, keeping the face nearest
    the sensor (sensor at ``sensor_coord`` on that axis, box centre at 0). A sensor between the two
    faces sees neither end: grow both ends evenly."""
    if new <= old or abs(sensor_coord) <= 0.5 * old:
        return 0.0
    return -np.sign(sensor_coord) * 0.5 * (new - old)


BoxLike = Union[Box3D, np.ndarray, Sequence[float]]


def correct_box(box: BoxLike, label: Optional[str], sensor_xy: Sequence[float] = (0.0, 0.0),
                priors: Mapping[str, SizePrior] = SIZE_PRIORS, fov: Optional[Tuple[float, float]] = None,
                fov_margin_deg: float = 1.5) -> BoxLike:
    """Grow a partial view's box to its class's size prior (see the module docstring).

    Args:
        box: a :class:`Box3D` or a (7,) ``[x, y, z, l, w, h, yaw]``.
        label: the object's class; labels without a prior ("unknown", unlisted) return ``box`` unchanged.
        sensor_xy: (2,) sensor position in the box's frame.
        priors: class -> :class:`SizePrior` (default ``SIZE_PRIORS``).
        fov: the sweep's field of view ``(right, left)`` [rad] (:func:`field_of_view`); None: all around.
            When the face a growing side would keep (the one nearest the sensor) has its middle within
            ``fov_margin_deg`` of an edge of the view, or outside it, and the opposite face does not,
            the opposite face is kept instead: the object is cut by the edge there.
    Returns:
        The corrected box, the same type as ``box`` (a new :class:`Box3D` keeps label, score, token
        and attributes), with ``l >= w``. z and h are unchanged.
    """
    prior = size_prior(label, priors)
    if prior is None:
        return box
    is_box = isinstance(box, Box3D)
    b = box.as_array() if is_box else np.asarray(box, dtype=np.float64).reshape(7).copy()
    length, width, yaw = float(b[3]), float(b[4]), float(b[6])
    if width > length:
        length, width, yaw = width, length, yaw + np.pi / 2
    if prior.min_width >= 1.0 and length < 0.75 * prior.min_width:
        # a vehicle class, but no visible side near a vehicle's width (a car's rear is >= 1.2 m):
        # more likely a wrong label (a pedestrian, a pole) than a partial view, and growing it would
        # move the box off the object
        return box
    if length < prior.min_length and prior.min_width <= length <= prior.max_width:
        # The long visible side fits the class's width, not its length: the length runs across it.
        length, width, yaw = width, length, yaw + np.pi / 2
    new_length = prior.typical_length if length < prior.min_length else length
    new_width = prior.typical_width if width < prior.min_width else width
    if new_length == length and new_width == width and yaw == float(b[6]):
        return box  # a full view: nothing to correct
    c, s = np.cos(yaw), np.sin(yaw)
    sensor = np.asarray(sensor_xy, dtype=np.float64).reshape(2)
    d = sensor - b[:2]
    du = _grow_shift(c * d[0] + s * d[1], length, new_length)
    dv = _grow_shift(-s * d[0] + c * d[1], width, new_width)
    if fov is not None:
        # At the edge of the field of view the face nearest the sensor may be cut away: when that
        # face's middle is at the edge and the opposite face's is not, keep the opposite face instead.
        margin = np.deg2rad(fov_margin_deg)
        shifts = [du, dv]
        for k, (axis, half) in enumerate(((np.array([c, s]), 0.5 * length), (np.array([-s, c]), 0.5 * width))):
            if shifts[k]:
                near = b[:2] - np.sign(shifts[k]) * half * axis
                far = b[:2] + np.sign(shifts[k]) * half * axis
                if _at_fov_edge(near, sensor, fov, margin) and not _at_fov_edge(far, sensor, fov, margin):
                    shifts[k] = -shifts[k]
        du, dv = shifts
    b[0] += c * du - s * dv
    b[1] += s * du + c * dv
    b[3], b[4] = new_length, new_width
    if new_width > new_length:
        b[3], b[4], yaw = new_width, new_length, yaw + np.pi / 2
    b[6] = (yaw + np.pi) % (2 * np.pi) - np.pi
    if not is_box:
        return b
    return Box3D(center=b[:3], size=b[3:6], yaw=float(b[6]), label=box.label, score=box.score, token=box.token,
                 attributes=dict(box.attributes))
