"""The recognition pipeline: one code path for the ROS node and the offline tools.

``Pipeline(config).process(frame)``: sweep -> ground removal -> clusters (nearest first, at most
``max_clusters``) -> the recognition step, :class:`clip2_core.recognition.Recognizer` (normalised
crops -> point encoder on TensorRT / ONNX Runtime / PyTorch -> cosine similarity with the
vocabulary's CLIP text bank, and with ``ensemble`` on the paper's point+image ensemble on each
cluster's best camera crop) -> labelled :class:`Detection` s. The evaluators run the same
recognizer on ground-truth crops, and the ROS node runs this object, so offline and online numbers
come from one implementation.

The vocabulary can change while frames are processed: :meth:`Pipeline.set_vocabulary` builds
the new text bank first and swaps one reference, so a concurrent ``process`` uses either the old
or the new vocabulary, never a mix (``PipelineResult.vocabulary`` names the one used).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from clip2_core import shape
from clip2_core.recognition import ClipConfig, RecognitionConfig, Recognizer, trained_metadata
from clip2_core.segmentation import SegmentationConfig, SegmentationResult, Segmenter
from clip2_core.types import Box3D, CameraView, Detection, Frame

__all__ = ["ClipConfig", "ModelConfig", "Pipeline", "PipelineConfig", "PipelineResult"]

log = logging.getLogger(__name__)
_UNSET = object()


@dataclass
class ModelConfig:
    """Which point encoder to run and on what."""

    checkpoint: Optional[str] = None  # clip2 checkpoint directory (safetensors + config.json)
    onnx: Optional[str] = None  # exported encoder (used instead of the checkpoint when given); TensorRT engines are cached beside it
    backend: str = "auto"  # auto | tensorrt | onnxruntime | torch
    num_threads: Optional[int] = None  # ONNX Runtime intra-op threads (None: its default)


@dataclass
class PipelineConfig:
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    vocabulary: List[str] = field(default_factory=lambda: list(RecognitionConfig().vocabulary))
    score_threshold: float = 0.0  # detections below this probability are dropped
    unknown_threshold: float = 0.0  # below this the label is "unknown" (kept, so rviz still shows the object)
    ensemble: bool = False  # fuse with CLIP on the camera crop
    ensemble_weight: float = 0.5  # image share of the fused logits
    background: Optional[List[str]] = None  # no-object slot texts (RecognitionConfig.background; None = as trained)
    logit_scale: Optional[float] = None  # softmax temperature (RecognitionConfig.logit_scale; None = as trained)
    max_clusters: int = 64  # nearest clusters first
    # boxes of classes with a size prior (car, truck, bus, ...; clip2_core.shape) L-shape fitted and grown to
    # the prior when partly seen. It trusts the label, and a wrong one moves the box off the object (a
    # bicycle labelled "car" by the random-CLIP test model moved 2 m), but on the demo replay it is a clear
    # win: mAP 0.154 -> 0.219, NDS 0.232 -> 0.269, recall@1m 65.2% -> 64.1% (BENCHMARKS.md, issue 13)
    shape_correction: bool = True
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

    def recognition(self) -> RecognitionConfig:
        """The recognition half (shares the ``clip`` and ``vocabulary`` objects with this config)."""
        return RecognitionConfig(vocabulary=self.vocabulary, score_threshold=self.score_threshold,
                                 unknown_threshold=self.unknown_threshold, ensemble=self.ensemble,
                                 ensemble_weight=self.ensemble_weight, top_k=self.top_k, seed=self.seed, clip=self.clip,
                                 background=self.background, logit_scale=self.logit_scale)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class PipelineResult:
    detections: List[Detection]  # one per kept cluster, LiDAR frame
    segmentation: SegmentationResult  # ground mask, per-point cluster ids, clusters
    timings_ms: Dict[str, float]  # per stage and "total"
    image_used: List[bool] = field(default_factory=list)  # per detection: camera crop fused
    vocabulary: List[str] = field(default_factory=list)  # the vocabulary this frame was labelled with
    lidar_only_fallback: bool = False  # the camera step failed and this frame was labelled from LiDAR alone
    background: List[Detection] = field(default_factory=list)  # clusters rejected as scene structure (label: the slot's text)


class Pipeline:
    """See the module docstring. Build once, call :meth:`process` per sweep.

    ``clip`` / ``embedder``: already loaded parts to use instead of building them from ``config``.
    """

    def __init__(self, config: PipelineConfig, clip=None, embedder=None):
        from clip2_core.runtime.embedders import open_embedder

        config.validate()
        self.config = config
        self.segmenter = Segmenter(config.segmentation)
        self.fallbacks: List[str] = []  # what failed to load and what is used instead (open_embedder)
        if embedder is None:
            embedder, self.fallbacks = open_embedder(config.model.onnx, config.model.checkpoint, config.model.backend,
                                                     config.model.num_threads)
        self.embedder = embedder
        log.info("point encoder %s on %s", getattr(self.embedder.config, "name", "?"), self.embedder.name)
        onnx = config.model.onnx
        if self.fallbacks and onnx and Path(getattr(self.embedder, "onnx_path", "") or "") != Path(onnx):
            onnx = None  # the ONNX file is what failed: the training metadata comes from the checkpoint
        trained = trained_metadata(config.model.checkpoint, onnx)
        self.recognizer = Recognizer(config.recognition(), self.embedder, trained=trained, clip=clip)

    @property
    def clip(self):
        """The frozen CLIP the recognizer uses."""
        return self.recognizer.clip

    @property
    def vocabulary(self) -> List[str]:
        return self.recognizer.vocabulary

    def set_vocabulary(self, vocabulary: Sequence[str], templates: Optional[Sequence[str]] = None) -> None:
        """Build the new text bank, then swap it in (``process`` calls in flight keep the old one).

        ``templates`` None keeps the templates in effect.
        """
        self.recognizer.set_vocabulary(vocabulary, templates)
        self.config.vocabulary = self.recognizer.vocabulary

    def warm_up(self) -> float:
        """Run one small synthetic sweep through every stage (ground plane + three boxes of points;
        with ``ensemble`` a grey camera image too), so the first real sweep does not pay for lazy
        initialisation (encoder runtime, kernels, CLIP's image tower, allocations); returns its time [ms]."""
        rng = np.random.default_rng(0)
        gx, gy = np.meshgrid(np.arange(-20.0, 20.0, 0.4), np.arange(-20.0, 20.0, 0.4))
        ground = np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, -1.7)], axis=1)
        objects = [rng.uniform([x - 2.0, y - 1.0, -1.6], [x + 2.0, y + 1.0, -0.2], size=(300, 3))
                   for x, y in ((8.0, 0.0), (-6.0, 4.0), (0.0, -10.0))]
        xyz = np.concatenate([ground, *objects]).astype(np.float32)
        pts = np.concatenate([xyz, np.zeros((len(xyz), 2), np.float32)], axis=1)  # intensity, ring
        frame = Frame(points=pts, point_fields=("x", "y", "z", "intensity", "ring"))
        if self.config.ensemble:  # and CLIP's image tower: a grey camera looking along +x
            T = np.eye(4)
            T[:3, :3] = [[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]
            frame.cameras = {"warm_up": CameraView(name="warm_up", K=[[500.0, 0, 320.0], [0, 500.0, 240.0], [0, 0, 1.0]],
                                                   T_lidar_to_cam=T, size_wh=(640, 480),
                                                   image=np.full((480, 640, 3), 128, np.uint8))}
        t0 = time.perf_counter()
        self.process(frame)
        return (time.perf_counter() - t0) * 1e3

    # ------------------------------------------------------------------ per frame
    def process(self, frame: Frame) -> PipelineResult:
        state = self.recognizer.state  # one consistent vocabulary for this frame
        t0 = time.perf_counter()
        seg = self.segmenter.segment(frame.points)
        clusters = seg.clusters
        if len(clusters) > self.config.max_clusters:
            rng = [float(np.hypot(*c.box.center[:2])) for c in clusters]
            clusters = [clusters[i] for i in np.argsort(rng, kind="stable")[: self.config.max_clusters]]
        timings = {"ground": seg.timings_ms["ground"], "cluster": seg.timings_ms["cluster"] + seg.timings_ms["boxes"]}
        if not clusters:
            timings["total"] = (time.perf_counter() - t0) * 1e3
            return PipelineResult([], seg, timings, [], list(state.names))
        crops = [frame.points[c.indices] for c in clusters]
        res = self.recognizer.recognize(frame, crops, np.stack([c.box.as_array() for c in clusters]), state=state)
        dets: List[Detection] = []
        background: List[Detection] = []
        used: List[bool] = []
        fov: Any = _UNSET  # the sweep's field of view, computed when the first box needs it (3 ms for 32k points)
        for i, c in enumerate(clusters):
            if res.background is not None and res.background[i]:
                background.append(Detection(box=c.box, label=res.top_k[i][0][0], score=float(res.top_k[i][0][1]),
                                            cluster_id=c.cluster_id, num_points=c.num_points))
                continue
            if not res.kept[i]:
                continue
            score = float(res.scores[i])
            box = c.box
            if self.config.shape_correction and shape.size_prior(res.labels[i]) is not None:
                if fov is _UNSET:
                    fov = shape.field_of_view(frame.points)
                fitted = c.box.as_array() if self.segmenter.config.cluster.box_fit == "l_shape" else shape.fit_l_shape(crops[i])
                box = Box3D.from_array(shape.correct_box(fitted, res.labels[i], fov=fov))
            box.label, box.score = res.labels[i], score
            dets.append(Detection(box=box, label=res.labels[i], score=score, cluster_id=c.cluster_id,
                                  num_points=c.num_points, embedding=res.embeddings[i], top_k=res.top_k[i]))
            used.append(bool(res.image_used[i]))
        timings.update(res.timings_ms)
        timings["total"] = (time.perf_counter() - t0) * 1e3
        return PipelineResult(dets, seg, timings, used, res.vocabulary, lidar_only_fallback=res.image_error is not None,
                              background=background)
