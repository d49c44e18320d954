"""Quick-look PNGs of one frame: a bird's-eye view and a camera overlay (PIL only)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from clip2_core.types import Frame, boxes_to_array

CLASS_COLOURS = {
    "car": (255, 158, 0), "truck": (255, 99, 71), "bus": (255, 69, 0), "trailer": (255, 140, 0),
    "construction_vehicle": (233, 150, 70), "pedestrian": (0, 0, 230), "motorcycle": (255, 61, 99),
    "bicycle": (220, 20, 60), "traffic_cone": (47, 79, 79), "barrier": (112, 128, 144),
}
_HEIGHT_STOPS = np.array([[70, 60, 140], [40, 120, 240], [30, 200, 160], [170, 220, 50], [250, 150, 30], [180, 20, 10]], float)


def _colour(label: Optional[str]) -> tuple:
    if label in CLASS_COLOURS:
        return CLASS_COLOURS[label]
    h = sum(ord(c) for c in (label or "?"))
    return (80 + h * 37 % 175, 80 + h * 91 % 175, 80 + h * 53 % 175)


def height_colours(z: np.ndarray, lo: float = -2.0, hi: float = 3.0) -> np.ndarray:
    """(N, 3) uint8 colours for heights z (dark blue low -> red high)."""
    s = np.clip((z - lo) / (hi - lo), 0, 1) * (len(_HEIGHT_STOPS) - 1)
    i = np.minimum(s.astype(int), len(_HEIGHT_STOPS) - 2)
    f = (s - i)[:, None]
    return (_HEIGHT_STOPS[i] * (1 - f) + _HEIGHT_STOPS[i + 1] * f).astype(np.uint8)


def bev_image(frame: Frame, extent: float = 50.0, size: int = 900):
    """PIL image: points (LiDAR frame, +y up, +x right) coloured by height, GT boxes with labels."""
    from PIL import Image, ImageDraw

    from clip2_core.geometry import box_corners

    img = np.full((size, size, 3), 12, np.uint8)
    xyz = frame.xyz
    u = ((xyz[:, 0] + extent) / (2 * extent) * size).astype(int)
    v = ((extent - xyz[:, 1]) / (2 * extent) * size).astype(int)
    ok = (u >= 0) & (u < size) & (v >= 0) & (v < size)
    order = np.argsort(xyz[ok, 2])
    cols = height_colours(xyz[ok, 2][order], lo=float(np.percentile(xyz[:, 2], 5)), hi=float(np.percentile(xyz[:, 2], 5)) + 4.0)
    uu, vv = u[ok][order], v[ok][order]
    for du in (0, 1):  # 2x2 dots
        for dv in (0, 1):
            img[np.minimum(vv + dv, size - 1), np.minimum(uu + du, size - 1)] = cols
    im = Image.fromarray(img)
    d = ImageDraw.Draw(im)
    to_px = lambda x, y: ((x + extent) / (2 * extent) * size, (extent - y) / (2 * extent) * size)  # noqa: E731
    for r in (10, 20, 30, 40, 50):
        c = to_px(0, 0)
        rp = r / (2 * extent) * size
        d.ellipse([c[0] - rp, c[1] - rp, c[0] + rp, c[1] + rp], outline=(60, 60, 60))
    if frame.gt_boxes:
        corners = box_corners(boxes_to_array(frame.gt_boxes))
        for b, cs in zip(frame.gt_boxes, corners):
            col = _colour(b.label)
            poly = [to_px(x, y) for x, y in cs[:4, :2]]
            d.polygon(poly, outline=col)
            front = to_px(*((cs[0, :2] + cs[3, :2]) / 2))
            d.line([to_px(*b.center[:2]), front], fill=col)
            d.text((poly[0][0] + 2, poly[0][1] + 2), str(b.label), fill=col)
    d.text((8, 8), f"{frame.scene or ''} {frame.token or ''}  {len(frame.points)} pts  {len(frame.gt_boxes)} boxes", fill=(230, 230, 230))
    return im


def camera_overlay(frame: Frame, camera: str, detections: Optional[List[Dict]] = None):
    """PIL image of one camera with the projected GT boxes (and optional 2D detections in white)."""
    from PIL import Image, ImageDraw

    from clip2_core.geometry import BOX_EDGES, box_corners, transform_points

    view = frame.cameras[camera]
    if view.image is not None:
        im = Image.fromarray(view.image)
    elif view.image_path:
        im = Image.open(view.image_path).convert("RGB")
    else:
        raise ValueError(f"camera {camera} has no image")
    d = ImageDraw.Draw(im)
    for det in detections or []:
        x0, y0, x1, y1 = det["box_xyxy"]
        d.rectangle([x0, y0, x1, y1], outline=(255, 255, 255))
        d.text((x0 + 2, y1 + 2), f"{det['label']} {det['score']:.2f}", fill=(255, 255, 255))
    if frame.gt_boxes:
        corners = box_corners(boxes_to_array(frame.gt_boxes))
        for b, cs in zip(frame.gt_boxes, corners):
            pc = transform_points(view.T_lidar_to_cam, cs)
            if (pc[:, 2] < 0.5).any():
                continue
            uv = pc @ view.K.T
            uv = uv[:, :2] / uv[:, 2:3]
            w, h = view.size_wh
            if uv[:, 0].max() < 0 or uv[:, 0].min() > w or uv[:, 1].max() < 0 or uv[:, 1].min() > h:
                continue
            col = _colour(b.label)
            for i, j in BOX_EDGES:
                d.line([tuple(uv[i]), tuple(uv[j])], fill=col, width=2)
            top = uv[4:].min(axis=0)
            d.text((float(top[0]), float(top[1]) - 12), str(b.label), fill=col)
    return im


def write_previews(frame: Frame, out_dir: Path, cameras: Sequence[str] = ("CAM_FRONT",),
                   detections_by_token: Optional[Dict[str, Dict]] = None) -> List[Path]:
    """Write ``preview_bev.png`` and ``preview_<camera>.png`` into ``out_dir``; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "preview_bev.png"]
    bev_image(frame).save(paths[0])
    for cam in cameras:
        if cam not in frame.cameras:
            continue
        dets = None
        if detections_by_token is not None:
            dets = detections_by_token.get(frame.cameras[cam].token, {}).get("detections")
        p = out_dir / f"preview_{cam}.png"
        camera_overlay(frame, cam, dets).save(p)
        paths.append(p)
    return paths
