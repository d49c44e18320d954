"""2D proposals for mining, behind one protocol: ``Detector2D.detect(camera) -> [Proposal2D]``.

Implementations
- :class:`DetectionsFile` — boxes precomputed by any detector: the ``clip2.detections_2d/v1``
  JSON that ``clip2 synth`` writes (docs/synthetic_world.md), or COCO-style detections
  (``images`` with ``file_name``, ``categories`` with ``name``, ``annotations`` with
  ``image_id``, ``bbox`` [x, y, w, h], ``category_id``, ``score``), matched to a camera image by
  its sample_data token or by its file name (full relative path, else base name).
- :class:`OwlDetector` — an open-vocabulary detector from transformers (OWLv2 or OWL-ViT) run on
  the images with a query vocabulary. Weights from a local folder (``save_pretrained`` layout)
  or the hub cache; text is tokenised with CLIP's BPE (open_clip's tokenizer, the same vocabulary
  OWL uses) and images are preprocessed here (pad to square, resize, CLIP mean/std), so no hub
  download of processor files is ever needed.
- LiDAR proposals (clusters projected into the images and named by CLIP) live in
  :mod:`clip2_core.mining.lidar_proposals`.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Protocol, Sequence

import numpy as np

from clip2_core.types import CameraView

log = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class Proposal2D:
    """A labelled 2D box in one camera image."""

    box: np.ndarray  # (4,) float64 x0, y0, x1, y1 [px]
    label: str  # free text from the detector's vocabulary
    score: float  # detector confidence in [0, 1]
    source: Dict[str, object] = field(default_factory=dict)  # e.g. instance_token of a simulated detection


class Detector2D(Protocol):
    name: str

    def detect(self, camera: CameraView) -> List[Proposal2D]:
        """Proposals for one camera image (``camera.image`` and/or ``camera.token``/``image_path``)."""
        ...


def _valid_box(b: Sequence[float]) -> bool:
    a = np.asarray(b, dtype=np.float64)
    return a.shape == (4,) and bool(np.isfinite(a).all()) and a[2] > a[0] and a[3] > a[1]


class DetectionsFile:
    """Proposals read from a detections JSON file (ours or COCO-style)."""

    name = "detections-file"

    def __init__(self, path: str | Path, min_score: float = 0.0):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"detections file not found: {self.path}")
        try:
            data = json.loads(self.path.read_text())
        except ValueError as exc:
            raise ValueError(f"{self.path}: not valid JSON ({exc})") from exc
        self.min_score = float(min_score)
        self._by_token: Dict[str, List[Proposal2D]] = {}
        self._by_name: Dict[str, List[Proposal2D]] = {}
        self.skipped = 0
        if isinstance(data, dict) and data.get("format", "").startswith("clip2.detections_2d"):
            self._load_clip2(data)
        elif isinstance(data, dict) and {"images", "annotations", "categories"} <= set(data):
            self._load_coco(data)
        else:
            raise ValueError(
                f"{self.path}: unknown detections format; expected 'clip2.detections_2d/v1' or COCO-style "
                "{'images', 'categories', 'annotations'}"
            )
        if self.skipped:
            log.warning("%s: skipped %d malformed detections", self.path.name, self.skipped)

    def _add(self, token: Optional[str], filename: Optional[str], p: Proposal2D) -> None:
        if token:
            self._by_token.setdefault(token, []).append(p)
        if filename:
            self._by_name.setdefault(filename, []).append(p)
            self._by_name.setdefault("base:" + Path(filename).name, []).append(p)

    def _load_clip2(self, data: dict) -> None:
        for tok, img in data.get("images", {}).items():
            for d in img.get("detections", []):
                if not _valid_box(d.get("box_xyxy", ())) or not isinstance(d.get("label"), str):
                    self.skipped += 1
                    continue
                src = {k: d[k] for k in ("instance_token", "annotation_token", "category") if k in d}
                p = Proposal2D(np.asarray(d["box_xyxy"], dtype=np.float64), d["label"], float(d.get("score", 1.0)), src)
                self._add(img.get("sample_data_token", tok), img.get("filename"), p)

    def _load_coco(self, data: dict) -> None:
        names = {c["id"]: c["name"] for c in data["categories"]}
        files = {im["id"]: im.get("file_name") for im in data["images"]}
        for a in data["annotations"]:
            try:
                x, y, w, h = (float(v) for v in a["bbox"])
                label = names[a["category_id"]]
                fname = files[a["image_id"]]
            except (KeyError, ValueError, TypeError):
                self.skipped += 1
                continue
            box = np.array([x, y, x + w, y + h])
            if not _valid_box(box):
                self.skipped += 1
                continue
            token = a.get("sample_data_token")
            self._add(token, fname, Proposal2D(box, label, float(a.get("score", 1.0)), {}))

    def detect(self, camera: CameraView) -> List[Proposal2D]:
        found = None
        if camera.token and camera.token in self._by_token:
            found = self._by_token[camera.token]
        elif camera.image_path:
            p = str(camera.image_path)
            for key in self._by_name:
                if not key.startswith("base:") and (p == key or p.endswith("/" + key)):
                    found = self._by_name[key]
                    break
            if found is None:
                found = self._by_name.get("base:" + Path(p).name)
        return [p for p in (found or []) if p.score >= self.min_score]


def pad_resize_normalise(image: np.ndarray, size: int) -> "tuple":
    """OWLv2-style preprocessing: pad bottom/right to a square (grey 0.5), resize, CLIP mean/std.

    Returns (pixel_values (1, 3, size, size) float32 tensor, scale): boxes predicted in [0, 1] of
    the padded square map to pixels by multiplying with ``scale = max(H, W)``.
    """
    import torch
    import torch.nn.functional as F

    img = torch.from_numpy(np.ascontiguousarray(image)).float().div_(255.0)  # H, W, 3
    h, w = img.shape[:2]
    side = max(h, w)
    canvas = torch.full((side, side, 3), 0.5)
    canvas[:h, :w] = img
    x = canvas.permute(2, 0, 1)[None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std, float(side)


class OwlDetector:
    """OWLv2 / OWL-ViT from transformers with a text-query vocabulary."""

    name = "owl"

    def __init__(
        self,
        model: str | Path,
        queries: Sequence[str],
        score_threshold: float = 0.2,
        nms_iou: float = 0.5,
        prompt: str = "a photo of a {}",
        device: str = "cpu",
    ):
        if not queries:
            raise ValueError("OwlDetector needs at least one query")
        self.queries = list(queries)
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.device = device
        self.model = self._load(model).to(device).eval()
        vision = self.model.config.vision_config
        self.image_size = int(vision.image_size)
        ctx = int(self.model.config.text_config.max_position_embeddings)
        import open_clip

        tok = open_clip.tokenize([prompt.format(q) for q in self.queries], context_length=ctx)
        self.input_ids = tok.to(device)
        self.attention_mask = (tok != 0).long().to(device)

    @staticmethod
    def _load(model):
        from transformers import AutoConfig, Owlv2ForObjectDetection, OwlViTForObjectDetection

        if not isinstance(model, (str, Path)):
            return model  # an already built model (tests, notebooks)
        path = Path(model)
        kwargs = {}
        if not path.exists():
            kwargs["local_files_only"] = True  # hub cache only: never a download at run time
        try:
            cfg = AutoConfig.from_pretrained(str(model), **kwargs)
            cls = Owlv2ForObjectDetection if cfg.model_type == "owlv2" else OwlViTForObjectDetection
            return cls.from_pretrained(str(model), use_safetensors=True, **kwargs)  # never a pickled .bin
        except OSError as exc:
            raise FileNotFoundError(
                f"OWL detector weights {model!r} not found locally. Pass a folder saved with save_pretrained "
                f"(e.g. google/owlv2-base-patch16-ensemble downloaded on a connected machine), or populate the "
                f"Hugging Face hub cache. ({exc.__class__.__name__})"
            ) from None

    def detect(self, camera: CameraView) -> List[Proposal2D]:
        import torch
        from torchvision.ops import batched_nms

        if camera.image is None:
            return []
        pixels, scale = pad_resize_normalise(camera.image, self.image_size)
        with torch.no_grad():
            out = self.model(input_ids=self.input_ids, pixel_values=pixels.to(self.device), attention_mask=self.attention_mask)
        probs = torch.sigmoid(out.logits[0])  # (P, Q)
        score, cls = probs.max(dim=1)
        keep = score >= self.score_threshold
        if not keep.any():
            return []
        cxcywh = out.pred_boxes[0][keep] * scale
        boxes = torch.cat([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], dim=1)
        w, h = camera.image.shape[1], camera.image.shape[0]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        s, c = score[keep], cls[keep]
        order = batched_nms(boxes, s, c, self.nms_iou)
        result = []
        for i in order.tolist():
            b = boxes[i].double().cpu().numpy()
            if _valid_box(b):
                result.append(Proposal2D(b, self.queries[int(c[i])], float(s[i]), {}))
        return result
