"""The recognition step: point crops (+ camera views) -> open-vocabulary labels.

One object, :class:`Recognizer`, does this for every caller: :class:`clip2_core.pipeline.Pipeline`
(the ROS node and offline replay run it on clusters) and the evaluators in
:mod:`clip2_core.eval` (they run it on ground-truth crops). Whatever a number measures offline is
therefore what the node does online. The recognizer owns:

* **the frozen CLIP** (:func:`resolve_clip`): the model and weights come from the configuration,
  else from what the encoder recorded about its training. Random CLIP weights, and an encoder
  trained against other CLIP weights than the text bank would use, are errors
  (:class:`ClipConfigError`) unless the configuration opts in (``allow_random`` /
  ``allow_mismatch``); when allowed, :attr:`Recognizer.identity` says so in every output.
* **the prompt templates** (:func:`resolve_templates`): explicit ones, else the templates the
  encoder was trained with, else :data:`clip2_core.vlm.DEFAULT_TEMPLATES`.
* **the vocabulary**: its text bank and zero-shot classifier, one immutable
  :class:`VocabularyState` swapped whole by :meth:`Recognizer.set_vocabulary`, so a frame in
  flight is labelled with one vocabulary, never a mix.
* **crop normalisation**: the encoder's :class:`~clip2_core.encoders.normalize.NormalizationConfig`,
  with the sensor's intensity scale (``Frame.intensity_max``) when the frame states one.
* **the camera crop** of a 3D box (:func:`best_camera_boxes`: the camera where the box projects
  largest, at least :data:`MIN_CROP_AREA_PX`), its CLIP image embedding, and the point + image
  fusion (:class:`clip2_core.zeroshot.ZeroShotClassifier`).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from clip2_core.geometry import boxes_to_2d
from clip2_core.types import CameraView, Frame

log = logging.getLogger(__name__)

MIN_CROP_AREA_PX = 16.0  # [px^2] smallest projected box that gets a camera crop


class ClipConfigError(ValueError):
    """The CLIP configuration would give wrong or meaningless labels (random or mismatched weights)."""


@dataclass
class ClipConfig:
    """The frozen CLIP whose text (and image) space the encoder was trained into."""

    model: Optional[str] = None  # open_clip architecture or local-dir:PATH; None: the encoder's
    weights: Optional[str] = None  # pretrained tag or weights file; None: the encoder's
    model_config_file: Optional[str] = None  # extra open_clip architecture JSON to register
    templates: Optional[List[str]] = None  # prompt templates; None: the encoder's training templates, else vlm.DEFAULT_TEMPLATES
    cache_dir: Optional[str] = None  # text-bank cache folder
    allow_random: bool = False  # accept RANDOM CLIP weights (tests, demos); outputs then say random_clip: true
    allow_mismatch: bool = False  # accept CLIP weights other than those the encoder was trained against


@dataclass
class RecognitionConfig:
    """How crops become labels (the recognition half of :class:`clip2_core.pipeline.PipelineConfig`)."""

    vocabulary: List[str] = field(default_factory=lambda: ["car", "truck", "bus", "trailer", "construction vehicle",
                                                           "pedestrian", "motorcycle", "bicycle", "traffic cone", "barrier"])
    score_threshold: float = 0.0  # detections below this probability are dropped
    unknown_threshold: float = 0.0  # below this the label is "unknown" (kept, so rviz still shows the object)
    ensemble: bool = False  # fuse with CLIP on the camera crop
    ensemble_weight: float = 0.5  # image share of the fused logits
    top_k: int = 3
    seed: int = 0  # point sampling seed (deterministic inputs)
    clip: ClipConfig = field(default_factory=ClipConfig)
    # texts of the no-object slot: a cluster whose best match is one of them is background (scene
    # structure), not a detection. None = the background labels the encoder was trained with
    # (BACKGROUND_TEXTS found in its training vocabulary); [] = no background slot.
    background: Optional[List[str]] = None
    # softmax temperature of the cosine similarities: None = the one the encoder learned in training
    # (its checkpoint/ONNX ``extra.logit_scale``), else CLIP's 100 for encoders that did not record one
    logit_scale: Optional[float] = None


# the proxy text of background clusters (clip2_core.mining: LiDAR clusters no 2D box covers)
BACKGROUND_TEXT = "background"
BACKGROUND_TEXTS: Tuple[str, ...] = (BACKGROUND_TEXT,)


# ---------------------------------------------------------------------------------------------- resolution
def trained_metadata(checkpoint: Optional[str] = None, onnx: Optional[str] = None) -> Dict[str, Any]:
    """What an encoder records about its training: ``clip`` identity, ``extra.templates``, ``vocabulary``.

    Reads the ONNX metadata when ``onnx`` is given, else the checkpoint's ``config.json``;
    ``{}`` (with a warning) when neither is readable.
    """
    from clip2_core.runtime.export import read_onnx_metadata

    try:
        if onnx:
            return read_onnx_metadata(onnx)
        if checkpoint:
            from clip2_core.checkpoint import read_checkpoint_config

            return read_checkpoint_config(checkpoint)
    except (OSError, ValueError, KeyError) as exc:
        log.warning("could not read the encoder's training metadata: %s", exc)
    return {}


def resolve_templates(explicit: Optional[Sequence[str]], trained: Optional[Sequence[str]]) -> Tuple[str, ...]:
    """Explicit templates, else the encoder's training templates, else the built-in ensemble."""
    from clip2_core.vlm import DEFAULT_TEMPLATES, template_problem

    for cand in (explicit, trained):
        if cand:
            t = tuple(str(x) for x in cand)
            bad = [f"{x!r}: {why}" for x in t if (why := template_problem(x))]
            if bad:
                raise ValueError(f"unusable prompt template(s): {'; '.join(bad)}")
            return t
    return tuple(DEFAULT_TEMPLATES)


