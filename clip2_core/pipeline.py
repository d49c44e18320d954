"""The recognition pipeline: one code path for the ROS node and the offline tools.

``Pipeline(config).process(frame)``: sweep -> ground removal -> clusters (nearest first, at most
``max_clusters``) -> normalised crops -> point encoder (TensorRT / ONNX Runtime / PyTorch) ->
cosine similarity with the vocabulary's CLIP text bank -> labelled :class:`Detection` s, and, with
``ensemble`` on, the paper's point+image ensemble: each cluster's box is projected into the camera
that sees it best, the crop goes through the frozen CLIP image tower, and the point and image
logits are mixed with ``ensemble_weight`` (see :mod:`clip2_core.zeroshot`).

The vocabulary can change while frames are processed: :meth:`Pipeline.set_vocabulary` builds
the new text bank first and swaps one reference, so a concurrent ``process`` uses either the old
or the new vocabulary, never a mix.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from clip2_core.geometry import box_to_2d
from clip2_core.segmentation import SegmentationConfig, SegmentationResult, Segmenter
from clip2_core.types import Detection, Frame

log = logging.getLogger(__name__)


@dataclass
class ModelConfig:
    """Which point encoder to run and on what."""

    checkpoint: Optional[str] = None  # clip2 checkpoint directory (safetensors + config.json)
    onnx: Optional[str] = None  # exported encoder (used instead of the checkpoint when given)
    engine: Optional[str] = None  # reserved for an explicit TensorRT engine path; engines are cached beside the ONNX
    backend: str = "auto"  # auto | tensorrt | onnxruntime | torch
    num_threads: Optional[int] = None  # ONNX Runtime intra-op threads (None: its default)


@dataclass
class ClipConfig:
    """The frozen CLIP whose text (and image) space the encoder was trained into."""

    model: Optional[str] = None  # open_clip architecture or local-dir:PATH; None: the checkpoint's
    weights: Optional[str] = None  # pretrained tag or weights file; None: the checkpoint's
    model_config_file: Optional[str] = None  # extra open_clip architecture JSON to register
    templates: Optional[List[str]] = None  # prompt templates; None: the encoder's training templates, else vlm.DEFAULT_TEMPLATES
    cache_dir: Optional[str] = None  # text-bank cache folder


@dataclass
class PipelineConfig:
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    vocabulary: List[str] = field(default_factory=lambda: ["car", "truck", "bus", "trailer", "construction vehicle",
                                                           "pedestrian", "motorcycle", "bicycle", "traffic cone", "barrier"])
    score_threshold: float = 0.0  # detections below this probability are dropped
    unknown_threshold: float = 0.0  # below this the label is "unknown" (kept, so rviz still shows the object)
    ensemble: bool = False  # fuse with CLIP on the camera crop
    ensemble_weight: float = 0.5  # image share of the fused logits
    max_clusters: int = 64  # nearest clusters first
    top_k: int = 3
    seed: int = 0  # point sampling seed (deterministic inputs)

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> "PipelineConfig":
        """Build from a nested dict (``segmentation.ground.*``, ``model.*``, ``clip.*``, flat rest).

        Unknown keys and wrong types raise ``ValueError`` naming the dotted key.
        """
        from clip2_core.configio import build_dataclass

        cfg = build_dataclass(cls, d, "pipeline")
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if not self.vocabulary or any(not isinstance(v, str) or not v.strip() for v in self.vocabulary):
            raise ValueError("vocabulary must be a non-empty list of non-empty strings")
        for name in ("score_threshold", "unknown_threshold", "ensemble_weight"):
            v = getattr(self, name)
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if int(self.max_clusters) < 1:
            raise ValueError(f"max_clusters must be >= 1, got {self.max_clusters}")
        if self.model.backend not in ("auto", "tensorrt", "onnxruntime", "torch"):
            raise ValueError(f"model.backend must be auto|tensorrt|onnxruntime|torch, got {self.model.backend!r}")
        if not (self.model.checkpoint or self.model.onnx):
            raise ValueError("model.checkpoint or model.onnx must name the trained point encoder")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class PipelineResult:
    detections: List[Detection]  # one per kept cluster, LiDAR frame
    segmentation: SegmentationResult  # ground mask, per-point cluster ids, clusters
    timings_ms: Dict[str, float]  # per stage and "total"
    image_used: List[bool] = field(default_factory=list)  # per detection: camera crop fused
    vocabulary: List[str] = field(default_factory=list)  # the vocabulary this frame was labelled with


class _Vocabulary:
    """An immutable (text bank, classifier) pair: swapped whole on a vocabulary change."""

    def __init__(self, bank, classifier):
        self.bank = bank
        self.classifier = classifier
        self.names = list(bank.classnames)


class Pipeline:
    """See the module docstring. Build once, call :meth:`process` per sweep."""

    def __init__(self, config: PipelineConfig, clip=None, embedder=None):
        from clip2_core.runtime.embedders import create_embedder
        from clip2_core.vlm import FrozenCLIP, VLMConfig

        config.validate()
        self.config = config
        self.segmenter = Segmenter(config.segmentation)
        source = config.model.onnx or config.model.checkpoint
        self.embedder = embedder or create_embedder(source, backend=config.model.backend, num_threads=config.model.num_threads)
        log.info("point encoder %s on %s", getattr(self.embedder.config, "name", "?"), self.embedder.name)
        trained = self._trained_meta()
        trained_clip = trained.get("clip")
        self._trained_templates = (trained.get("extra") or {}).get("templates")
        if clip is None:
            model = config.clip.model or (trained_clip or {}).get("model")
            weights = config.clip.weights if config.clip.weights is not None else (trained_clip or {}).get("pretrained")
            if model is None:
                raise ValueError("clip.model is not set and the encoder does not record the CLIP it was trained with")
            clip = FrozenCLIP(VLMConfig(model=model, pretrained=weights, model_config_file=config.clip.model_config_file))
        self.clip = clip
        if trained_clip and trained_clip.get("weights_id") and trained_clip["weights_id"] != clip.weights_id:
            log.warning(
                "the encoder was trained against CLIP weights %s but the text bank uses %s: labels will be wrong",
                trained_clip["weights_id"][:24], clip.weights_id[:24],
            )
        if clip.embed_dim != self.embedder.config.embed_dim:
            raise ValueError(f"CLIP embed dim {clip.embed_dim} != encoder embed dim {self.embedder.config.embed_dim}")
        self._lock = threading.Lock()  # serialises text-bank builds, not frames
        self._vocab = self._build_vocabulary(config.vocabulary, config.clip.templates)

    def _trained_meta(self) -> Dict[str, Any]:
        """What the encoder records about its training: ``clip`` identity, ``extra.templates``."""
        from clip2_core.checkpoint import read_checkpoint_config
        from clip2_core.runtime.export import read_onnx_metadata

        try:
            if self.config.model.onnx:
                return read_onnx_metadata(self.config.model.onnx)
            return read_checkpoint_config(self.config.model.checkpoint)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("could not read the encoder's training metadata: %s", exc)
            return {}

    def _build_vocabulary(self, vocabulary: Sequence[str], templates: Optional[Sequence[str]]) -> _Vocabulary:
        from clip2_core.vlm import DEFAULT_TEMPLATES, build_text_bank
        from clip2_core.zeroshot import ZeroShotClassifier

        templates = templates or self._trained_templates or DEFAULT_TEMPLATES
        bank = build_text_bank(self.clip, list(vocabulary), tuple(templates), self.config.clip.cache_dir)
        clf = ZeroShotClassifier(
            bank,
            unknown_threshold=self.config.unknown_threshold,
            top_k=self.config.top_k,
            image_weight=self.config.ensemble_weight,
        )
        return _Vocabulary(bank, clf)

    @property
    def vocabulary(self) -> List[str]:
        return list(self._vocab.names)

    def set_vocabulary(self, vocabulary: Sequence[str], templates: Optional[Sequence[str]] = None) -> None:
        """Build the new text bank, then swap it in (``process`` calls in flight keep the old one)."""
        with self._lock:
            new = self._build_vocabulary(vocabulary, templates if templates is not None else self.config.clip.templates)
            self._vocab = new
            self.config.vocabulary = list(new.names)
            if templates is not None:
                self.config.clip.templates = list(templates)
        log.info("vocabulary now %d names: %s", len(new.names), ", ".join(new.names[:12]))

    # ------------------------------------------------------------------ per frame
    def process(self, frame: Frame) -> PipelineResult:
        from clip2_core.encoders.normalize import normalize_clusters

        vocab = self._vocab  # one consistent vocabulary for this frame
        t0 = time.perf_counter()
        seg = self.segmenter.segment(frame.points)
        t1 = time.perf_counter()
        clusters = seg.clusters
        if len(clusters) > self.config.max_clusters:
            rng = [float(np.hypot(*c.box.center[:2])) for c in clusters]
            clusters = [clusters[i] for i in np.argsort(rng, kind="stable")[: self.config.max_clusters]]
        timings = {"ground": seg.timings_ms["ground"], "cluster": seg.timings_ms["cluster"] + seg.timings_ms["boxes"]}
        if not clusters:
            timings["total"] = (time.perf_counter() - t0) * 1e3
            return PipelineResult([], seg, timings, [], list(vocab.names))
        norm = self.embedder.config.normalization
        crops = [frame.points[c.indices] for c in clusters]
        batch = normalize_clusters(crops, norm, seed=self.config.seed, boxes=[c.box.as_array() for c in clusters])
        t2 = time.perf_counter()
        emb = self.embedder.embed(batch)
        t3 = time.perf_counter()
        img_emb, img_valid = None, None
        if self.config.ensemble and frame.cameras:
            img_emb, img_valid = self._image_embeddings(frame, clusters, emb.shape[1])
        t4 = time.perf_counter()
        res = vocab.classifier.classify(emb, img_emb, img_valid)
        dets: List[Detection] = []
        used: List[bool] = []
        for i, c in enumerate(clusters):
            score = float(res.scores[i])
            if score < self.config.score_threshold:
                continue
            box = c.box
            box.label, box.score = res.labels[i], score
            dets.append(
                Detection(
                    box=box,
                    label=res.labels[i],
                    score=score,
                    cluster_id=c.cluster_id,
                    num_points=c.num_points,
                    embedding=emb[i],
                    top_k=res.top_k[i],
                )
            )
            used.append(bool(img_valid[i]) if img_valid is not None else False)
        t5 = time.perf_counter()
        timings.update(
            {
                "normalize": (t2 - t1) * 1e3,
                "encoder": (t3 - t2) * 1e3,
                "image": (t4 - t3) * 1e3,
                "classify": (t5 - t4) * 1e3,
                "total": (t5 - t0) * 1e3,
            }
        )
        return PipelineResult(dets, seg, timings, used, list(vocab.names))

    def _image_embeddings(self, frame: Frame, clusters, dim: int):
        """CLIP embeddings of each cluster's crop in the camera that sees it largest."""
        best: Dict[int, tuple] = {}
        for cam in frame.cameras.values():
            if cam.image is None:
                continue
            for i, c in enumerate(clusters):
                b = box_to_2d(c.box.as_array(), cam.K, cam.T_lidar_to_cam, cam.size_wh)
                if b is None:
                    continue
                area = (b[2] - b[0]) * (b[3] - b[1])
                if area >= 16.0 and (i not in best or area > best[i][0]):
                    best[i] = (area, cam, b)
        emb = np.zeros((len(clusters), dim), dtype=np.float32)
        valid = np.zeros(len(clusters), dtype=bool)
        by_cam: Dict[str, List[int]] = {}
        for i, (_, cam, _) in best.items():
            by_cam.setdefault(cam.name, []).append(i)
        for name, idx in by_cam.items():
            cam = frame.cameras[name]
            boxes = np.stack([best[i][2] for i in idx])
            try:
                emb[idx] = self.clip.encode_crops(cam.image, boxes)
                valid[idx] = True
            except ValueError as exc:  # undecodable / wrong-shaped image: LiDAR-only for these clusters
                log.warning("camera %s crop embedding failed (%s); LiDAR-only for %d clusters", name, exc, len(idx))
        return emb, valid
