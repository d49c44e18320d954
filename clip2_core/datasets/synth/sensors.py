"""The sensor rig (nuScenes-like LIDAR_TOP and six cameras) and the LiDAR / camera renderers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from .raycast import CameraGrid, LidarGrid, cast
from .world import World, SIDEWALK_HALF, PARK_HALF, ROAD_HALF, BIKE_LAT, _rot_z

# ---------------------------------------------------------------------------------------------
# rig: sensor -> ego extrinsics like nuScenes (ego frame: x forward, y left, z up, origin on the
# ground under the rear axle). LIDAR_TOP: x right, y forward, z up. Cameras: optical frame.

LIDAR_TRANSLATION = np.array([0.943713, 0.0, 1.84023])
LIDAR_ROTATION = _rot_z(-np.pi / 2)  # lidar x (right) -> ego -y, lidar y (forward) -> ego x

# HDL-32E: 32 beams from -30.67 to +10.67 deg
LIDAR_ELEVATIONS_DEG = np.linspace(-30.67, 10.67, 32)
LIDAR_COLUMNS = 1200  # 0.3 deg azimuth steps (HDL-32E at 20 Hz: ~0.33 deg)
LIDAR_MAX_RANGE = 70.0
LIDAR_MIN_RANGE = 1.0
LIDAR_HZ = 20.0
IMAGE_WH = (1600, 900)


@dataclass(frozen=True)
class CameraSpec:
    name: str
    translation: Tuple[float, float, float]  # in the ego frame [m]
    yaw_deg: float  # optical axis heading in the ego frame (0 = forward, + = left)
    focal: float  # [px] at 1600 x 900
    principal: Tuple[float, float]  # cx, cy [px]
    delay_ms: float  # capture time after the LiDAR sweep time

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.focal, 0.0, self.principal[0]], [0.0, self.focal, self.principal[1]], [0.0, 0.0, 1.0]])

    @property
    def rotation(self) -> np.ndarray:
        """(3, 3) camera optical frame -> ego frame."""
        a = np.deg2rad(self.yaw_deg)
        z = np.array([np.cos(a), np.sin(a), 0.0])  # optical axis
        x = np.array([np.sin(a), -np.cos(a), 0.0])  # image right
        y = np.array([0.0, 0.0, -1.0])  # image down
        return np.stack([x, y, z], axis=1)


CAMERAS: Tuple[CameraSpec, ...] = (
    CameraSpec("CAM_FRONT", (1.70, 0.016, 1.51), 0.0, 1266.4, (816.3, 491.5), 27.0),
    CameraSpec("CAM_FRONT_RIGHT", (1.55, -0.49, 1.50), -55.0, 1260.5, (807.97, 495.33), 35.0),
    CameraSpec("CAM_BACK_RIGHT", (1.04, -0.48, 1.59), -110.0, 1259.5, (807.25, 501.2), 43.5),
    CameraSpec("CAM_BACK", (0.03, 0.0, 1.57), 180.0, 809.2, (829.2, 481.8), 52.0),
    CameraSpec("CAM_BACK_LEFT", (1.05, 0.48, 1.56), 110.0, 1256.7, (817.8, 451.95), 10.0),
    CameraSpec("CAM_FRONT_LEFT", (1.52, 0.49, 1.51), 55.0, 1272.6, (826.6, 479.8), 18.5),
)
CAMERA_NAMES = tuple(c.name for c in CAMERAS)


def lidar_to_global(world: World, t: float) -> Tuple[np.ndarray, np.ndarray]:
    Re, te = world.ego_pose(t)
    return Re @ LIDAR_ROTATION, Re @ LIDAR_TRANSLATION + te


def camera_to_global(world: World, cam: CameraSpec, t: float) -> Tuple[np.ndarray, np.ndarray]:
    Re, te = world.ego_pose(t)
    return Re @ cam.rotation, Re @ np.asarray(cam.translation) + te


_LIDAR_GRID: Optional[LidarGrid] = None
_CAMERA_GRIDS: Dict[Tuple[str, int, int], CameraGrid] = {}  # ray grids are fixed per camera and resolution


def lidar_grid() -> LidarGrid:
    global _LIDAR_GRID
    if _LIDAR_GRID is None:
        _LIDAR_GRID = LidarGrid(LIDAR_ELEVATIONS_DEG, LIDAR_COLUMNS)
    return _LIDAR_GRID


def _plane_in_sensor(world: World, R: np.ndarray, t: np.ndarray) -> Tuple[np.ndarray, float]:
    """Ground plane n.p = d (global) expressed in a sensor frame with sensor->global (R, t)."""
    n, d = world.road.plane
    return R.T @ n, float(d - n @ t)


def lidar_sweep(world: World, t: float, rng: np.random.Generator) -> np.ndarray:
    """One LiDAR sweep at time t: (N, 5) float32 x, y, z, intensity (0-255), ring (0-31), LiDAR frame.

    The sweep is instantaneous (no rolling shutter). Range noise sigma 2 cm, random dropout plus
    range- and reflectivity-dependent dropout, intensity from reflectivity and incidence angle.
    """
    R, tr = lidar_to_global(world, t)
    grid = lidar_grid()
    prims = world.primitives(t, near=tr, radius=LIDAR_MAX_RANGE).transformed(R.T, -R.T @ tr)
    hits = cast(grid, prims, LIDAR_MAX_RANGE, plane=_plane_in_sensor(world, R, tr))
    dirs = grid.dirs.reshape(-1, 3)
    rings = np.broadcast_to(np.arange(grid.shape[0])[:, None], grid.shape).reshape(-1)
    ok = np.isfinite(hits.t) & (hits.t > LIDAR_MIN_RANGE)
    idx = np.nonzero(ok)[0]
    rng_m = hits.t[idx]
    refl, pattern_gain = _reflectivity(world, hits, idx, dirs, R, tr, prims)
    cos_inc = np.abs(np.einsum("ij,ij->i", dirs[idx], hits.normal[idx]))
    # dropout: base 2 %, more at long range, for dark surfaces and at grazing incidence
    p_drop = 0.02 + 0.35 * (rng_m / LIDAR_MAX_RANGE) ** 3 + 0.25 * (refl < 0.15) * (rng_m / LIDAR_MAX_RANGE) + 0.3 * (cos_inc < 0.08)
    keep = rng.random(idx.size) >= p_drop
    idx, rng_m, refl, cos_inc, pattern_gain = idx[keep], rng_m[keep], refl[keep], cos_inc[keep], pattern_gain[keep]
    noisy = rng_m + rng.normal(0.0, 0.02, idx.size)
    xyz = dirs[idx] * noisy[:, None]
    inten = 255.0 * refl * pattern_gain * (0.25 + 0.75 * np.sqrt(cos_inc)) * (1.0 - 0.4 * rng_m / LIDAR_MAX_RANGE)
    inten = np.clip(np.round(inten * 0.35 + rng.normal(0, 1.5, idx.size)), 0, 255)
    out = np.empty((idx.size, 5), dtype=np.float32)
    out[:, :3] = xyz
    out[:, 3] = inten
    out[:, 4] = rings[idx]
    return out


def _ground_appearance(world: World, gx: np.ndarray, gy: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Albedo (n, 3) and LiDAR reflectivity (n,) of the ground at global xy."""
    lat = world.road.lateral(gx, gy)
    a = np.abs(lat)
    rgb = np.empty((gx.size, 3))
    refl = np.empty(gx.size)
    asphalt = (a <= PARK_HALF + 0.01)
    rgb[:] = (0.3, 0.45, 0.2)  # grass beyond the sidewalk
    refl[:] = 0.45
    side = (a > PARK_HALF) & (a <= SIDEWALK_HALF + 1.0)
    rgb[side] = (0.62, 0.6, 0.57)
    refl[side] = 0.35
    rgb[asphalt] = (0.28, 0.28, 0.3)
    refl[asphalt] = 0.12
    # markings: dashed lane lines at +-3.5, double centre line, solid edge lines at +-7 and +-8.5
    dash = (np.mod(gx, 9.0) < 3.0)
    mark = ((np.abs(a - 3.5) < 0.075) & dash) | (np.abs(a - 0.15) < 0.06) | (np.abs(a - ROAD_HALF) < 0.08) | (np.abs(a - 8.5) < 0.06)
    centre = np.abs(a - 0.15) < 0.06
    rgb[mark] = (0.92, 0.92, 0.9)
    rgb[centre] = (0.95, 0.8, 0.2)
    refl[mark] = 0.85
    bike = np.abs(a - BIKE_LAT) < 0.7
    rgb[bike & ~mark] = (0.45, 0.25, 0.22)
    # a little texture
    tex = 0.06 * np.sin(gx * 3.1 + np.sin(gy * 2.3)) * np.sin(gy * 2.7 + np.sin(gx * 1.3))
    rgb = np.clip(rgb * (1.0 + tex[:, None]), 0, 1)
    return rgb, refl


