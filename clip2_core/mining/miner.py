"""Mining driver: frames -> proposals -> object points -> CLIP image embeddings -> proxy shards.

Per keyframe: ground removal once; for every camera image and every 2D proposal, the frustum +
DBSCAN selection of :mod:`clip2_core.mining.select`; plausibility filters; de-duplication of the
same object seen by two cameras; CLIP image embeddings of all crops of an image in one batch;
then the sample's proxies go to the shard writer as a unit (so resume never splits a sample).

Bad data never stops a run: an unreadable point file skips the sample, an undecodable image
skips that camera; both are counted in the summary.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import numpy as np

from clip2_core.mining.detectors import Detector2D
from clip2_core.mining.labels import map_label
from clip2_core.mining.select import (
    CompletionConfig,
    FrustumConfig,
    complete_objects,
    deduplicate,
    project_sweep,
    select_object_points,
)
from clip2_core.segmentation import INDOOR_GROUND, GroundConfig, remove_ground
from clip2_core.types import Frame, Proxy

log = logging.getLogger(__name__)


@dataclass
class MineConfig:
    frustum: FrustumConfig = field(default_factory=FrustumConfig)
    completion: CompletionConfig = field(default_factory=CompletionConfig)
    ground: GroundConfig = field(default_factory=GroundConfig)
    min_score: float = 0.1  # proposals below this detector score are ignored
    max_extent_by_height: float = 6.0  # a proxy taller than this [m] is a building, not an object
    dedupe_jaccard: float = 0.3  # cross-camera duplicate threshold on point-index sets
    crop_pad: float = 0.1  # context around the 2D box for the CLIP image crop (fraction of size)
    save_jpeg: bool = False  # store the image crop in the shards, for inspection
    shard_size: int = 512  # proxies per shard
    label_map: Dict[str, str] = field(default_factory=dict)  # detector label -> proxy text (clip2_core.mining.labels)
    # background proxies: LiDAR clusters seen by a camera that no 2D proposal (of any score) and no
    # mined object covers, labelled BACKGROUND_TEXT, at most this many per frame (0: none). They
    # teach the encoder a no-object slot, so scene structure is rejected instead of labelled.
    background_per_frame: int = 16  # measured trade-off: BENCHMARKS.md (issue 13)
    background_max_iou: float = 0.1  # a cluster whose 2D box overlaps a proposal more than this is not background

    @classmethod
    def indoor(cls, **overrides) -> "MineConfig":
        """The preset for indoor RGB-D frames (SUN RGB-D; points from depth in the upright camera
        frame): depth-camera range and density, structure planes removed before DBSCAN (walls
        and floor around furniture, clip2_core.mining.planes), the largest remaining cluster, no
        LiDAR-style completion or background proxies. Measured against the LiDAR default in
        docs/mining.md ("Indoor RGB-D frames"). ``overrides`` replace any field."""
        cfg = cls(
            frustum=FrustumConfig(near=0.3, far=10.0, eps=0.05, eps_per_meter=0.01, min_points=30, max_extent=5.0,
                                  planes=3, rule="span"),
            completion=CompletionConfig(enabled=False),
            ground=dataclasses.replace(INDOOR_GROUND),
            max_extent_by_height=3.0,
            background_per_frame=0,
        )
        for key, value in overrides.items():
            if not hasattr(cfg, key):
                raise ValueError(f"MineConfig has no field {key!r}")
            setattr(cfg, key, value)
        return cfg


@dataclass
class MineStats:
    samples: int = 0
    samples_skipped_resume: int = 0
    proposals: int = 0
    proxies: int = 0
    no_points: int = 0  # proposals whose frustum held no plausible object
    background: int = 0  # background proxies (clusters no 2D box covers)
    completed: int = 0  # selections grown to their whole LiDAR cluster (before de-duplication)
    duplicates: int = 0
    corrupt_points: int = 0
    corrupt_images: int = 0
    missing_images: int = 0
    per_label: Counter = field(default_factory=Counter)
    points_per_proxy: List[int] = field(default_factory=list)
    seconds_select: float = 0.0  # time in ground removal + frustum/DBSCAN selection (no detector, no CLIP)

    def to_dict(self) -> Dict:
        d = asdict(self)
        d["per_label"] = dict(sorted(self.per_label.items(), key=lambda kv: -kv[1]))
        d.pop("points_per_proxy")
        return d


def decode_image(path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB; raises OSError / ValueError when the file is unreadable."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return np.asarray(im.convert("RGB"))


def mine_frame(frame: Frame, detector: Detector2D, cfg: MineConfig, clip=None, stats: Optional[MineStats] = None) -> List[Proxy]:
    """Proxies of one frame (cameras must carry images, or image paths to decode)."""
    stats = stats if stats is not None else MineStats()
    t0 = time.perf_counter()
    pts = frame.points
    finite = np.isfinite(pts[:, :3]).all(axis=1)
    candidate = finite & ~remove_ground(pts, cfg.ground)
    stats.seconds_select += time.perf_counter() - t0
    if hasattr(detector, "prepare"):  # detectors that need the whole frame (LiDAR proposals)
        detector.prepare(frame)
    found = []  # (camera name, proposal, mined object)
    proposal_boxes: Dict[str, List[np.ndarray]] = {}  # camera -> every proposal's 2D box, whatever its score
    for name, cam in frame.cameras.items():
        if cam.image is None and cam.image_path:
            try:
                cam.image = decode_image(cam.image_path)
            except (OSError, ValueError, SyntaxError) as exc:
                stats.corrupt_images += 1
                log.warning("skipping camera %s of %s: undecodable image %s (%s)", name, frame.token, cam.image_path, exc)
                continue
        if cam.image is None:
            stats.missing_images += 1
            continue
        projected = None
        proposal_boxes[name] = []
        for prop in detector.detect(cam):
            proposal_boxes[name].append(np.asarray(prop.box, dtype=np.float64))
            if prop.score < cfg.min_score:
                continue
            stats.proposals += 1
            t1 = time.perf_counter()
            if projected is None:
                projected = project_sweep(pts, cam, cfg.frustum, candidate)
            obj = select_object_points(pts, prop.box, cam, cfg.frustum, candidate_mask=candidate, projected=projected)
            if obj is not None and np.ptp(pts[obj.indices, 2]) > cfg.max_extent_by_height:
                obj = None
            stats.seconds_select += time.perf_counter() - t1
            if obj is None:
                stats.no_points += 1
                continue
            found.append((name, prop, obj))
    background = background_proxies(frame, candidate, proposal_boxes, [o.indices for _, _, o in found], cfg, clip,
                                    detector) if cfg.background_per_frame > 0 else []
    stats.background += len(background)
    for b in background:
        stats.per_label[b.text] += 1
    if not found:
        stats.proxies += len(background)
        return background
    t2 = time.perf_counter()
    texts = [map_label(p.label, cfg.label_map) for _, p, _ in found]
    grown, completed = complete_objects(pts, candidate, [o.indices for _, _, o in found], [n for n, _, _ in found],
                                        texts, cfg.completion)
    for (_, _, o), g in zip(found, grown):
        o.indices = g
    stats.completed += int(completed.sum())
    stats.seconds_select += time.perf_counter() - t2
    keep = deduplicate([o.indices for _, _, o in found], [p.score * np.log1p(o.indices.size) for _, p, o in found],
                       cfg.dedupe_jaccard)
    stats.duplicates += len(found) - len(keep)
    i_found = sorted(keep.tolist())  # positions in the pre-dedupe list, for the completed flags
    found = [found[i] for i in i_found]
    embeddings: Dict[int, np.ndarray] = {}
    if clip is not None:
        by_cam: Dict[str, List[int]] = {}
        for i, (name, _, _) in enumerate(found):
            by_cam.setdefault(name, []).append(i)
        for name, idx in by_cam.items():
            boxes = np.stack([found[i][1].box for i in idx])
            emb = clip.encode_crops(frame.cameras[name].image, boxes, pad_frac=cfg.crop_pad)
            for i, e in zip(idx, emb):
                embeddings[i] = e
    proxies = []
    for i, (name, prop, obj) in enumerate(found):
        cam = frame.cameras[name]
        crop = None
        if cfg.save_jpeg:
            from clip2_core.vlm import crop_boxes

            crop = crop_boxes(cam.image, prop.box[None], cfg.crop_pad)[0]
        text = texts[i_found[i]]
        proxies.append(
            Proxy(
                text=text,
                points=pts[obj.indices].astype(np.float32),
                image_embedding=embeddings.get(i),
                box_2d=prop.box,
                score=prop.score,
                provenance={
                    "scene": frame.scene,
                    "sample": frame.token,
                    "camera": name,
                    "image_token": cam.token,
                    "detector": getattr(detector, "name", type(detector).__name__),
                    "detector_label": prop.label,
                    "coverage": round(obj.coverage, 3),
                    "candidates": obj.candidates,
                    "completed": bool(completed[i_found[i]]),
                    **{f"src_{k}": v for k, v in prop.source.items()},
                },
                image_crop=crop,
            )
        )
        stats.per_label[text] += 1
        stats.points_per_proxy.append(int(obj.indices.size))
    proxies.extend(background)
    stats.proxies += len(proxies)
    return proxies


def _covered(box: np.ndarray, by: np.ndarray) -> float:
    """Share of ``box``'s area inside ``by`` (both x0, y0, x1, y1)."""
    iw = max(0.0, min(box[2], by[2]) - max(box[0], by[0]))
    ih = max(0.0, min(box[3], by[3]) - max(box[1], by[1]))
    area = max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])
    return iw * ih / area if area > 0 else 0.0


