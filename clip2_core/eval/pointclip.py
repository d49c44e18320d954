"""The projection baseline (PointCLIP, Zhang et al. CVPR 2022; PointCLIP V2, Zhu et al. ICCV 2023).

A point crop is rendered as depth maps from several viewpoints, each map goes through the frozen
CLIP image tower, and the views' cosine similarities with the vocabulary's text embeddings are
averaged into zero-shot logits. Nothing is learnt: it is what CLIP alone makes of the points, the
baseline CLIP2's table places itself against (nuScenes 11.7% vs 37.8%).

The rendering follows PointCLIP V2's "realistic projection" recipe, in numpy:

* the crop is centred on its box and turned into the box's heading (the frame clip2's encoder
  sees), then scaled into the unit ball;
* each view is an orthographic camera on the unit sphere looking at the centre: by default four
  around the object at 20 degrees elevation, a three-quarter view and the top (``views``);
* a pixel keeps its nearest point, brighter when nearer (``0.3 .. 1``); the sparse map is densified
  with a ``densify`` x ``densify`` maximum filter and smoothed with a Gaussian (``sigma`` pixels),
  then scaled so its brightest pixel is 1 and given to CLIP as a grey RGB image.

Differences to the papers, chosen so the comparison is on equal terms: the same text bank as clip2
(the recognizer's templates; PointCLIP's own is ``"point cloud depth map of a {}."``, which
``--templates`` can give both), equal view weights (PointCLIP searches per-dataset view weights on
the test set), no inter-view adapter (PointCLIP's few-shot variant).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Sequence, Tuple

import numpy as np

# (azimuth, elevation) in degrees; azimuth 0 looks at the object's front (its +x side)
DEFAULT_VIEWS: Tuple[Tuple[float, float], ...] = ((0, 20), (90, 20), (180, 20), (270, 20), (45, 35), (0, 90))


@dataclass
class ProjectionConfig:
    views: Tuple[Tuple[float, float], ...] = DEFAULT_VIEWS
    size: int = 224  # pixels per side (CLIP's input; the image tower's preprocessing resizes anyway)
    margin: float = 0.9  # the unit ball fills this share of the image
    densify: int = 3  # maximum-filter window [px], 1 = off
    sigma: float = 1.0  # Gaussian smoothing [px], 0 = off
    min_brightness: float = 0.3  # the farthest point's brightness (nearest is 1)
    batch_size: int = 64  # images per CLIP forward

    def __post_init__(self) -> None:
        self.views = tuple((float(a), float(e)) for a, e in self.views)
        if not self.views:
            raise ValueError("need at least one view")
        if any(not -90.0 <= e <= 90.0 for _, e in self.views):
            raise ValueError(f"view elevations must be in [-90, 90] degrees, got {self.views}")
        if not 8 <= int(self.size) <= 1024:
            raise ValueError(f"size must be 8..1024 pixels, got {self.size}")
        if not 0.1 <= self.margin <= 1.0:
            raise ValueError(f"margin must be in [0.1, 1], got {self.margin}")
        if int(self.densify) < 1 or self.sigma < 0 or not 0.0 <= self.min_brightness < 1.0:
            raise ValueError("densify >= 1, sigma >= 0 and 0 <= min_brightness < 1 are required")


def view_rotations(views: Sequence[Tuple[float, float]]) -> np.ndarray:
    """``(V, 3, 3)`` rows (right, down, forward) of each camera: ``R @ p`` gives image x (right),
    image y (down) and depth along the viewing direction for a point ``p`` of the object frame."""
    out = []
    for az, el in views:
        a, e = np.radians(az), np.radians(el)
        eye = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])  # camera position on the sphere
        fwd = -eye
        up_hint = np.array([0.0, 0.0, 1.0]) if abs(eye[2]) < 0.999 else np.array([-np.cos(a), -np.sin(a), 0.0])
        right = np.cross(fwd, up_hint)
        right /= np.linalg.norm(right)
        up = np.cross(right, fwd)
        out.append(np.stack([right, -up, fwd]))
    return np.stack(out)


def object_frame(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``(K, 3)`` points centred on ``box`` ``[x, y, z, l, w, h, yaw]``, turned into its heading and
    scaled into the unit ball (all-equal points stay at the centre)."""
    p = np.asarray(points, dtype=np.float64)[:, :3] - np.asarray(box[:3], dtype=np.float64)
    c, s = np.cos(-box[6]), np.sin(-box[6])
    p = np.stack([c * p[:, 0] - s * p[:, 1], s * p[:, 0] + c * p[:, 1], p[:, 2]], axis=1)
    r = float(np.linalg.norm(p, axis=1).max()) if len(p) else 0.0
    return p / r if r > 1e-9 else p