def _reflectivity(world: World, hits, idx, dirs, R, tr, prims):
    """LiDAR reflectivity (n,) and a pattern gain (n,) at the hits ``idx``."""
    _, refl_m, pat_m = world.materials.arrays()
    prim = hits.prim[idx]
    refl = np.empty(idx.size)
    gain = np.ones(idx.size)
    on_plane = prim == -2
    if on_plane.any():
        p = (dirs[idx[on_plane]] * hits.t[idx[on_plane], None]) @ R.T + tr
        refl[on_plane] = _ground_appearance(world, p[:, 0], p[:, 1])[1]
    obj = ~on_plane
    if obj.any():
        mats = prims.material[prim[obj]]
        refl[obj] = refl_m[mats]
        gain[obj] = np.where(pat_m[mats] == 3, 1.5, 1.0)  # retro-reflective sign plates
    return refl, gain


def render_camera(world: World, cam: CameraSpec, t: float, scale: float, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """Render a camera at time t at ``scale`` x the 1600x900 resolution.

    Returns ``rgb`` (h, w, 3) uint8, ``owner`` (h, w) int32 object index per pixel (-1 none),
    ``silhouette`` {object index: pixel count ignoring occlusion}, ``visible`` {object index: pixel count},
    ``boxes`` {object index: (c0, r0, c1, r1) tight pixel box of its visible pixels, exclusive ends}.
    """
    w, h = int(round(IMAGE_WH[0] * scale)), int(round(IMAGE_WH[1] * scale))
    K = cam.K.copy()
    K[0, :] *= w / IMAGE_WH[0]
    K[1, :] *= h / IMAGE_WH[1]
    key = (cam.name, w, h)
    grid = _CAMERA_GRIDS.get(key)
    if grid is None:
        grid = _CAMERA_GRIDS[key] = CameraGrid(K, w, h)
    R, tr = camera_to_global(world, cam, t)
    max_range = 120.0
    prims = world.primitives(t, near=tr, radius=max_range).transformed(R.T, -R.T @ tr)
    hits = cast(grid, prims, max_range, plane=_plane_in_sensor(world, R, tr), collect_silhouettes=True, rounds=8)
    dirs = grid.dirs.reshape(-1, 3)
    n = dirs.shape[0]
    rgb_m, _, pat_m = world.materials.arrays()
    col = np.empty((n, 3), dtype=np.float32)
    # sky gradient by the ray's global elevation
    up = np.clip(dirs @ R[2], -0.2, 1.0).astype(np.float32)
    sky = np.asarray(world.sky_rgb, dtype=np.float32)
    col[:] = sky[None, :] * (0.8 + 0.2 * up[:, None]) + (1.0 - up[:, None]) ** 4 * 0.25
    hit = np.isfinite(hits.t)
    on_plane = hits.prim == -2
    if on_plane.any():
        pg = (dirs[on_plane] * hits.t[on_plane, None]) @ R.T + tr  # global hit points on the ground
        col[on_plane] = _ground_appearance(world, pg[:, 0], pg[:, 1])[0]
    on_obj = hits.prim >= 0
    owner = np.full(n, -1, dtype=np.int32)
    if on_obj.any():
        pi = hits.prim[on_obj]
        mats = prims.material[pi]
        base = rgb_m[mats].copy()
        pat = pat_m[mats]
        patterned = pat > 0
        if patterned.any():  # patterns in the primitive's local frame
            sel = np.nonzero(on_obj)[0][patterned]
            pp = pi[patterned]
            pl = np.einsum("nj,nji->ni", dirs[sel] * hits.t[sel, None] - prims.c[pp], prims.R[pp])
            b = base[patterned]
            kind = pat[patterned]
            win = kind == 1  # building windows: grid of dark panes
            u = np.mod(pl[:, 0] + pl[:, 1], 3.0)
            v = np.mod(pl[:, 2] + 100.0, 3.2)
            b[win & (u > 0.8) & (u < 2.2) & (v > 1.0) & (v < 2.6)] = (0.18, 0.22, 0.3)
            band = (kind == 2) & (np.mod(pl[:, 2] * 6.0, 1.0) < 0.35)  # white bands (cones, barriers)
            b[band] = (0.95, 0.95, 0.95)
            hh = prims.half[pp]
            border = (kind == 3) & ((np.abs(pl[:, 1]) > hh[:, 1] * 0.75) | (np.abs(pl[:, 2]) > hh[:, 2] * 0.75))
            b[border] = (0.95, 0.95, 0.95)  # sign plates: white border
            base[patterned] = b
        col[on_obj] = base
        owner[on_obj] = prims.owner[pi]
    # Lambert shading, distance haze, a little sensor noise
    lam = np.clip(hits.normal @ (R.T @ world.sun), 0.0, 1.0)
    shade = np.where(hit, 0.45 + 0.6 * lam, 1.0).astype(np.float32)
    with np.errstate(over="ignore"):
        fog = (1.0 - np.exp(-hits.t / 250.0)).astype(np.float32)  # 1 for sky rays (t = inf)
    fog[~hit] = 0.0
    col = col * (shade * (1.0 - fog))[:, None] + sky[None, :] * fog[:, None]
    img = np.clip(col * 255.0 + 0.5, 0, 255).reshape(h, w, 3)
    img += rng.integers(-3, 4, size=(h, w, 1)).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    owner_img = owner.reshape(h, w)
    vis_ids, vis_counts = np.unique(owner[owner >= 0], return_counts=True)
    # tight pixel box [c0, r0, c1, r1) of every visible object
    flat = np.nonzero(owner >= 0)[0]
    order = np.argsort(owner[flat], kind="stable")
    flat = flat[order]
    starts = np.searchsorted(owner[flat], vis_ids) if len(vis_ids) else np.zeros(0, dtype=np.int64)
    rows, cols = np.divmod(flat, w)
    if len(vis_ids):
        c0, c1 = np.minimum.reduceat(cols, starts), np.maximum.reduceat(cols, starts) + 1
        r0, r1 = np.minimum.reduceat(rows, starts), np.maximum.reduceat(rows, starts) + 1
    else:
        c0 = c1 = r0 = r1 = np.zeros(0, dtype=np.int64)
    return {
        "boxes": {int(k): (int(a), int(b), int(c), int(d)) for k, a, b, c, d in zip(vis_ids, c0, r0, c1, r1)},
        "rgb": img,
        "owner": owner_img,
        "silhouette": dict(hits.silhouettes or {}),
        "visible": {int(k): int(c) for k, c in zip(vis_ids, vis_counts)},
        "K": K,
    }
