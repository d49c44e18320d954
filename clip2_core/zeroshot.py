"""Zero-shot recognition: point (and optionally image) embeddings vs a vocabulary's text bank.

``logits = scale * emb @ text_bank.T`` with ``scale = 100`` (CLIP's trained logit scale), then a
softmax over the vocabulary. A cluster whose best probability is below ``unknown_threshold``
is labelled ``"unknown"`` (its top-k list is kept for inspection).

Ensemble with the camera (the paper's optional point+image ensemble): when a cluster also has a
CLIP image embedding of its camera crop, its probabilities are
``softmax((1 - w) * point_logits + w * image_logits)`` with ``w = image_weight``
(default :data:`DEFAULT_IMAGE_WEIGHT` = 0.5, an equal-weight logit average). Clusters without
a crop (``image_valid`` False) use their point logits alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

UNKNOWN = "unknown"
DEFAULT_LOGIT_SCALE = 100.0
DEFAULT_IMAGE_WEIGHT = 0.5


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


@dataclass
class ZeroShotResult:
    """Per-cluster predictions for N clusters over a vocabulary of V names."""

    labels: List[str]  # (N,) best name, or "unknown" below the threshold
    scores: np.ndarray  # (N,) float32 probability of the best name (even when labelled unknown)
    probs: np.ndarray  # (N, V) float32 softmax over the vocabulary
    top_k: List[List[Tuple[str, float]]] = field(default_factory=list)  # (N,) [(name, prob), ...] best first


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(min=1e-12)


class ZeroShotClassifier:
    """Classify embeddings against a text bank (a :class:`clip2_core.vlm.TextBank` or arrays)."""

    def __init__(
        self,
        text_embeddings: Union[np.ndarray, "object"],
        classnames: Optional[Sequence[str]] = None,
        logit_scale: float = DEFAULT_LOGIT_SCALE,
        unknown_threshold: float = 0.0,
        top_k: int = 5,
        image_weight: float = DEFAULT_IMAGE_WEIGHT,
    ) -> None:
        if hasattr(text_embeddings, "embeddings") and hasattr(text_embeddings, "classnames"):
            classnames = text_embeddings.classnames if classnames is None else classnames
            text_embeddings = text_embeddings.embeddings
        emb = np.asarray(text_embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] == 0:
            raise ValueError(f"text embeddings must be (V>0, D), got {emb.shape}")
        if classnames is None or len(classnames) != emb.shape[0]:
            raise ValueError("need one class name per text-embedding row")
        if not 0.0 <= unknown_threshold <= 1.0:
            raise ValueError(f"unknown_threshold must be in [0, 1], got {unknown_threshold}")
        if not 0.0 <= image_weight <= 1.0:
            raise ValueError(f"image_weight must be in [0, 1], got {image_weight}")
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        self.text = _unit(emb)
        self.classnames = list(classnames)
        self.logit_scale = float(logit_scale)
        self.unknown_threshold = float(unknown_threshold)
        self.top_k = int(top_k)
        self.image_weight = float(image_weight)

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        """``(N, V)`` float32 scaled cosine similarities of ``(N, D)`` embeddings."""
        e = np.asarray(embeddings, dtype=np.float32)
        if e.ndim != 2 or e.shape[1] != self.text.shape[1]:
            raise ValueError(f"embeddings must be (N, {self.text.shape[1]}), got {e.shape}")
        return (self.logit_scale * _unit(e) @ self.text.T).astype(np.float32)

    def fuse_logits(self, point_logits: np.ndarray, image_logits: Optional[np.ndarray] = None,
                    image_valid: Optional[np.ndarray] = None) -> np.ndarray:
        """``(1 - w) * point + w * image`` per row where an image exists, else the point logits."""
        if image_logits is None:
            return point_logits
        if image_logits.shape != point_logits.shape:
            raise ValueError(f"image logits {image_logits.shape} vs point logits {point_logits.shape}")
        w = self.image_weight
        fused = (1.0 - w) * point_logits + w * image_logits
        if image_valid is not None:
            valid = np.asarray(image_valid, dtype=bool).reshape(-1)
            if valid.shape[0] != point_logits.shape[0]:
                raise ValueError("image_valid must have one flag per row")
            fused = np.where(valid[:, None], fused, point_logits)
        return fused

    def classify(self, point_embeddings: np.ndarray, image_embeddings: Optional[np.ndarray] = None,
                 image_valid: Optional[np.ndarray] = None) -> ZeroShotResult:
        """Labels, scores, probabilities and top-k for ``(N, D)`` point embeddings."""
        pl = self.logits(point_embeddings)
        il = None if image_embeddings is None else self.logits(image_embeddings)
        probs = softmax(self.fuse_logits(pl, il, image_valid)).astype(np.float32)
        n = probs.shape[0]
        k = min(self.top_k, probs.shape[1])
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        best = order[:, 0] if n else np.zeros(0, dtype=np.int64)
        scores = probs[np.arange(n), best] if n else np.zeros(0, dtype=np.float32)
        labels = [self.classnames[b] if s >= self.unknown_threshold else UNKNOWN for b, s in zip(best, scores)]
        top = [[(self.classnames[j], float(probs[i, j])) for j in order[i]] for i in range(n)]
        return ZeroShotResult(labels=labels, scores=scores.astype(np.float32), probs=probs, top_k=top)