def depth_maps(crops: Sequence[np.ndarray], boxes: np.ndarray, config: ProjectionConfig = ProjectionConfig()) -> np.ndarray:
    """``(M, V, S, S)`` float32 depth maps in ``[0, 1]`` (0 = no point) of ``M`` crops, ``V`` views."""
    from scipy import ndimage

    cfg = config
    S, V, M = int(cfg.size), len(cfg.views), len(crops)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    if boxes.shape[0] != M:
        raise ValueError(f"{M} crops but {boxes.shape[0]} boxes")
    maps = np.zeros((M * V, S * S), dtype=np.float32)
    if M == 0:
        return maps.reshape(0, V, S, S)
    rots = view_rotations(cfg.views)
    for i, (crop, box) in enumerate(zip(crops, boxes)):
        p = object_frame(crop, box)
        if not len(p):
            continue
        cam = np.einsum("vij,kj->vki", rots, p)  # (V, K, 3): x right, y down, depth
        px = np.clip(((cam[..., 0] * cfg.margin + 1.0) * 0.5 * S).astype(np.int64), 0, S - 1)
        py = np.clip(((cam[..., 1] * cfg.margin + 1.0) * 0.5 * S).astype(np.int64), 0, S - 1)
        near = 1.0 - (cam[..., 2] + 1.0) * 0.5  # 1 at the near side of the ball, 0 at the far side
        bright = (cfg.min_brightness + (1.0 - cfg.min_brightness) * near).astype(np.float32)
        rows = np.broadcast_to(np.arange(V)[:, None] + i * V, px.shape)
        np.maximum.at(maps, (rows.ravel(), (py * S + px).ravel()), bright.ravel())
    maps = maps.reshape(M * V, S, S)
    if cfg.densify > 1:
        maps = ndimage.maximum_filter(maps, size=(1, int(cfg.densify), int(cfg.densify)), mode="constant")
    if cfg.sigma > 0:
        maps = ndimage.gaussian_filter(maps, sigma=(0, cfg.sigma, cfg.sigma), mode="constant")
    peak = maps.reshape(M * V, -1).max(axis=1)
    maps /= np.where(peak > 0, peak, 1.0)[:, None, None]
    return maps.reshape(M, V, S, S).astype(np.float32)


def depth_images(maps: np.ndarray) -> np.ndarray:
    """Depth maps ``(..., S, S)`` in [0, 1] -> grey RGB uint8 ``(..., S, S, 3)``."""
    g = np.clip(np.rint(np.asarray(maps) * 255.0), 0, 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=-1)


@dataclass
class PointCLIPBaseline:
    """Zero-shot logits of point crops from CLIP's image tower on their depth maps.

    ``clip``: a :class:`clip2_core.vlm.FrozenCLIP` (its ``encode_images`` and ``logit_scale``);
    the text bank rows come from the caller, so both methods classify against the same texts.
    """

    clip: object
    config: ProjectionConfig = field(default_factory=ProjectionConfig)

    def view_embeddings(self, crops: Sequence[np.ndarray], boxes: np.ndarray) -> np.ndarray:
        """``(M, V, D)`` unit CLIP embeddings of every crop's views."""
        maps = depth_maps(crops, boxes, self.config)
        M, V = maps.shape[:2]
        dim = int(getattr(self.clip, "embed_dim"))
        if M == 0:
            return np.zeros((0, V, dim), dtype=np.float32)
        imgs: List[np.ndarray] = list(depth_images(maps).reshape(M * V, *maps.shape[2:], 3))
        emb = self.clip.encode_images(imgs, batch_size=self.config.batch_size)
        return emb.reshape(M, V, -1)

    def logits(self, crops: Sequence[np.ndarray], boxes: np.ndarray, text: np.ndarray) -> np.ndarray:
        """``(M, T)`` float32: CLIP's logit scale x the views' mean cosine with the ``(T, D)`` text rows."""
        t = np.asarray(text, dtype=np.float32)
        t = t / np.linalg.norm(t, axis=1, keepdims=True).clip(min=1e-12)
        emb = self.view_embeddings(crops, boxes)
        cos = np.einsum("mvd,td->mt", emb, t) / max(emb.shape[1], 1)
        return (float(self.clip.logit_scale) * cos).astype(np.float32)