def check_clip(clip, trained_clip: Optional[Mapping[str, Any]], config: ClipConfig, what: str = "recognition") -> None:
    """Raise :class:`ClipConfigError` for random weights or weights other than the encoder's, unless allowed."""
    if clip.is_random and not config.allow_random:
        raise ClipConfigError(
            f"{what}: CLIP {clip.config.model} has RANDOM weights ({clip.random_reason}); its labels would not be "
            "zero-shot results. Give real weights (clip.weights / --clip-weights: a tag in your hub cache or a "
            "local file), or opt in for tests and demos with clip.allow_random: true (CLI: --allow-random-clip)."
        )
    want = (trained_clip or {}).get("weights_id")
    if want and want != clip.weights_id and not config.allow_mismatch:
        raise ClipConfigError(
            f"{what}: the encoder was trained against CLIP weights {want[:40]} but the text bank would use "
            f"{clip.weights_id[:40]}: labels would be wrong. Use the CLIP the encoder was trained with (leave "
            "clip.model / clip.weights unset to take it from the encoder), or opt in with clip.allow_mismatch: true "
            "(CLI: --allow-clip-mismatch)."
        )
    if clip.is_random:
        log.warning("%s: CLIP has RANDOM weights (allowed by configuration): labels are NOT zero-shot results", what)


def resolve_clip(config: ClipConfig, trained: Optional[Mapping[str, Any]] = None, what: str = "recognition"):
    """Load the frozen CLIP named by ``config``, falling back to the one in ``trained`` (encoder metadata).

    Raises :class:`clip2_core.vlm.WeightsUnavailableError` when the weights are not on this
    machine, :class:`ClipConfigError` for random / mismatched weights that are not allowed.
    """
    from clip2_core.vlm import FrozenCLIP, VLMConfig

    trained_clip = (trained or {}).get("clip") or {}
    model = config.model or trained_clip.get("model")
    weights = config.weights if config.weights is not None else trained_clip.get("pretrained")
    if model is None:
        raise ValueError("clip.model is not set and the encoder does not record the CLIP it was trained with")
    clip = FrozenCLIP(VLMConfig(model=model, pretrained=weights, model_config_file=config.model_config_file))
    check_clip(clip, trained_clip, config, what)
    return clip


