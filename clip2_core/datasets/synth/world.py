"""A procedural street: road, kerbs, buildings, vegetation, poles, and objects that move on it.

Global frame: x roughly along the road, z up. The road centre line is ``y = A sin(2 pi x / P + phi)``
(gentle curve), the ground is the plane ``z = sx * x + sy * y`` (gentle slope). Lanes (3.5 m) at
lateral offsets +-1.75 and +-5.25, a bike lane, a parking strip to +-11, kerbs, a sidewalk to +-16, then
buildings / walls / trees. The ego drives in the lane at lateral -1.75 (direction +x).

Objects are built from parametric parts (boxes, cylinders, ellipsoids) in their own frame (origin at
the ground-truth box centre, x forward, z up); the ground-truth box encloses the parts with a
small margin, like a human annotation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from .raycast import BOX, CYLINDER, ELLIPSOID, Primitives

# ---------------------------------------------------------------------------------------------
# categories: synthetic kind -> nuScenes category name (long-tail kinds use nuScenes names
# where nuScenes has one; tire and traffic_sign are synthetic additions)
CATEGORY_OF_KIND: Dict[str, str] = {
    "car": "vehicle.car",
    "truck": "vehicle.truck",
    "bus": "vehicle.bus.rigid",
    "trailer": "vehicle.trailer",
    "construction_vehicle": "vehicle.construction",
    "pedestrian": "human.pedestrian.adult",
    "child": "human.pedestrian.child",
    "motorcycle": "vehicle.motorcycle",
    "bicycle": "vehicle.bicycle",
    "traffic_cone": "movable_object.trafficcone",
    "barrier": "movable_object.barrier",
    "tire": "movable_object.tire",
    "debris": "movable_object.debris",
    "stroller": "human.pedestrian.stroller",
    "traffic_sign": "static_object.traffic_sign",
    "trash_can": "movable_object.pushable_pullable",
    "animal": "animal",
}
CATEGORY_DESCRIPTIONS: Dict[str, str] = {v: f"synthetic {k.replace('_', ' ')}" for k, v in CATEGORY_OF_KIND.items()}
ATTRIBUTES = [
    "vehicle.moving", "vehicle.parked", "vehicle.stopped",
    "pedestrian.moving", "pedestrian.standing", "pedestrian.sitting_lying_down",
    "cycle.with_rider", "cycle.without_rider",
]

LANES = (-5.25, -1.75, 1.75, 5.25)
EGO_LAT = -1.75
ROAD_HALF = 7.0  # traffic lanes end here
BIKE_LAT = 7.75  # bike lane centre
PARK_HALF = 11.0  # parking strip 8.5 .. 11.0, kerb beyond
SIDEWALK_HALF = 16.0  # sidewalk 11.25 .. 16.0, then buildings


@dataclass
class Material:
    rgb: Tuple[float, float, float]  # albedo in [0, 1]
    reflectivity: float  # LiDAR reflectivity in [0, 1]
    pattern: int = 0  # 0 plain, 1 building windows, 2 horizontal bands, 3 checker (signs)


class MaterialTable:
    def __init__(self) -> None:
        self.items: List[Material] = []

    def add(self, rgb, reflectivity: float, pattern: int = 0) -> int:
        self.items.append(Material(tuple(float(c) for c in rgb), float(reflectivity), pattern))
        return len(self.items) - 1

    def arrays(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        rgb = np.array([m.rgb for m in self.items], dtype=np.float64).reshape(-1, 3)
        refl = np.array([m.reflectivity for m in self.items], dtype=np.float64)
        pat = np.array([m.pattern for m in self.items], dtype=np.int32)
        return rgb, refl, pat


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


_WHEEL_R = _rot_x(-np.pi / 2)  # cylinder axis (local z) -> object y


class PartsBuilder:
    """Collects parts of one object in its frame (x forward, y left, z up, z=0 on the ground)."""

    def __init__(self, materials: MaterialTable):
        self.mt = materials
        self.kind: List[int] = []
        self.R: List[np.ndarray] = []
        self.c: List[np.ndarray] = []
        self.half: List[np.ndarray] = []
        self.mat: List[int] = []

    def add(self, kind: int, centre, half, mat: int, R: Optional[np.ndarray] = None) -> None:
        self.kind.append(kind)
        self.R.append(np.eye(3) if R is None else R)
        self.c.append(np.asarray(centre, dtype=np.float64))
        self.half.append(np.asarray(half, dtype=np.float64))
        self.mat.append(mat)

    def box(self, x0, x1, y0, y1, z0, z1, mat, R=None):
        self.add(BOX, ((x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2), ((x1 - x0) / 2, (y1 - y0) / 2, (z1 - z0) / 2), mat, R)

    def wheel(self, x, y, radius, width, mat):
        self.add(CYLINDER, (x, y, radius), (radius, radius, width / 2), mat, _WHEEL_R)

    def cylinder(self, x, y, z0, z1, radius, mat):
        self.add(CYLINDER, (x, y, (z0 + z1) / 2), (radius, radius, (z1 - z0) / 2), mat)

    def ellipsoid(self, centre, half, mat, R=None):
        self.add(ELLIPSOID, centre, half, mat, R)

    def finish(self, margin: float) -> Tuple[Primitives, np.ndarray]:
        """Parts re-centred on the GT box centre, and the GT size (l, w, h)."""
        R = np.stack(self.R)
        c = np.stack(self.c)
        half = np.stack(self.half)
        ext = np.einsum("pij,pj->pi", np.abs(R), half)  # AABB half extents (conservative for round parts)
        lo = (c - ext).min(0)
        hi = (c + ext).max(0)
        size = np.array([hi[0] - lo[0] + 2 * margin, hi[1] - lo[1] + 2 * margin, hi[2] - lo[2] + margin])
        shift = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2] + size[2] / 2])
        prims = Primitives(
            kind=np.array(self.kind, dtype=np.int8), R=R, c=c - shift, half=half,
            material=np.array(self.mat, dtype=np.int32), owner=np.zeros(len(self.kind), dtype=np.int32),
        )
        return prims, size


# ---------------------------------------------------------------------------------------------
# palettes
CAR_COLOURS = [(0.75, 0.1, 0.1), (0.1, 0.2, 0.6), (0.85, 0.85, 0.85), (0.15, 0.15, 0.15), (0.5, 0.5, 0.55),
               (0.1, 0.45, 0.2), (0.9, 0.75, 0.2), (0.6, 0.3, 0.1), (0.3, 0.6, 0.8)]
CLOTHES = [(0.2, 0.25, 0.5), (0.7, 0.2, 0.2), (0.15, 0.15, 0.15), (0.85, 0.8, 0.7), (0.3, 0.5, 0.3),
           (0.9, 0.6, 0.1), (0.5, 0.3, 0.6)]
SKIN = [(0.95, 0.8, 0.65), (0.75, 0.55, 0.4), (0.45, 0.3, 0.2)]


def _jit(rng: np.random.Generator, rgb, amount=0.06):
    return tuple(np.clip(np.asarray(rgb) + rng.normal(0, amount, 3), 0, 1))


def build_car(rng, mt):
    l, w, h = rng.uniform(3.9, 4.9), rng.uniform(1.7, 1.95), rng.uniform(1.42, 1.75)
    body = mt.add(_jit(rng, CAR_COLOURS[rng.integers(len(CAR_COLOURS))], 0.04), rng.uniform(0.3, 0.6))
    glass = mt.add((0.12, 0.14, 0.18), 0.08)
    tyre = mt.add((0.05, 0.05, 0.05), 0.1)
    light = mt.add((0.95, 0.95, 0.8), 0.9)
    rw = 0.31
    b = PartsBuilder(mt)
    b.box(-l / 2, l / 2, -w / 2, w / 2, 0.28, 0.55 * h + 0.1, body)
    cab_l = l * rng.uniform(0.45, 0.55)
    cx = -l * rng.uniform(0.02, 0.1)
    b.box(cx - cab_l / 2, cx + cab_l / 2, -w / 2 + 0.08, w / 2 - 0.08, 0.55 * h + 0.1, h, glass)
    b.box(cx - cab_l / 2 + 0.1, cx + cab_l / 2 - 0.25, -w / 2 + 0.1, w / 2 - 0.1, h - 0.06, h, body)
    for sx in (-1, 1):
        for sy in (-1, 1):
            b.wheel(sx * (l / 2 - 0.75), sy * (w / 2 - 0.13), rw, 0.24, tyre)
    b.box(l / 2 - 0.02, l / 2, -w / 2 + 0.1, -w / 2 + 0.4, 0.55, 0.7, light)
    b.box(l / 2 - 0.02, l / 2, w / 2 - 0.4, w / 2 - 0.1, 0.55, 0.7, light)
    return b


def build_truck(rng, mt):
    l, w, h = rng.uniform(6.0, 9.0), rng.uniform(2.3, 2.55), rng.uniform(2.8, 3.6)
    cab = mt.add(_jit(rng, [(0.85, 0.85, 0.85), (0.2, 0.3, 0.7), (0.8, 0.2, 0.1)][rng.integers(3)]), 0.5)
    cargo = mt.add(_jit(rng, (0.8, 0.8, 0.78), 0.1), 0.55)
    glass = mt.add((0.12, 0.14, 0.18), 0.08)
    tyre = mt.add((0.05, 0.05, 0.05), 0.1)
    b = PartsBuilder(mt)
    cab_l = 1.9
    b.box(l / 2 - cab_l, l / 2, -w / 2, w / 2, 0.45, h * 0.62, cab)
    b.box(l / 2 - cab_l, l / 2 - 0.5, -w / 2 + 0.05, w / 2 - 0.05, h * 0.62, h * 0.85, glass)
    b.box(-l / 2, l / 2 - cab_l - 0.15, -w / 2, w / 2, 0.9, h, cargo)
    b.box(-l / 2, l / 2, -w / 2 + 0.3, w / 2 - 0.3, 0.45, 0.9, tyre)
    for x in (l / 2 - 1.1, -l / 2 + 1.9, -l / 2 + 0.9):
        for sy in (-1, 1):
            b.wheel(x, sy * (w / 2 - 0.2), 0.48, 0.35, tyre)
    return b


def build_bus(rng, mt):
    l, w, h = rng.uniform(10.0, 12.5), rng.uniform(2.45, 2.6), rng.uniform(3.0, 3.4)
    body = mt.add(_jit(rng, [(0.9, 0.85, 0.2), (0.2, 0.35, 0.75), (0.85, 0.85, 0.85), (0.75, 0.15, 0.15)][rng.integers(4)]), 0.5)
    glass = mt.add((0.1, 0.12, 0.16), 0.08)
    tyre = mt.add((0.05, 0.05, 0.05), 0.1)
    b = PartsBuilder(mt)
    b.box(-l / 2, l / 2, -w / 2, w / 2, 0.35, h * 0.55, body)
    b.box(-l / 2 + 0.2, l / 2, -w / 2 + 0.02, w / 2 - 0.02, h * 0.55, h * 0.88, glass)
    b.box(-l / 2, l / 2, -w / 2, w / 2, h * 0.88, h, body)
    for x in (l / 2 - 2.5, -l / 2 + 3.0):
        for sy in (-1, 1):
            b.wheel(x, sy * (w / 2 - 0.2), 0.5, 0.3, tyre)
    return b


def build_trailer(rng, mt):
    l, w, h = rng.uniform(8.0, 12.0), rng.uniform(2.4, 2.6), rng.uniform(3.4, 3.9)
    body = mt.add(_jit(rng, [(0.9, 0.9, 0.9), (0.6, 0.6, 0.62), (0.3, 0.45, 0.7)][rng.integers(3)]), 0.55)
    dark = mt.add((0.08, 0.08, 0.08), 0.1)
    b = PartsBuilder(mt)
    b.box(-l / 2, l / 2, -w / 2, w / 2, 1.15, h, body)
    for x in (-l / 2 + 1.0, -l / 2 + 2.2):
        for sy in (-1, 1):
            b.wheel(x, sy * (w / 2 - 0.25), 0.5, 0.35, dark)
    for sy in (-1, 1):
        b.box(l / 2 - 2.6, l / 2 - 2.4, sy * (w / 2 - 0.4) - 0.1, sy * (w / 2 - 0.4) + 0.1, 0.0, 1.15, dark)
    return b


def build_construction_vehicle(rng, mt):
    l, w, h = rng.uniform(5.5, 7.5), rng.uniform(2.4, 2.9), rng.uniform(3.0, 3.6)
    yellow = mt.add(_jit(rng, (0.95, 0.7, 0.05), 0.04), 0.6)
    dark = mt.add((0.1, 0.1, 0.1), 0.1)
    glass = mt.add((0.15, 0.18, 0.2), 0.08)
    b = PartsBuilder(mt)
    for sy in (-1, 1):
        b.box(-l / 2 + 0.3, l / 2 - 1.6, sy * (w / 2 - 0.3) - 0.3, sy * (w / 2 - 0.3) + 0.3, 0.0, 0.8, dark)
    b.box(-l / 2 + 0.2, l / 2 - 1.8, -w / 2 + 0.1, w / 2 - 0.1, 0.8, 1.7, yellow)
    b.box(-0.4, 1.0, -w / 2 + 0.2, 0.4, 1.7, h, glass)
    # boom reaching forward and down to a bucket
    blen = 2.4
    ang = rng.uniform(0.3, 0.6)
    bx = l / 2 - 1.8 + np.cos(ang) * blen / 2
    bz = 1.6 + np.sin(ang) * blen / 2
    b.add(BOX, (bx, 0.0, min(bz, h - 0.4)), (blen / 2, 0.15, 0.15), yellow, _rot_y(ang))
    b.box(l / 2 - 0.9, l / 2, -0.6, 0.6, 0.1, 0.9, dark)
    return b


def build_pedestrian(rng, mt, child: bool = False):
    h = rng.uniform(1.0, 1.35) if child else rng.uniform(1.55, 1.92)
    top = mt.add(_jit(rng, CLOTHES[rng.integers(len(CLOTHES))]), 0.35)
    legs = mt.add(_jit(rng, CLOTHES[rng.integers(len(CLOTHES))]), 0.3)
    skin = mt.add(_jit(rng, SKIN[rng.integers(len(SKIN))], 0.03), 0.4)
    b = PartsBuilder(mt)
    leg_h = 0.47 * h
    stride = rng.uniform(-0.15, 0.15)
    b.cylinder(stride, 0.1, 0.0, leg_h, 0.075 * h / 1.75, legs)
    b.cylinder(-stride, -0.1, 0.0, leg_h, 0.075 * h / 1.75, legs)
    b.ellipsoid((0.0, 0.0, leg_h + 0.17 * h), (0.11 * h / 1.75 + 0.05, 0.2 * h / 1.75, 0.19 * h), top)
    for sy in (-1, 1):
        b.cylinder(0.0, sy * 0.25 * h / 1.75, leg_h + 0.05 * h, leg_h + 0.33 * h, 0.045, top)
    b.ellipsoid((0.0, 0.0, h - 0.065 * h), (0.065 * h, 0.058 * h, 0.065 * h), skin)
    return b


def build_motorcycle(rng, mt, rider: bool = True):
    l = rng.uniform(1.9, 2.3)
    body = mt.add(_jit(rng, CAR_COLOURS[rng.integers(len(CAR_COLOURS))]), 0.5)
    dark = mt.add((0.06, 0.06, 0.06), 0.1)
    b = PartsBuilder(mt)
    r = 0.31
    b.wheel(l / 2 - r, 0.0, r, 0.14, dark)
    b.wheel(-l / 2 + r, 0.0, r, 0.14, dark)
    b.ellipsoid((0.0, 0.0, 0.6), (0.55, 0.2, 0.2), body)
    b.box(0.42, 0.55, -0.35, 0.35, 0.9, 1.02, dark)  # handlebar
    if rider:
        cloth = mt.add(_jit(rng, CLOTHES[rng.integers(len(CLOTHES))]), 0.3)
        helmet = mt.add(_jit(rng, (0.9, 0.9, 0.9), 0.1), 0.6)
        b.ellipsoid((-0.1, 0.0, 1.1), (0.2, 0.22, 0.33), cloth)
        b.ellipsoid((0.0, 0.0, 1.55), (0.14, 0.13, 0.14), helmet)
    return b


def build_bicycle(rng, mt, rider: bool):
    frame = mt.add(_jit(rng, CAR_COLOURS[rng.integers(len(CAR_COLOURS))]), 0.45)
    dark = mt.add((0.08, 0.08, 0.08), 0.1)
    b = PartsBuilder(mt)
    r = 0.34
    b.wheel(0.52, 0.0, r, 0.05, dark)
    b.wheel(-0.52, 0.0, r, 0.05, dark)
    b.box(-0.5, 0.45, -0.03, 0.03, 0.45, 0.55, frame)
    b.add(BOX, (0.0, 0.0, 0.55), (0.3, 0.025, 0.025), frame, _rot_y(-0.9))
    b.box(0.38, 0.5, -0.3, 0.3, 0.9, 1.02, dark)
    b.box(-0.25, -0.05, -0.07, 0.07, 0.85, 0.9, dark)
    if rider:
        cloth = mt.add(_jit(rng, CLOTHES[rng.integers(len(CLOTHES))]), 0.3)
        skin = mt.add(_jit(rng, SKIN[rng.integers(len(SKIN))], 0.03), 0.4)
        b.cylinder(-0.05, 0.12, 0.45, 0.9, 0.06, cloth)
        b.cylinder(-0.05, -0.12, 0.45, 0.9, 0.06, cloth)
        b.ellipsoid((0.0, 0.0, 1.2), (0.17, 0.2, 0.3), cloth)
        b.ellipsoid((0.1, 0.0, 1.6), (0.11, 0.1, 0.12), skin)
    return b


def build_traffic_cone(rng, mt):
    h = rng.uniform(0.5, 0.9)
    orange = mt.add(_jit(rng, (1.0, 0.4, 0.0), 0.03), 0.9, pattern=2)
    base = mt.add((0.1, 0.1, 0.1), 0.2)
    b = PartsBuilder(mt)
    r = 0.14 * h / 0.7
    b.box(-1.6 * r, 1.6 * r, -1.6 * r, 1.6 * r, 0.0, 0.04, base)
    n = 4
    for i in range(n):
        z0 = 0.04 + (h - 0.04) * i / n
        z1 = 0.04 + (h - 0.04) * (i + 1) / n
        b.cylinder(0.0, 0.0, z0, z1, r * (1.0 - 0.8 * (i + 0.5) / n), orange)
    return b


def build_barrier(rng, mt):
    l, w, h = rng.uniform(1.5, 2.6), rng.uniform(0.35, 0.6), rng.uniform(0.8, 1.1)
    kind = rng.integers(2)
    col = mt.add((0.9, 0.15, 0.1), 0.8, pattern=2) if kind == 0 else mt.add(_jit(rng, (0.7, 0.7, 0.68), 0.03), 0.45)
    b = PartsBuilder(mt)
    b.box(-l / 2, l / 2, -w / 2, w / 2, 0.0, 0.25 * h, col)
    b.box(-l / 2, l / 2, -w / 4, w / 4, 0.25 * h, h, col)
    return b


def build_tire(rng, mt):
    r = rng.uniform(0.3, 0.42)
    dark = mt.add((0.05, 0.05, 0.05), 0.1)
    b = PartsBuilder(mt)
    if rng.random() < 0.5:
        b.cylinder(0.0, 0.0, 0.0, rng.uniform(0.18, 0.28), r, dark)  # lying flat
    else:
        b.wheel(0.0, 0.0, r, rng.uniform(0.18, 0.28), dark)  # standing
    return b


def build_debris(rng, mt):
    col = mt.add(_jit(rng, [(0.45, 0.35, 0.25), (0.5, 0.5, 0.5), (0.3, 0.25, 0.2)][rng.integers(3)], 0.05), 0.3)
    b = PartsBuilder(mt)
    for _ in range(rng.integers(2, 5)):
        cx, cy = rng.uniform(-0.4, 0.4, 2)
        hx, hy, hz = rng.uniform(0.08, 0.3), rng.uniform(0.08, 0.25), rng.uniform(0.04, 0.15)
        b.add(BOX, (cx, cy, hz), (hx, hy, hz), col, _rot_z(rng.uniform(0, np.pi)))
    return b


def build_stroller(rng, mt):
    col = mt.add(_jit(rng, CLOTHES[rng.integers(len(CLOTHES))]), 0.35)
    dark = mt.add((0.07, 0.07, 0.07), 0.1)
    b = PartsBuilder(mt)
    for sx in (-0.3, 0.3):
        for sy in (-0.25, 0.25):
            b.wheel(sx, sy, 0.1, 0.04, dark)
    b.box(-0.35, 0.35, -0.27, 0.27, 0.3, 0.75, col)
    b.ellipsoid((0.1, 0.0, 0.8), (0.3, 0.27, 0.2), col)
    b.add(BOX, (-0.45, 0.0, 0.85), (0.03, 0.25, 0.2), dark, _rot_y(0.3))
    return b


def build_traffic_sign(rng, mt):
    pole = mt.add((0.6, 0.6, 0.62), 0.5)
    plate = mt.add(_jit(rng, [(0.85, 0.1, 0.1), (0.1, 0.3, 0.8), (0.95, 0.85, 0.1)][rng.integers(3)], 0.02), 1.0, pattern=3)
    b = PartsBuilder(mt)
    ph = rng.uniform(2.0, 2.6)
    b.cylinder(0.0, 0.0, 0.0, ph, 0.04, pole)
    s = rng.uniform(0.3, 0.4)
    b.box(0.05, 0.09, -s, s, ph - 0.1, ph - 0.1 + 2 * s, plate)
    return b


def build_trash_can(rng, mt):
    col = mt.add(_jit(rng, [(0.1, 0.4, 0.15), (0.2, 0.2, 0.22), (0.2, 0.3, 0.6)][rng.integers(3)], 0.03), 0.35)
    b = PartsBuilder(mt)
    if rng.random() < 0.5:
        b.box(-0.3, 0.3, -0.3, 0.3, 0.0, rng.uniform(0.9, 1.1), col)
    else:
        b.cylinder(0.0, 0.0, 0.0, rng.uniform(0.8, 1.0), 0.28, col)
    return b


def build_animal(rng, mt):
    col = mt.add(_jit(rng, [(0.55, 0.35, 0.15), (0.15, 0.12, 0.1), (0.85, 0.8, 0.7)][rng.integers(3)], 0.04), 0.3)
    b = PartsBuilder(mt)
    s = rng.uniform(0.8, 1.15)
    for sx in (-0.25, 0.25):
        for sy in (-0.08, 0.08):
            b.cylinder(sx * s, sy * s, 0.0, 0.3 * s, 0.035 * s, col)
    b.ellipsoid((0.0, 0.0, 0.38 * s), (0.35 * s, 0.12 * s, 0.12 * s), col)
    b.ellipsoid((0.38 * s, 0.0, 0.55 * s), (0.12 * s, 0.08 * s, 0.09 * s), col)
    return b


BUILDERS: Dict[str, Callable] = {
    "car": build_car, "truck": build_truck, "bus": build_bus, "trailer": build_trailer,
    "construction_vehicle": build_construction_vehicle,
    "pedestrian": build_pedestrian, "child": lambda rng, mt: build_pedestrian(rng, mt, child=True),
    "motorcycle": build_motorcycle, "bicycle": lambda rng, mt: build_bicycle(rng, mt, rider=False),
    "traffic_cone": build_traffic_cone, "barrier": build_barrier, "tire": build_tire, "debris": build_debris,
    "stroller": build_stroller, "traffic_sign": build_traffic_sign, "trash_can": build_trash_can, "animal": build_animal,
}


# ---------------------------------------------------------------------------------------------
@dataclass
class Road:
    amp: float  # centre-line amplitude [m]
    period: float  # [m]
    phase: float
    sx: float  # ground slope along x
    sy: float  # ground slope along y

    def centre_y(self, x):
        return self.amp * np.sin(2 * np.pi * np.asarray(x) / self.period + self.phase)

    def heading(self, x):
        k = 2 * np.pi / self.period
        return np.arctan(self.amp * k * np.cos(k * np.asarray(x) + self.phase))

    def ground_z(self, x, y):
        return self.sx * np.asarray(x) + self.sy * np.asarray(y)

    def to_global(self, x, lat):
        """Point at road coordinate x and lateral offset (normal to the centre line, approximately)."""
        x = np.asarray(x, dtype=np.float64)
        h = self.heading(x)
        gx = x - np.sin(h) * lat
        gy = self.centre_y(x) + np.cos(h) * lat
        return gx, gy

    def lateral(self, gx, gy):
        """Approximate lateral offset of global points from the centre line."""
        return (np.asarray(gy) - self.centre_y(gx)) * np.cos(self.heading(gx))

    @property
    def plane(self) -> Tuple[np.ndarray, float]:
        n = np.array([-self.sx, -self.sy, 1.0])
        n /= np.linalg.norm(n)
        return n, 0.0


@dataclass
class WorldObject:
    kind: str
    category: str
    parts: Primitives  # object frame
    size: np.ndarray  # (3,) l, w, h of the GT box
    x0: float  # road coordinate at t=0
    lat: float  # lateral offset
    speed: float  # along +x of the road [m/s] (negative: against)
    yaw_offset: float  # heading relative to the road direction
    attribute: str
    bob: float = 0.0  # pedestrians: walking phase

    @property
    def moving(self) -> bool:
        return abs(self.speed) > 0.05


@dataclass
class EgoPath:
    v0: float
    dv: float
    period: float
    phase: float
    weave_amp: float
    weave_period: float

    def x(self, t):
        w = 2 * np.pi / self.period
        return self.v0 * t - self.dv / w * (np.cos(w * t + self.phase) - np.cos(self.phase))

    def lat(self, x):
        return EGO_LAT + self.weave_amp * np.sin(2 * np.pi * x / self.weave_period)

    def dlat_dx(self, x):
        k = 2 * np.pi / self.weave_period
        return self.weave_amp * k * np.cos(k * x)


@dataclass
class World:
    """One scene's world: static structure (global frame) and objects with trajectories."""

    seed: int
    duration: float
    road: Road
    ego: EgoPath
    materials: MaterialTable
    static: Primitives
    objects: List[WorldObject]
    sun: np.ndarray  # (3,) unit direction towards the sun
    sky_rgb: Tuple[float, float, float]
    _cache: Dict = field(default_factory=dict, repr=False)

    # --- ego
    def ego_pose(self, t: float) -> Tuple[np.ndarray, np.ndarray]:
        """(R (3,3), translation (3,)) ego -> global at time t [s from scene start]."""
        x = float(self.ego.x(t))
        lat = float(self.ego.lat(x))
        gx, gy = self.road.to_global(x, lat)
        yaw = float(self.road.heading(x) + np.arctan(self.ego.dlat_dx(x)))
        gz = float(self.road.ground_z(gx, gy))
        # Yaw only: the sensor frames stay level and the slope shows as a tilted ground plane, so
        # upright annotations stay upright (yaw-only) in the LiDAR frame.
        return _rot_z(yaw), np.array([gx, gy, gz])

    # --- objects
    def _object_arrays(self) -> Dict[str, np.ndarray]:
        if "obj" not in self._cache:
            objs = self.objects
            parts = Primitives.concat([o.parts for o in objs])
            parts.owner = np.concatenate([np.full(len(o.parts), i, dtype=np.int32) for i, o in enumerate(objs)]) if objs else parts.owner
            self._cache["obj"] = {
                "x0": np.array([o.x0 for o in objs], dtype=np.float64),
                "lat": np.array([o.lat for o in objs], dtype=np.float64),
                "speed": np.array([o.speed for o in objs], dtype=np.float64),
                "yaw_offset": np.array([o.yaw_offset for o in objs], dtype=np.float64),
                "size": np.array([o.size for o in objs], dtype=np.float64).reshape(-1, 3),
                "parts": parts,
            }
        return self._cache["obj"]

    def object_boxes(self, t: float) -> np.ndarray:
        """(M, 7) GT boxes in the global frame at time t: x, y, z, l, w, h, yaw."""
        a = self._object_arrays()
        x = a["x0"] + a["speed"] * t
        gx, gy = self.road.to_global(x, a["lat"])
        yaw = self.road.heading(x) + a["yaw_offset"]
        l, w, h = a["size"][:, 0], a["size"][:, 1], a["size"][:, 2]
        c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
        sl = np.array([1, 1, -1, -1])[None, :] * (l[:, None] / 2)
        sw = np.array([1, -1, 1, -1])[None, :] * (w[:, None] / 2)
        fx = gx[:, None] + c * sl - s * sw
        fy = gy[:, None] + s * sl + c * sw
        gz = self.road.ground_z(fx, fy).max(axis=1)  # rests on the highest footprint corner
        return np.stack([gx, gy, gz + h / 2, l, w, h, yaw], axis=1)

    def primitives(self, t: float, near: Optional[np.ndarray] = None, radius: float = 1e9) -> Primitives:
        """All primitives in the global frame at time t (objects posed), optionally only near a point."""
        boxes = self.object_boxes(t)
        parts = self._object_arrays()["parts"]
        if near is not None:
            d = np.linalg.norm(boxes[:, :2] - near[None, :2], axis=1)
            keep_obj = d < radius + np.linalg.norm(boxes[:, 3:5], axis=1)
            parts = parts.subset(keep_obj[parts.owner])
        o = parts.owner
        cy, sy = np.cos(boxes[o, 6]), np.sin(boxes[o, 6])
        Rz = np.zeros((len(o), 3, 3))
        Rz[:, 0, 0], Rz[:, 0, 1], Rz[:, 1, 0], Rz[:, 1, 1], Rz[:, 2, 2] = cy, -sy, sy, cy, 1.0
        posed = Primitives(kind=parts.kind, R=np.einsum("pij,pjk->pik", Rz, parts.R),
                           c=np.einsum("pij,pj->pi", Rz, parts.c) + boxes[o, :3], half=parts.half,
                           material=parts.material, owner=o)
        st = self.static
        if near is not None:
            d = np.linalg.norm(st.c[:, :2] - near[None, :2], axis=1) - st.radius
            st = st.subset(d < radius)
        return Primitives.concat([st, posed])