def background_proxies(frame: Frame, candidate: np.ndarray, proposal_boxes: Dict[str, List[np.ndarray]],
                       object_indices: List[np.ndarray], cfg: MineConfig, clip=None, detector=None) -> List[Proxy]:
    """Proxies of scene structure: clusters of the sweep (ground removed) that project into a
    camera with images, overlap no 2D proposal there (IoU <= ``background_max_iou`` and at most
    half inside one, any score) and share no point with a mined object; the largest ``background_per_frame`` of them, each
    with the CLIP embedding of its crop in the camera where it projects largest."""
    from clip2_core.geometry import iou_2d
    from clip2_core.recognition import BACKGROUND_TEXT, best_camera_boxes
    from clip2_core.segmentation import Segmenter

    cams = {n: c for n, c in frame.cameras.items() if c.image is not None and n in proposal_boxes}
    if not cams:
        return []
    pts = frame.points
    used = np.zeros(len(pts), dtype=bool)
    for idx in object_indices:
        used[idx] = True
    clusters = Segmenter().segment(pts).clusters
    boxes = np.array([c.box.as_array() for c in clusters]).reshape(-1, 7)
    where = best_camera_boxes(cams, boxes, min_area=400.0)  # >= 20 x 20 px: CLIP sees something
    picked = []
    for c, w in sorted(zip(clusters, where), key=lambda cw: -cw[0].num_points):
        if w is None or used[c.indices].any() or candidate[c.indices].mean() < 0.5:
            continue
        name, box2d = w
        if any(iou_2d(box2d, p) > cfg.background_max_iou or _covered(box2d, p) > 0.5 for p in proposal_boxes[name]):
            continue
        picked.append((c, name, box2d))
        if len(picked) >= cfg.background_per_frame:
            break
    embeddings: Dict[int, np.ndarray] = {}
    if clip is not None and picked:
        by_cam: Dict[str, List[int]] = {}
        for i, (_, name, _) in enumerate(picked):
            by_cam.setdefault(name, []).append(i)
        for name, idx in by_cam.items():
            emb = clip.encode_crops(cams[name].image, np.stack([picked[i][2] for i in idx]), pad_frac=cfg.crop_pad)
            for i, e in zip(idx, emb):
                embeddings[i] = e
    return [
        Proxy(text=BACKGROUND_TEXT, points=pts[c.indices].astype(np.float32), image_embedding=embeddings.get(i),
              box_2d=box2d, score=1.0,
              provenance={"scene": frame.scene, "sample": frame.token, "camera": name, "image_token": cams[name].token,
                          "detector": getattr(detector, "name", type(detector).__name__), "detector_label": None,
                          "background": True, "candidates": int(c.num_points)})
        for i, (c, name, box2d) in enumerate(picked)
    ]