# ---------------------------------------------------------------------------------------------- camera crops
def best_camera_boxes(cameras: Mapping[str, CameraView], boxes: np.ndarray,
                      min_area: float = MIN_CROP_AREA_PX) -> List[Optional[Tuple[str, np.ndarray]]]:
    """Per 3D box: ``(camera name, (4,) 2D box)`` of the camera where it projects largest, or None.

    Args:
        cameras: camera views with images (views whose ``image`` is None are skipped).
        boxes: ``(M, 7)`` boxes in the LiDAR frame.
        min_area: smallest projected area [px^2] that counts as a crop.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    out: List[Optional[Tuple[str, np.ndarray]]] = [None] * len(boxes)
    best_area = np.zeros(len(boxes))
    for cam in cameras.values():
        if cam.image is None:
            continue
        bb, ok = boxes_to_2d(boxes, cam.K, cam.T_lidar_to_cam, cam.size_wh)  # all boxes in one pass
        area = (bb[:, 2] - bb[:, 0]) * (bb[:, 3] - bb[:, 1])
        for i in np.flatnonzero(ok & (area >= min_area) & (area > best_area)):
            best_area[i] = area[i]
            out[i] = (cam.name, bb[i].copy())
    return out


# ---------------------------------------------------------------------------------------------- the recognizer
class VocabularyState:
    """An immutable (vocabulary, templates, text bank, classifier) set: swapped whole.

    The bank holds the vocabulary's rows, then the background slot's (``background``); ``names``
    is the vocabulary alone (what labels and label ids refer to)."""

    def __init__(self, bank, classifier, templates: Tuple[str, ...], background: Sequence[str] = ()):
        self.bank = bank
        self.classifier = classifier
        self.templates = tuple(templates)
        self.background: Tuple[str, ...] = tuple(background)
        names = list(bank.classnames)
        self.names: List[str] = names[: len(names) - len(self.background)]


@dataclass
class RecognitionResult:
    """Labels of M crops, in input order (nothing dropped: ``kept`` says what passes ``score_threshold``)."""

    labels: List[str]  # (M,) best vocabulary name, or "unknown" below unknown_threshold
    scores: np.ndarray  # (M,) float32 probability of the best name
    top_k: List[List[Tuple[str, float]]]  # (M,) [(name, prob), ...] best first
    embeddings: np.ndarray  # (M, D) float32 point embeddings
    image_used: np.ndarray  # (M,) bool: a camera crop was fused
    kept: np.ndarray  # (M,) bool: score >= score_threshold
    vocabulary: List[str]  # the vocabulary these labels come from
    timings_ms: Dict[str, float] = field(default_factory=dict)  # normalize, encoder, image, classify
    image_error: Optional[str] = None  # why the camera step fell back to LiDAR-only, if it did
    background: Optional[np.ndarray] = None  # (M,) bool: best match is the background slot (never kept)


class Recognizer:
    """See the module docstring. ``embedder``: a :class:`clip2_core.runtime.embedders.Embedder`.

    ``trained``: the encoder's training metadata (:func:`trained_metadata`); ``clip``: an already
    loaded FrozenCLIP to use (it is still checked against ``config.clip`` and ``trained``).
    """

    def __init__(self, config: RecognitionConfig, embedder, trained: Optional[Mapping[str, Any]] = None, clip=None):
        self.config = config
        self.embedder = embedder
        self.trained = dict(trained or {})
        trained_clip = self.trained.get("clip") or {}
        if clip is None:
            clip = resolve_clip(config.clip, self.trained)
        else:
            check_clip(clip, trained_clip, config.clip)
        self.clip = clip
        if clip.embed_dim != embedder.config.embed_dim:
            raise ValueError(f"CLIP embed dim {clip.embed_dim} != encoder embed dim {embedder.config.embed_dim}")
        self._trained_templates = (self.trained.get("extra") or {}).get("templates")
        if config.background is None:  # the no-object labels the encoder learned, if any
            trained_vocab = self.trained.get("vocabulary") or []
            self.background_texts: Tuple[str, ...] = tuple(t for t in BACKGROUND_TEXTS if t in trained_vocab)
        else:
            self.background_texts = tuple(config.background)
        from clip2_core.zeroshot import DEFAULT_LOGIT_SCALE

        trained_scale = (self.trained.get("extra") or {}).get("logit_scale")
        self.logit_scale = float(config.logit_scale if config.logit_scale is not None else
                                 trained_scale if trained_scale else DEFAULT_LOGIT_SCALE)
        if not self.logit_scale > 0:
            raise ValueError(f"logit_scale must be > 0, got {self.logit_scale}")
        self._lock = threading.Lock()  # serialises text-bank builds, not frames
        self._state = self.build_vocabulary(config.vocabulary, config.clip.templates)

    # -------------------------------------------------------------------- vocabulary
    @property
    def default_templates(self) -> Tuple[str, ...]:
        """The templates used when none are given: the encoder's training ones, else the built-in set."""
        return resolve_templates(None, self._trained_templates)

    @property
    def state(self) -> VocabularyState:
        return self._state

    @property
    def vocabulary(self) -> List[str]:
        return list(self._state.names)

    @property
    def templates(self) -> Tuple[str, ...]:
        return self._state.templates

    def build_vocabulary(self, vocabulary: Sequence[str], templates: Optional[Sequence[str]] = None) -> VocabularyState:
        """A new :class:`VocabularyState` (``templates`` None: the default templates); nothing is swapped."""
        from clip2_core.vlm import build_text_bank
        from clip2_core.zeroshot import ZeroShotClassifier

        tpl = resolve_templates(templates, self._trained_templates)
        background = [b for b in self.background_texts if b not in vocabulary]
        bank = build_text_bank(self.clip, list(vocabulary) + background, tpl, self.config.clip.cache_dir)
        clf = ZeroShotClassifier(bank, logit_scale=self.logit_scale, unknown_threshold=self.config.unknown_threshold,
                                 top_k=self.config.top_k, image_weight=self.config.ensemble_weight)
        return VocabularyState(bank, clf, tpl, background)

    def set_vocabulary(self, vocabulary: Sequence[str], templates: Optional[Sequence[str]] = None) -> None:
        """Build the new text bank, then swap it in (frames in flight keep the old one).

        ``templates`` None keeps the templates in effect now (the prompt set never changes silently).
        """
        with self._lock:
            new = self.build_vocabulary(vocabulary, templates if templates is not None else self._state.templates)
            self._state = new
            self.config.vocabulary = list(new.names)
            if templates is not None:
                self.config.clip.templates = list(templates)
        log.info("vocabulary now %d names: %s", len(new.names), ", ".join(new.names[:12]))

    @property
    def identity(self) -> Dict[str, Any]:
        """What produced these labels, for every output document: CLIP identity, ``random_clip``, encoder."""
        return {
            "clip": {"model": self.clip.config.model, "weights_id": self.clip.weights_id,
                     "random": bool(self.clip.is_random)},
            "random_clip": bool(self.clip.is_random),
            "encoder": getattr(self.embedder.config, "name", "?"),
            "backend": getattr(self.embedder, "name", "?"),
            "templates": list(self._state.templates),
            "logit_scale": self.logit_scale,
            "background": list(self.background_texts),
        }

    # -------------------------------------------------------------------- the steps
    def normalization(self, intensity_max: Optional[float] = None):
        """The encoder's normalisation, with the sensor's intensity scale when the frame states one."""
        norm = self.embedder.config.normalization
        if intensity_max is not None and norm.intensity_max is not None and float(intensity_max) != norm.intensity_max:
            norm = dataclasses.replace(norm, intensity_max=float(intensity_max))
        return norm

    def encoder_inputs(self, crops: Sequence[np.ndarray], boxes: np.ndarray,
                       intensity_max: Optional[float] = None) -> np.ndarray:
        """``(M, P, 4)`` float32 encoder input of ``crops`` (each ``(K, C)``) centred on ``boxes`` ``(M, 7)``;
        crop ``i`` is sampled with seed ``[config.seed, i]``."""
        from clip2_core.encoders.normalize import normalize_clusters

        norm = self.normalization(intensity_max)
        if len(crops) == 0:
            return np.zeros((0, norm.num_points, 4), dtype=np.float32)
        return normalize_clusters(list(crops), norm, seed=self.config.seed,
                                  boxes=list(np.asarray(boxes, dtype=np.float64).reshape(-1, 7)))

    def embed_points(self, crops: Sequence[np.ndarray], boxes: np.ndarray,
                     intensity_max: Optional[float] = None) -> np.ndarray:
        """``(M, D)`` point embeddings of ``crops`` (each ``(K, C)``) centred on ``boxes`` ``(M, 7)``."""
        return self._embed(self.encoder_inputs(crops, boxes, intensity_max))

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, self.embedder.config.embed_dim), dtype=np.float32)
        return self.embedder.embed(batch)

    def embed_images(self, frame: Frame, boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """CLIP embeddings ``(M, D)`` of each box's best camera crop, and ``(M,)`` bool validity.

        A camera whose crops cannot be embedded (undecodable / wrong-shaped image) is skipped with a
        warning: those boxes go LiDAR-only.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
        emb = np.zeros((len(boxes), self.clip.embed_dim), dtype=np.float32)
        valid = np.zeros(len(boxes), dtype=bool)
        by_cam: Dict[str, List[int]] = {}
        where = best_camera_boxes(frame.cameras, boxes)
        for i, w in enumerate(where):
            if w is not None:
                by_cam.setdefault(w[0], []).append(i)
        from clip2_core.vlm import crop_boxes

        crops, owners = [], []  # every camera's crops in one batch through the image tower
        for name, idx in by_cam.items():
            try:
                image = frame.cameras[name].image
                shape = getattr(image, "shape", ())
                if len(shape) != 3 or shape[2] != 3:
                    raise ValueError(f"image must be (H, W, 3) RGB, got shape {shape}")
                crops += crop_boxes(image, np.stack([where[i][1] for i in idx]))
                owners += idx
            except ValueError as exc:
                log.warning("camera %s crop embedding failed (%s); LiDAR-only for %d objects", name, exc, len(idx))
        if crops:
            emb[owners] = self.clip.encode_images(crops)
            valid[owners] = True
        return emb, valid

    def recognize(self, frame: Frame, crops: Sequence[np.ndarray], boxes: np.ndarray,
                  state: Optional[VocabularyState] = None, ensemble: Optional[bool] = None) -> RecognitionResult:
        """Label ``crops`` (point rows of ``frame``) with ``boxes`` ``(M, 7)``.

        ``state``: the vocabulary to use (default: the current one, read once); ``ensemble``:
        override ``config.ensemble``. A failure in the camera step (any exception) falls back to
        LiDAR-only for the whole frame and is reported in ``image_error``.
        """
        state = state or self._state
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
        t0 = time.perf_counter()
        batch = self.encoder_inputs(crops, boxes, frame.intensity_max)
        tn = time.perf_counter()
        emb = self._embed(batch)
        t1 = time.perf_counter()
        img, valid, err = None, None, None
        use_images = self.config.ensemble if ensemble is None else ensemble
        if use_images and frame.cameras and len(crops):
            try:
                img, valid = self.embed_images(frame, boxes)
            except Exception as exc:  # a broken camera never costs the LiDAR result
                err = f"{type(exc).__name__}: {exc}"
                log.warning("camera step failed (%s); LiDAR-only for this frame", err)
                img, valid = None, None
        t2 = time.perf_counter()
        res = state.classifier.classify(emb, img, valid)
        scores = np.asarray(res.scores, dtype=np.float32)
        # the argmax decides background, whatever the unknown threshold made of the label
        bg = np.array([bool(t) and t[0][0] in state.background for t in res.top_k], dtype=bool)
        t3 = time.perf_counter()
        return RecognitionResult(
            labels=list(res.labels),
            scores=scores,
            top_k=res.top_k,
            embeddings=emb,
            image_used=np.asarray(valid, dtype=bool) if valid is not None else np.zeros(len(crops), dtype=bool),
            kept=(scores >= self.config.score_threshold) & ~bg,
            vocabulary=list(state.names),
            timings_ms={"normalize": (tn - t0) * 1e3, "encoder": (t1 - tn) * 1e3, "image": (t2 - t1) * 1e3, "classify": (t3 - t2) * 1e3},
            image_error=err,
            background=bg,
        )