# ---------------------------------------------------------------------------------------------
def _static_box(road: Road, x: float, lat: float, along: float, across: float, z0: float, z1: float,
                mat: int, yaw_extra: float = 0.0):
    gx, gy = road.to_global(x, lat)
    yaw = float(road.heading(x)) + yaw_extra
    gz = float(road.ground_z(gx, gy))
    return (BOX, _rot_z(yaw), np.array([gx, gy, gz + (z0 + z1) / 2]), np.array([along / 2, across / 2, (z1 - z0) / 2]), mat)


def build_world(seed: int, duration: float, density: float = 1.0) -> World:
    """Build a scene's world from a seed (pure function of its arguments)."""
    rng = np.random.default_rng(seed)
    road = Road(
        amp=float(rng.uniform(0.0, 8.0)), period=float(rng.uniform(300.0, 600.0)), phase=float(rng.uniform(0, 2 * np.pi)),
        sx=float(rng.uniform(-0.03, 0.03)), sy=float(rng.uniform(-0.008, 0.008)),
    )
    ego = EgoPath(
        v0=float(rng.uniform(5.0, 11.0)), dv=float(rng.uniform(0.0, 2.0)), period=float(rng.uniform(15, 40)),
        phase=float(rng.uniform(0, 2 * np.pi)), weave_amp=float(rng.uniform(0.0, 0.35)), weave_period=float(rng.uniform(80, 160)),
    )
    mt = MaterialTable()
    x_end = float(ego.x(duration))
    x_lo, x_hi = -90.0, x_end + 90.0
    static = []
    poles: List[Tuple[float, int]] = []  # street lights (road x, side): pedestrians stand beside some
    # kerbs: 10 m segments on both sides
    kerb = mt.add((0.62, 0.62, 0.6), 0.45)
    for x in np.arange(x_lo, x_hi, 10.0):
        for side in (-1, 1):
            static.append(_static_box(road, x + 5.0, side * (PARK_HALF + 0.12), 10.0, 0.24, -0.05, 0.15, kerb))
    # buildings, walls, vegetation, poles
    trunk = mt.add((0.35, 0.25, 0.15), 0.3)
    pole = mt.add((0.55, 0.55, 0.58), 0.5)
    lamp = mt.add((0.95, 0.95, 0.85), 0.7)
    for side in (-1, 1):
        x = x_lo + rng.uniform(0, 10)
        while x < x_hi:
            kind = rng.choice(["building", "building", "wall", "trees", "fence", "gap"], p=[0.3, 0.2, 0.15, 0.15, 0.12, 0.08])
            length = float(rng.uniform(10, 30))
            if kind == "building":
                col = _jit(rng, [(0.75, 0.65, 0.55), (0.6, 0.6, 0.62), (0.7, 0.45, 0.35), (0.85, 0.82, 0.75), (0.45, 0.5, 0.55)][rng.integers(5)], 0.04)
                m = mt.add(col, float(rng.uniform(0.3, 0.6)), pattern=1)
                depth = float(rng.uniform(8, 20))
                lat = side * (SIDEWALK_HALF + 0.5 + depth / 2 + rng.uniform(0, 2))
                static.append(_static_box(road, x + length / 2, lat, length, depth, 0.0, float(rng.uniform(5, 22)), m))
            elif kind == "wall":
                m = mt.add(_jit(rng, (0.55, 0.5, 0.45), 0.05), 0.4)
                lat = side * (SIDEWALK_HALF + 0.4)
                static.append(_static_box(road, x + length / 2, lat, length, 0.3, 0.0, float(rng.uniform(1.0, 2.5)), m))
                hedge = mt.add(_jit(rng, (0.2, 0.45, 0.15), 0.05), 0.5)
                for xx in np.arange(x + 2, x + length - 1, 4.0):
                    gx, gy = road.to_global(xx, side * (SIDEWALK_HALF + 2.5))
                    gz = float(road.ground_z(gx, gy))
                    static.append((ELLIPSOID, np.eye(3), np.array([gx, gy, gz + 1.8]), np.array([2.2, 1.6, 1.8]), hedge))
            elif kind == "fence":  # posts and two rails at the back of the sidewalk: see-through clutter
                m = mt.add(_jit(rng, (0.35, 0.35, 0.38), 0.05), 0.5)
                lat = side * (SIDEWALK_HALF + 0.3)
                fh = float(rng.uniform(1.0, 1.6))
                for xx in np.arange(x, x + length, 2.5):
                    gx, gy = road.to_global(xx, lat)
                    gz = float(road.ground_z(gx, gy))
                    static.append((CYLINDER, np.eye(3), np.array([gx, gy, gz + fh / 2]), np.array([0.05, 0.05, fh / 2]), m))
                for zr in (0.35 * fh, 0.9 * fh):
                    static.append(_static_box(road, x + length / 2, lat, length, 0.04, zr - 0.04, zr + 0.04, m))
            elif kind == "trees":
                for xx in np.arange(x + 2, x + length - 1, float(rng.uniform(5, 9))):
                    lat = side * (SIDEWALK_HALF + rng.uniform(0.0, 3.0))
                    gx, gy = road.to_global(xx, lat)
                    gz = float(road.ground_z(gx, gy))
                    th = float(rng.uniform(2.0, 3.5))
                    static.append((CYLINDER, np.eye(3), np.array([gx, gy, gz + th / 2]), np.array([0.15, 0.15, th / 2]), trunk))
                    crown = mt.add(_jit(rng, (0.15, 0.42, 0.12), 0.06), 0.55)
                    cr = float(rng.uniform(1.5, 3.0))
                    static.append((ELLIPSOID, np.eye(3), np.array([gx, gy, gz + th + cr * 0.8]), np.array([cr, cr, cr * 0.9]), crown))
            x += length + float(rng.uniform(1, 6))
        # street lights at the back of the sidewalk, arms over the parking strip
        for xx in np.arange(x_lo + rng.uniform(0, 30), x_hi, float(rng.uniform(25, 40))):
            poles.append((float(xx), side))
            gx, gy = road.to_global(xx, side * (SIDEWALK_HALF - 0.3))
            gz = float(road.ground_z(gx, gy))
            ph = float(rng.uniform(7, 9))
            static.append((CYLINDER, np.eye(3), np.array([gx, gy, gz + ph / 2]), np.array([0.1, 0.1, ph / 2]), pole))
            static.append(_static_box(road, xx, side * (SIDEWALK_HALF - 3.0), 0.3, 5.4, ph - 0.15, ph, lamp))
    sp = Primitives(
        kind=np.array([s[0] for s in static], dtype=np.int8),
        R=np.stack([s[1] for s in static]),
        c=np.stack([s[2] for s in static]),
        half=np.stack([s[3] for s in static]),
        material=np.array([s[4] for s in static], dtype=np.int32),
        owner=np.full(len(static), -1, dtype=np.int32),
    )

    objects: List[WorldObject] = []

    def add(kind: str, x0: float, lat: float, speed: float, yaw_offset: float, attribute: str):
        b = BUILDERS[kind](rng, mt)
        parts, size = b.finish(margin=0.05 if kind in ("car", "truck", "bus", "trailer", "construction_vehicle") else 0.03)
        objects.append(WorldObject(kind, CATEGORY_OF_KIND[kind], parts, size, float(x0), float(lat), float(speed),
                                   float(yaw_offset), attribute))

    # moving traffic: one speed per lane, vehicles spaced along it
    for lane in (-5.25, 1.75, 5.25):
        direction = 1.0 if lane < 0 else -1.0
        v = float(rng.uniform(4.0, 13.0))
        x = x_lo - (v * duration if direction > 0 else 0.0) + rng.uniform(0, 20)
        x_stop = x_hi + (v * duration if direction < 0 else 0.0)
        while x < x_stop:
            kind = rng.choice(["car", "truck", "bus", "motorcycle", "car", "car", "trailer"], p=[0.5, 0.12, 0.08, 0.1, 0.1, 0.05, 0.05])
            add(kind, x, lane + rng.normal(0, 0.15), direction * v, 0.0 if direction > 0 else np.pi,
                "cycle.with_rider" if kind == "motorcycle" else "vehicle.moving")
            x += float(rng.uniform(18, 45)) / density
    # cyclists in the bike lanes, going with the traffic
    for _ in range(int(rng.integers(1, 4) * density)):
        side = rng.choice([-1, 1])
        v = float(rng.uniform(3, 6))
        b = build_bicycle(rng, mt, rider=True)
        parts, size = b.finish(margin=0.03)
        objects.append(WorldObject("bicycle", CATEGORY_OF_KIND["bicycle"], parts, size, float(rng.uniform(x_lo, x_hi)),
                                   float(side * BIKE_LAT), float(-side * v), 0.0 if side < 0 else np.pi, "cycle.with_rider"))
    # parking strips: parked vehicles, construction zones, clutter
    for side in (-1, 1):
        x = x_lo + rng.uniform(0, 10)
        while x < x_hi:
            r = rng.random()
            if r < 0.45:
                kind = rng.choice(["car", "car", "car", "truck", "trailer"])
                add(kind, x, side * 9.75, 0.0, (0.0 if rng.random() < 0.8 else np.pi) + rng.normal(0, 0.03), "vehicle.parked")
                length = float(objects[-1].size[0])
                if rng.random() < 0.3:  # hard case: a pedestrian stepping out 0.3-0.6 m in front of / behind it
                    d = rng.choice([-1.0, 1.0])
                    add("pedestrian", x + d * (length / 2 + rng.uniform(0.3, 0.6) + 0.3), side * rng.uniform(8.9, 9.6),
                        0.0, rng.uniform(0, 2 * np.pi), "pedestrian.standing")
                    x += 1.2 if d > 0 else 0.0
                x += length + rng.uniform(1.5, 8)
            elif r < 0.6:
                # construction zone: cones + barriers (+ a construction vehicle)
                n = int(rng.integers(3, 7))
                cone_step = 2.0 if rng.random() < 0.5 else float(rng.uniform(0.7, 1.4))  # hard case: 0.3-1 m gaps
                for k in range(n):
                    add("traffic_cone", x + cone_step * k, side * (8.8 + rng.uniform(0, 0.3)), 0.0, rng.uniform(0, 2 * np.pi), "")
                bx = x + 0.5
                for k in range(int(rng.integers(1, 5))):  # a row of barriers 0.3-1 m apart
                    b = BUILDERS["barrier"](rng, mt)
                    parts, size = b.finish(margin=0.03)
                    bx += float(size[0]) / 2
                    objects.append(WorldObject("barrier", CATEGORY_OF_KIND["barrier"], parts, size, float(bx),
                                               float(side * 10.4), 0.0, float(rng.normal(0, 0.05)), ""))
                    bx += float(size[0]) / 2 + float(rng.uniform(0.3, 1.0))
                end = max(x + cone_step * (n - 1), bx)
                if rng.random() < 0.6:
                    add("construction_vehicle", end + 5, side * 9.6, 0.0, rng.normal(0, 0.1), "vehicle.parked")
                    end += 12
                x = end + 5
            elif r < 0.72:
                add(rng.choice(["tire", "debris"]), x, side * rng.uniform(9.0, 10.4), 0.0, rng.uniform(0, 2 * np.pi), "")
                x += float(rng.uniform(3, 10))
            else:
                x += float(rng.uniform(4, 15)) / density
    # sidewalks: pedestrians (moving and standing), strollers, parked bicycles, bins, signs, animals
    for side in (-1, 1):
        x = x_lo + rng.uniform(0, 5)
        while x < x_hi:
            r = rng.random()
            if r < 0.3:
                kind = "child" if rng.random() < 0.12 else "pedestrian"
                d = rng.choice([-1.0, 1.0])
                add(kind, x, side * (13.5 + d * 0.5), d * rng.uniform(0.9, 1.7), 0.0 if d > 0 else np.pi, "pedestrian.moving")
            elif r < 0.42:
                add("pedestrian", x, side * rng.uniform(14.8, 15.2), 0.0, rng.uniform(0, 2 * np.pi), "pedestrian.standing")
            elif r < 0.5:
                d = rng.choice([-1.0, 1.0])
                lat = side * (13.5 + d * 0.5)
                v = d * rng.uniform(0.9, 1.3)
                add("stroller", x, lat, v, 0.0 if d > 0 else np.pi, "")
                add("pedestrian", x - d * 1.1, lat, v, 0.0 if d > 0 else np.pi, "pedestrian.moving")
            elif r < 0.6:
                add("bicycle", x, side * 11.8, 0.0, rng.normal(0, 0.1), "cycle.without_rider")
            elif r < 0.7:
                add("trash_can", x, side * 11.75, 0.0, rng.uniform(0, 2 * np.pi), "")
            elif r < 0.8:
                add("traffic_sign", x, side * 11.6, 0.0, 0.0 if side < 0 else np.pi, "")
            elif r < 0.85:
                add("animal", x, side * rng.uniform(12.2, 12.5), rng.choice([0.0, 1.2]), 0.0, "")
            elif r < 0.88:
                add("motorcycle", x, side * 11.9, 0.0, 0.0, "cycle.without_rider")
                objects[-1].parts, objects[-1].size = build_motorcycle(rng, mt, rider=False).finish(0.03)
            x += float(rng.uniform(2.0, 9.0)) / density
    for xx, side in poles:  # hard case: a pedestrian waiting 0.3-0.7 m from a street light
        if rng.random() < 0.35:
            add("pedestrian", xx + rng.choice([-1.0, 1.0]) * (0.1 + rng.uniform(0.3, 0.7) + 0.3),
                side * (SIDEWALK_HALF - 0.3), 0.0, rng.uniform(0, 2 * np.pi), "pedestrian.standing")
    sun = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), 1.0])
    sun /= np.linalg.norm(sun)
    sky = tuple(float(c) for c in _jit(rng, (0.55, 0.7, 0.9), 0.05))
    return World(seed=seed, duration=duration, road=road, ego=ego, materials=mt, static=sp, objects=objects, sun=sun, sky_rgb=sky)
