"""A simulated open-vocabulary 2D detector: rendered object masks turned into noisy text-labelled boxes.

Noise model (per image, seeded):
- recall falls with small visible area and heavy occlusion (misses);
- boxes are the tight box of the object's visible pixels, jittered by ~4 % of their size per side;
- labels are drawn from per-class synonym lists, sometimes confused with a related class;
- scores rise with visible area, lower for confusions;
- false positives on background with low scores and no instance token.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

IMAGE_WH = (1600, 900)

# text a detector prompted with an open vocabulary might return, per synthetic kind
SYNONYMS: Dict[str, Sequence[str]] = {
    "car": ("car", "car", "sedan", "vehicle", "hatchback", "SUV"),
    "truck": ("truck", "truck", "lorry", "box truck", "pickup truck"),
    "bus": ("bus", "bus", "city bus", "coach"),
    "trailer": ("trailer", "semi-trailer", "cargo trailer"),
    "construction_vehicle": ("construction vehicle", "excavator", "bulldozer", "construction vehicle"),
    "pedestrian": ("pedestrian", "person", "person", "man", "woman", "walking person"),
    "child": ("child", "person", "kid", "pedestrian"),
    "motorcycle": ("motorcycle", "motorcycle", "motorbike", "scooter"),
    "bicycle": ("bicycle", "bicycle", "bike", "cyclist"),
    "traffic_cone": ("traffic cone", "traffic cone", "cone", "safety cone"),
    "barrier": ("barrier", "road barrier", "jersey barrier", "construction barrier"),
    "tire": ("tire", "tyre", "wheel"),
    "debris": ("debris", "rubble", "trash on the road"),
    "stroller": ("stroller", "baby stroller", "pram"),
    "traffic_sign": ("traffic sign", "road sign", "sign"),
    "trash_can": ("trash can", "garbage bin", "wheelie bin"),
    "animal": ("dog", "animal"),
}
CONFUSIONS: Dict[str, Sequence[str]] = {
    "car": ("truck", "van"), "truck": ("car", "bus", "van"), "bus": ("truck", "tram"), "trailer": ("truck", "container"),
    "construction_vehicle": ("truck", "tractor"), "pedestrian": ("statue", "pole"), "child": ("pedestrian", "dog"),
    "motorcycle": ("bicycle",), "bicycle": ("motorcycle",), "traffic_cone": ("barrier", "bollard"),
    "barrier": ("fence", "traffic cone"), "tire": ("debris", "wheel"), "debris": ("tire", "rock"),
    "stroller": ("bicycle", "shopping cart"), "traffic_sign": ("pole", "street light"), "trash_can": ("box", "barrier"),
    "animal": ("pedestrian", "cat"),
}
FALSE_POSITIVE_LABELS = ("car", "person", "traffic cone", "fire hydrant", "bench", "pole", "window", "bicycle", "sign",
                         "tree", "mailbox")


def simulate_detections(objects: List[Dict], rng: np.random.Generator, render_scale: float = 0.25) -> List[Dict]:
    """Noisy detections for one image.

    Args:
        objects: visible objects, each ``{"kind", "bbox" [x0,y0,x1,y1] px at 1600x900 (tight box of the visible
            pixels), "visible_px", "silhouette_px" (render resolution), "instance_token", "annotation_token", "category"}``.
    Returns:
        ``[{"box_xyxy", "label", "score", "instance_token", "annotation_token", "category"}]`` sorted by score.
    """
    dets: List[Dict] = []
    px_area = 1.0 / (render_scale * render_scale)  # full-res pixels per rendered pixel
    for o in sorted(objects, key=lambda o: (o["instance_token"] or "", o["bbox"])):
        area = o["visible_px"] * px_area
        vis = o["visible_px"] / max(o["silhouette_px"], 1)
        p_det = 0.97 * (1.0 - np.exp(-area / 1200.0)) * min(1.0, 0.3 + vis)
        u = rng.random(6)
        if u[0] >= p_det:
            continue
        x0, y0, x1, y1 = o["bbox"]
        w, h = x1 - x0, y1 - y0
        j = rng.normal(0.0, 0.04, 4) * np.array([w, h, w, h])
        box = np.array([x0 + j[0], y0 + j[1], x1 + j[2], y1 + j[3]])
        box[[0, 2]] = np.clip(box[[0, 2]], 0, IMAGE_WH[0])
        box[[1, 3]] = np.clip(box[[1, 3]], 0, IMAGE_WH[1])
        if box[2] - box[0] < 2 or box[3] - box[1] < 2:
            continue
        kind = o["kind"]
        confused = u[1] < 0.07
        if confused:
            options = CONFUSIONS.get(kind, ("object",))
            label = options[int(u[2] * len(options)) % len(options)]
        else:
            options = SYNONYMS.get(kind, (kind.replace("_", " "),))
            label = options[int(u[2] * len(options)) % len(options)]
        score = 0.25 + 0.7 * p_det * (0.6 if confused else 1.0) + rng.normal(0, 0.05)
        dets.append({
            "box_xyxy": [round(float(v), 2) for v in box], "label": label, "score": round(float(np.clip(score, 0.05, 0.99)), 4),
            "instance_token": o["instance_token"], "annotation_token": o["annotation_token"], "category": o["category"],
        })
    for _ in range(int(rng.poisson(0.8))):
        w = float(rng.uniform(25, 250))
        h = float(w * rng.uniform(0.5, 2.0))
        x0 = float(rng.uniform(0, IMAGE_WH[0] - w))
        y0 = float(rng.uniform(IMAGE_WH[1] * 0.3, max(IMAGE_WH[1] * 0.3 + 1, IMAGE_WH[1] - h)))
        dets.append({
            "box_xyxy": [round(x0, 2), round(y0, 2), round(x0 + w, 2), round(min(y0 + h, IMAGE_WH[1]), 2)],
            "label": FALSE_POSITIVE_LABELS[int(rng.integers(len(FALSE_POSITIVE_LABELS)))],
            "score": round(float(rng.uniform(0.05, 0.45)), 4), "instance_token": None, "annotation_token": None, "category": None,
        })
    dets.sort(key=lambda d: -d["score"])
    return dets
