"""A small ray-cast driving sweep for benchmarks and segmentation tests.

Not the synthetic world (that is ``clip2 synth``): one 32-beam spinning LiDAR at 1.84 m over a
gently sloped road with raised sidewalks and kerbs, buildings on both sides, and parametric
objects (cars, trucks, pedestrians, cyclists, cones, poles) as oriented boxes. Returns the
sweep and its ground-truth object boxes, deterministic for a seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

import numpy as np

# (name, l, w, h, weight): sizes in metres, drawn with +-10 % per instance
_OBJECTS = [
    ("car", 4.5, 1.9, 1.6, 8),
    ("truck", 7.5, 2.5, 3.0, 2),
    ("pedestrian", 0.6, 0.6, 1.75, 6),
    ("bicycle", 1.8, 0.6, 1.6, 2),
    ("traffic_cone", 0.4, 0.4, 0.7, 3),
    ("pole", 0.3, 0.3, 4.0, 2),
]


@dataclass
class SweepScene:
    points: np.ndarray  # (N, 5) float32 x, y, z, intensity, ring; LiDAR frame (x forward, y left, z up)
    boxes: np.ndarray  # (M, 7) float64 object boxes, LiDAR frame
    names: List[str]  # (M,) class names
    walls: np.ndarray = field(default_factory=lambda: np.zeros((0, 7)))  # (W, 7) building blocks, LiDAR frame


SENSOR_HEIGHT = 1.84
ROAD_HALF_WIDTH = 6.5
KERB_HEIGHT = 0.15
SLOPE = 0.02  # rise per metre along +x


def _ground_z(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return -SENSOR_HEIGHT + SLOPE * x + np.where(np.abs(y) > ROAD_HALF_WIDTH, KERB_HEIGHT, 0.0)


def _ray_boxes(d: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Distance along unit rays d (R, 3) from the origin to the nearest box hit (inf if none)."""
    best = np.full(d.shape[0], np.inf)
    for b in boxes:
        c, s = np.cos(b[6]), np.sin(b[6])
        o = -b[:3]
        o = np.array([c * o[0] + s * o[1], -s * o[0] + c * o[1], o[2]])
        dl = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], axis=1)
        half = 0.5 * b[3:6]
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (-half - o) / dl
            t2 = (half - o) / dl
        tmin = np.nanmax(np.minimum(t1, t2), axis=1)
        tmax = np.nanmin(np.maximum(t1, t2), axis=1)
        hit = (tmax >= tmin) & (tmax > 0)
        t = np.where(tmin > 0, tmin, tmax)
        best = np.where(hit & (t < best), t, best)
    return best


def _lidar_rays(beams: int, azimuth_steps: int, rng: np.random.Generator):
    """Unit ray directions (R, 3) and ring ids (R,) of the synthetic spinning LiDAR: ``beams`` rings
    from -30.67 to +10.67 degrees, ``azimuth_steps`` per turn with 1 mrad azimuth jitter."""
    elev = np.deg2rad(np.linspace(-30.67, 10.67, beams))
    az = np.linspace(-np.pi, np.pi, azimuth_steps, endpoint=False)
    az = az[None, :] + rng.normal(0, 1e-3, (beams, azimuth_steps))
    el = np.broadcast_to(elev[:, None], az.shape)
    d = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1).reshape(-1, 3)
    ring = np.broadcast_to(np.arange(beams)[:, None], az.shape).reshape(-1)
    return d, ring


