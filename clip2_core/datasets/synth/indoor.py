"""Synthetic indoor RGB-D frames (SUN RGB-D-like rooms) for tests and demos.

A room -- floor, back wall, side walls -- seen by a tilted depth camera, with furniture of the
SUN RGB-D classes built from boxes: beds with headboards, tables and desks on legs, chairs with
backs, sofas with arms, night stands, dressers, bookshelves with shelves, toilets, bathtubs. At
least one piece stands against the back wall (the hard case for frustum mining: a wall right
behind the object). Rendered with the synthetic world's ray caster
(:mod:`clip2_core.datasets.synth.raycast`): depth with range-dependent noise, a shaded colour
image, the 3D boxes and the 2D boxes of what is visible. :func:`write_room` stores a frame in the
SUN RGB-D release layout (:func:`clip2_core.datasets.sunrgbd.write_frame`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from clip2_core.datasets.synth.raycast import BOX, CameraGrid, Primitives, cast
from clip2_core.types import Box3D

# parts of each class in its own frame (x along the length, y across, z up from the floor):
# (x0, x1, y0, y1, z0, z1) in units of (l, w, h); sizes (l, w, h) ranges in metres
_LEG = 0.06
FURNITURE: Dict[str, Tuple[Tuple[Tuple[float, float], ...], Tuple[Tuple[float, ...], ...]]] = {
    "bed": (((1.9, 2.2), (1.2, 1.7), (0.9, 1.1)),
            ((0, 1, 0, 1, 0, 0.5), (0, 0.05, 0, 1, 0, 1.0))),
    "table": (((0.9, 1.6), (0.7, 1.0), (0.7, 0.78)),
              ((0, 1, 0, 1, 0.93, 1.0), (0, _LEG, 0, _LEG, 0, 0.93), (1 - _LEG, 1, 0, _LEG, 0, 0.93),
               (0, _LEG, 1 - _LEG, 1, 0, 0.93), (1 - _LEG, 1, 1 - _LEG, 1, 0, 0.93))),
    "desk": (((1.1, 1.5), (0.55, 0.75), (0.72, 0.78)),
             ((0, 1, 0, 1, 0.94, 1.0), (0, 0.4, 0, 1, 0, 0.94), (1 - _LEG, 1, 0, 1, 0, 0.94))),
    "chair": (((0.45, 0.55), (0.45, 0.55), (0.8, 1.0)),
              ((0, 1, 0, 1, 0.45, 0.52), (0, 0.12, 0, 1, 0.52, 1.0), (0, 0.1, 0, 0.1, 0, 0.45),
               (0.9, 1, 0, 0.1, 0, 0.45), (0, 0.1, 0.9, 1, 0, 0.45), (0.9, 1, 0.9, 1, 0, 0.45))),
    "sofa": (((1.8, 2.3), (0.8, 1.0), (0.75, 0.9)),
             ((0, 1, 0, 1, 0, 0.5), (0, 0.25, 0, 1, 0.5, 1.0), (0.25, 1, 0, 0.1, 0.5, 0.75), (0.25, 1, 0.9, 1, 0.5, 0.75))),
    "night_stand": (((0.4, 0.55), (0.35, 0.5), (0.5, 0.7)),
                    ((0, 1, 0, 1, 0, 1),)),
    "dresser": (((0.9, 1.4), (0.45, 0.55), (0.8, 1.1)),
                ((0, 1, 0, 1, 0.05, 1), (0, 1, 0, 0.05, 0, 0.05), (0, 1, 0.95, 1, 0, 0.05))),
    "bookshelf": (((0.8, 1.2), (0.3, 0.4), (1.6, 2.0)),
                  ((0, 1, 0, 0.05, 0, 1), (0, 1, 0.95, 1, 0, 1), (0, 0.05, 0, 1, 0, 1), (0.95, 1, 0, 1, 0, 1),
                   (0.05, 0.95, 0, 1, 0.0, 0.03), (0.05, 0.95, 0, 1, 0.33, 0.36), (0.05, 0.95, 0, 1, 0.66, 0.69),
                   (0.05, 0.95, 0, 1, 0.97, 1.0))),
    "toilet": (((0.65, 0.75), (0.38, 0.45), (0.75, 0.85)),
               ((0.2, 1, 0.1, 0.9, 0, 0.5), (0, 0.2, 0, 1, 0.3, 1))),
    "bathtub": (((1.5, 1.8), (0.7, 0.8), (0.5, 0.6)),
                ((0, 1, 0, 0.08, 0, 1), (0, 1, 0.92, 1, 0, 1), (0, 0.05, 0, 1, 0, 1), (0.95, 1, 0, 1, 0, 1),
                 (0, 1, 0, 1, 0, 0.15))),
}
PALETTE = [(0.55, 0.35, 0.2), (0.8, 0.8, 0.75), (0.3, 0.3, 0.35), (0.6, 0.15, 0.15), (0.2, 0.35, 0.55),
           (0.85, 0.7, 0.45), (0.25, 0.45, 0.25)]
WALL, FLOOR = (0.82, 0.8, 0.74), (0.45, 0.38, 0.3)


@dataclass
class Room:
    """One rendered RGB-D frame."""

    image: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 metres along the optical axis (0: no return)
    K: np.ndarray  # (3, 3) toolbox intrinsics (1-based pixel grid)
    extrinsics: np.ndarray  # (3, 3) camera -> gravity-aligned (optical axes)
    boxes: List[Box3D]  # upright frame
    boxes_2d: List[np.ndarray] = field(default_factory=list)  # (4,) x0, y0, x1, y1 of each box's visible pixels (NaN: unseen)
    against_wall: List[int] = field(default_factory=list)  # indices of boxes standing against the back wall
    owner: Optional[np.ndarray] = None  # (H, W) int32 the box each pixel sees (-1: floor or wall; ground truth for mining)


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def make_room(seed: int, width: int = 320, height: int = 240, n_objects: int = 3,
              classes: Sequence[str] = tuple(FURNITURE)) -> Room:
    """A random room with ``n_objects`` pieces of furniture (the first against the back wall)."""
    rng = np.random.default_rng(seed)
    f = 0.82 * width
    K_grid = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])
    cam_h = rng.uniform(1.0, 1.5)
    pitch = np.deg2rad(rng.uniform(12, 28))  # looking down
    # upright camera: y forward tilted down by pitch; optical = P^T R_pitch^T upright
    c, s = np.cos(pitch), np.sin(pitch)
    R_pitch = np.array([[1, 0, 0], [0, c, s], [0, -s, c]])  # upright-from-level rotation (about x, nose down)
    P = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])
    rtilt = R_pitch
    T_up_to_opt = P.T @ rtilt.T
    back, left, right = rng.uniform(3.6, 4.6), -rng.uniform(1.8, 2.6), rng.uniform(1.8, 2.6)
    floor = -cam_h
    parts = []  # (centre_up, half, R_up, colour, owner)
    t = 0.05
    parts.append((np.array([0.0, back / 2, floor - t]), np.array([6.0, back, t]), np.eye(3), FLOOR, -1))
    parts.append((np.array([0.0, back + t, floor + 1.6]), np.array([6.0, t, 1.6]), np.eye(3), WALL, -1))
    parts.append((np.array([left - t, back / 2, floor + 1.6]), np.array([t, back, 1.6]), np.eye(3), WALL, -1))
    parts.append((np.array([right + t, back / 2, floor + 1.6]), np.array([t, back, 1.6]), np.eye(3), WALL, -1))
    boxes: List[Box3D] = []
    placed: List[Tuple[float, float, float]] = []
    against: List[int] = []
    names = list(rng.choice(list(classes), size=n_objects, replace=len(classes) < n_objects))
    for k, name in enumerate(names):
        ranges, shape = FURNITURE[name]
        l, w, h = (rng.uniform(*r) for r in ranges)
        for _ in range(60):
            if k == 0:  # against the back wall, facing the camera
                yaw = np.pi / 2 if l > w else 0.0
                half_depth = (w if yaw else l) / 2
                cx, cy = rng.uniform(left + 0.6, right - 0.6), back - half_depth - 0.01
            else:
                yaw = rng.uniform(-np.pi, np.pi)
                cx, cy = rng.uniform(-1.2, 1.2), rng.uniform(1.6, back - 0.9)
            r = 0.5 * np.hypot(l, w)
            if all(np.hypot(cx - px, cy - py) > r + pr + 0.1 for px, py, pr in placed):
                break
        else:
            continue
        if k == 0:
            against.append(len(boxes))
        placed.append((cx, cy, r))
        R = _rot_z(yaw)
        colour = PALETTE[int(rng.integers(len(PALETTE)))]
        for x0, x1, y0, y1, z0, z1 in shape:
            local = np.array([((x0 + x1) / 2 - 0.5) * l, ((y0 + y1) / 2 - 0.5) * w, (z0 + z1) / 2 * h])
            half = np.array([(x1 - x0) * l, (y1 - y0) * w, (z1 - z0) * h]) / 2
            parts.append((np.array([cx, cy, floor]) + R @ local, half, R, colour, len(boxes)))
        boxes.append(Box3D(center=np.array([cx, cy, floor + h / 2]), size=np.array([l, w, h]), yaw=float(yaw), label=name))
    prims = Primitives(
        kind=np.full(len(parts), BOX, np.int8),
        R=np.stack([T_up_to_opt @ p[2] for p in parts]),
        c=np.stack([T_up_to_opt @ p[0] for p in parts]),
        half=np.stack([p[1] for p in parts]),
        material=np.arange(len(parts), dtype=np.int32),
        owner=np.array([p[4] for p in parts], dtype=np.int32),
    )
    grid = CameraGrid(K_grid, width, height)
    hits = cast(grid, prims, max_range=12.0)
    tdepth = hits.t.reshape(height, width) * grid.depth_per_t
    hit = np.isfinite(tdepth)
    depth = np.where(hit, tdepth, 0.0)
    depth = np.where(hit, depth + rng.normal(0, 1, depth.shape) * 0.0015 * depth ** 2, 0.0)
    dropout = rng.random(depth.shape) < 0.02  # missing returns
    depth[dropout] = 0.0
    prim = hits.prim.reshape(height, width)
    colours = np.array([p[3] for p in parts])
    shade = np.abs(np.einsum("hwk,hwk->hw", hits.normal.reshape(height, width, 3), grid.dirs))
    rgb = np.where(hit[..., None], colours[np.clip(prim, 0, None)] * (0.35 + 0.65 * shade[..., None]), 0.1)
    image = np.clip(rgb * 255 + rng.normal(0, 4, rgb.shape), 0, 255).astype(np.uint8)
    owner = np.where(prim >= 0, prims.owner[np.clip(prim, 0, None)], -1)
    boxes_2d = []
    for j in range(len(boxes)):
        rows, cols = np.nonzero(owner == j)
        boxes_2d.append(np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=np.float64)
                        if rows.size else np.full(4, np.nan))
    K_tool = K_grid.copy()
    K_tool[0, 2] += 0.5  # toolbox pixel u (1-based) = grid column + 1, rays through column + 0.5
    K_tool[1, 2] += 0.5
    E = P.T @ rtilt @ P  # camera -> gravity-aligned in optical axes
    return Room(image=image, depth=depth.astype(np.float32), K=K_tool, extrinsics=E, boxes=boxes, boxes_2d=boxes_2d,
                against_wall=against, owner=owner.astype(np.int32))


def point_owners(room: Room, points: np.ndarray, camera) -> np.ndarray:
    """(N,) int32 the box each point's pixel sees (-1: floor or wall): the ground truth a mined
    proxy is scored against. ``camera``: the frame's ``CameraView`` as the reader gives it."""
    from clip2_core.geometry import project_points

    uv, _, _ = project_points(np.asarray(points)[:, :3], camera.K, camera.T_lidar_to_cam)
    cols = np.clip(np.round(uv[:, 0]).astype(int), 0, room.owner.shape[1] - 1)
    rows = np.clip(np.round(uv[:, 1]).astype(int), 0, room.owner.shape[0] - 1)
    return room.owner[rows, cols]


def write_room(root: Union[str, Path], name: str, room: Room) -> Path:
    """Store ``room`` as ``root/<name>`` in the SUN RGB-D release layout."""
    from clip2_core.datasets.sunrgbd import write_frame

    return write_frame(Path(root) / name, room.image, room.depth, room.K, room.extrinsics, room.boxes,
                       name=Path(name).name)


def detections_file(rooms: Dict[str, Room], path: Union[str, Path], min_pixels: int = 16) -> Path:
    """A ``clip2.detections_2d/v1`` file with each room's visible boxes (keyed by frame name)."""
    import json

    images = {}
    for name, room in rooms.items():
        dets = []
        for b, bb in zip(room.boxes, room.boxes_2d):
            if np.isfinite(bb).all() and (bb[2] - bb[0]) * (bb[3] - bb[1]) >= min_pixels:
                dets.append({"box_xyxy": [float(v) for v in bb], "label": str(b.label).replace("_", " "), "score": 0.9})
        images[name] = {"sample_data_token": name, "detections": dets}
    Path(path).write_text(json.dumps({"format": "clip2.detections_2d/v1", "images": images}))
    return Path(path)