def make_sweep(seed: int = 0, n_objects: int = 30, beams: int = 32, azimuth_steps: int = 1100) -> SweepScene:
    """A nuScenes-sized sweep (~35k points with the defaults) and its object boxes."""
    rng = np.random.default_rng(seed)
    names, sizes, weights = zip(*[(o[0], o[1:4], o[4]) for o in _OBJECTS])
    p = np.array(weights, dtype=float) / sum(weights)
    boxes, box_names = [], []
    tries = 0
    while len(boxes) < n_objects and tries < 5000:
        tries += 1
        k = rng.choice(len(names), p=p)
        l, w, h = np.array(sizes[k]) * rng.uniform(0.9, 1.1, 3)
        on_road = names[k] in ("car", "truck", "bicycle", "traffic_cone")
        x = rng.uniform(-45, 45)
        y = rng.uniform(-ROAD_HALF_WIDTH + 1, ROAD_HALF_WIDTH - 1) if on_road else rng.choice([-1, 1]) * rng.uniform(7.0, 10.0)
        if np.hypot(x, y) < 4.0:
            continue
        yaw = (rng.choice([0.0, np.pi]) + rng.normal(0, 0.15)) if on_road else rng.uniform(-np.pi, np.pi)
        z = _ground_z(np.array([x]), np.array([y]))[0] + h / 2
        cand = np.array([x, y, z, l, w, h, yaw])
        if any(np.hypot(*(cand[:2] - b[:2])) < 0.5 * (max(l, w) + max(b[3], b[4])) + 0.6 for b in boxes):
            continue
        boxes.append(cand)
        box_names.append(names[k])
    obj = np.array(boxes).reshape(-1, 7)
    # buildings: long blocks along both sides
    walls = []
    for side in (-1, 1):
        for xc in np.arange(-60, 61, 24):
            walls.append([xc, side * 15.0, 4.0 - SENSOR_HEIGHT, 20.0, 4.0, 8.0 + rng.uniform(0, 4), 0.0])
    walls = np.array(walls)

    d, ring = _lidar_rays(beams, azimuth_steps, rng)

    # ground: road plane, then sidewalk plane where the road hit lies beyond the kerb
    with np.errstate(divide="ignore", invalid="ignore"):
        t_road = -SENSOR_HEIGHT / (d[:, 2] - SLOPE * d[:, 0])
        t_side = (-SENSOR_HEIGHT + KERB_HEIGHT) / (d[:, 2] - SLOPE * d[:, 0])
        t_kerb = ROAD_HALF_WIDTH / np.abs(d[:, 1])
    t_road = np.where(t_road > 0, t_road, np.inf)
    t_side = np.where(t_side > 0, t_side, np.inf)
    y_road = np.abs(t_road * d[:, 1])
    t_ground = np.where(y_road <= ROAD_HALF_WIDTH, t_road, np.where(np.abs(t_side * d[:, 1]) > ROAD_HALF_WIDTH, t_side, t_kerb))
    t = np.minimum(t_ground, np.minimum(_ray_boxes(d, obj), _ray_boxes(d, walls)))
    keep = np.isfinite(t) & (t < 100.0) & (rng.random(t.shape[0]) > 0.04)
    t = t[keep] + rng.normal(0, 0.02, keep.sum())
    xyz = d[keep] * t[:, None]
    intensity = rng.uniform(0, 100, xyz.shape[0])
    pts = np.column_stack([xyz, intensity, ring[keep]]).astype(np.float32)
    return SweepScene(points=pts, boxes=obj, names=box_names, walls=walls)


def scan_boxes(boxes: np.ndarray, beams: int = 32, azimuth_steps: int = 1100, seed: int = 0,
               max_range: float = 100.0) -> np.ndarray:
    """A spinning-LiDAR sweep (make_sweep's sensor: ``beams`` rings from -30.67 to +10.67 degrees,
    1.84 m above a flat road) of the given (M, 7) boxes, for test layouts; (N, 5) float32 points
    x, y, z, intensity, ring, 2 cm range noise, no dropouts."""
    rng = np.random.default_rng(seed)
    d, ring = _lidar_rays(beams, azimuth_steps, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_road = -SENSOR_HEIGHT / d[:, 2]
    t_road = np.where(t_road > 0, t_road, np.inf)
    t = np.minimum(t_road, _ray_boxes(d, np.asarray(boxes, dtype=np.float64).reshape(-1, 7)))
    keep = np.isfinite(t) & (t < max_range)
    t = t[keep] + rng.normal(0, 0.02, keep.sum())
    xyz = d[keep] * t[:, None]
    return np.column_stack([xyz, rng.uniform(0, 100, xyz.shape[0]), ring[keep]]).astype(np.float32)


def write_sweep_proxies(out, seeds, rng_seed: int = 0, emb_dim: int = 0, min_points: int = 10):
    """Proxy shards from synthetic sweeps: the non-ground points inside each GT box, labelled by its
    class ("_" -> " "); with ``emb_dim`` a random stand-in image embedding per proxy (for timing and
    for exercising the instance loss, not for learning). Returns the folder."""
    from pathlib import Path

    from clip2_core.geometry import points_in_boxes
    from clip2_core.mining.shards import ShardWriter, write_index
    from clip2_core.types import Proxy

    out = Path(out)
    rng = np.random.default_rng(rng_seed)
    w = ShardWriter(out, shard_size=64)
    for s in seeds:
        scene = make_sweep(seed=s)
        inside = points_in_boxes(scene.points, scene.boxes)
        proxies = []
        for j, name in enumerate(scene.names):
            pts = scene.points[inside[:, j]]
            pts = pts[pts[:, 2] > scene.boxes[j, 2] - scene.boxes[j, 5] / 2 + 0.1]  # drop ground hits
            if len(pts) >= min_points:
                emb = rng.normal(size=emb_dim).astype(np.float32) if emb_dim else None
                proxies.append(Proxy(text=name.replace("_", " "), points=pts, image_embedding=emb, provenance={"seed": s}))
        w.write_sample(f"sweep{s}", proxies)
    w.close()
    write_index(out)
    return out
