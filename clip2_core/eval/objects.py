"""Object benchmarks (ScanObjectNN, ModelNet40): zero-shot top-1 / top-5 and few-shot linear probes.

Every object of the test split is one crop: the same recognition step as the LiDAR protocol
(:class:`clip2_core.eval.recognition.CropScorer`: centred on its fitted box, the encoder's
normalisation, the vocabulary's text bank), so clip2, the PointCLIP projection baseline and their
ensemble are scored side by side on the same objects.

Few-shot: for each ``k`` in ``shots``, ``k`` training objects per class are drawn (seeded; their
indices are in the report), a multinomial logistic regression (scikit-learn) is fitted on their
frozen clip2 embeddings and scored on the whole test split, beside zero-shot.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from clip2_core.datasets.objects import ObjectDataset

PUBLISHED_SCANOBJECTNN = {  # zero-shot top-1 on ScanObjectNN as published (the peers), for the report
    "PointCLIP V2": "42.2-50.1%", "ULIP": "51.5%", "OpenShape": "56.7%", "Uni3D": "65.3-66.5%",
}


def object_boxes(points: Sequence[np.ndarray], object_size: Optional[float] = None):
    """(crops, boxes): each object optionally scaled so its fitted box's longest side is
    ``object_size`` metres (the datasets store unit-sphere objects; the encoder learnt metric ones)."""
    from clip2_core.geometry import fit_box

    crops, boxes = [], []
    for p in points:
        p = np.asarray(p, dtype=np.float64)[:, :3]
        b = fit_box(p)
        if object_size is not None:
            s = float(object_size) / max(float(np.max(b[3:6])), 1e-9)
            p = (p - b[:3]) * s + b[:3]
            b = fit_box(p)
        crops.append(p.astype(np.float32))
        boxes.append(b)
    return crops, np.asarray(boxes, dtype=np.float64).reshape(-1, 7)


def _embed_all(recognizer, points, object_size, batch_size):
    crops, boxes = object_boxes(points, object_size)
    out = [recognizer.embed_points(crops[i:i + batch_size], boxes[i:i + batch_size]) for i in range(0, len(crops), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, recognizer.embedder.config.embed_dim), np.float32)


def evaluate_objects(test: ObjectDataset, recognizer, methods: Sequence[str] = ("clip2",), pointclip=None,
                     pointclip_weight: float = 0.5, object_size: Optional[float] = None, batch_size: int = 64,
                     train: Optional[ObjectDataset] = None, shots: Sequence[int] = (), seed: int = 0,
                     progress: bool = True):
    """A :class:`~clip2_core.eval.recognition.RecognitionReport` of ``test`` (``few_shot`` in its meta
    when ``train`` and ``shots`` are given)."""
    from tqdm import tqdm

    from clip2_core.eval.recognition import CropScorer, scorer_report, vocabulary_state

    if len(test) == 0:
        raise ValueError(f"{test.name} {test.split}: no objects")
    state = vocabulary_state(recognizer, test.texts)
    scorer = CropScorer(recognizer, state, methods, pointclip, pointclip_weight)
    for i in tqdm(range(0, len(test), batch_size), desc=f"eval {test.name}", unit="batch", disable=not progress):
        crops, boxes = object_boxes(test.points[i:i + batch_size], object_size)
        scorer.add(test.labels[i:i + batch_size].tolist(), crops, boxes)
    report = scorer_report(scorer, recognizer, test.classes, test.texts,
                           {"objects": len(test), "dataset": test.name, "split": test.split,
                            "object_size_m": object_size, "files": [str(f) for f in test.source[:8]]})
    if train is not None and shots:
        test_emb = np.concatenate(scorer.embeddings)
        report.meta["few_shot"] = few_shot_probe(train, recognizer, test_emb, test.labels, shots, seed, object_size,
                                                 batch_size)
    return report


def sample_shots(labels: np.ndarray, num_classes: int, k: int, rng: np.random.Generator) -> Dict[int, List[int]]:
    """``k`` indices per class (fewer where a class has fewer objects), drawn without replacement."""
    out = {}
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx):
            out[c] = sorted(rng.choice(idx, size=min(k, len(idx)), replace=False).tolist())
    return out


def few_shot_probe(train: ObjectDataset, recognizer, test_emb: np.ndarray, test_labels: np.ndarray,
                   shots: Sequence[int], seed: int = 0, object_size: Optional[float] = None,
                   batch_size: int = 64, C: float = 10.0) -> List[Dict]:
    """Linear probes on frozen embeddings, one per ``k``: mean class / overall top-1 on the test
    embeddings, and the training indices used (per class name)."""
    from sklearn.linear_model import LogisticRegression

    from clip2_core.eval.recognition import confusion_metrics

    if len(train) == 0:
        raise ValueError(f"{train.name} {train.split}: no training objects")
    n = len(train.classes)
    rng = np.random.default_rng(seed)
    draws = {int(k): sample_shots(train.labels, n, int(k), rng) for k in shots}
    needed = sorted({i for d in draws.values() for idx in d.values() for i in idx})
    emb = dict(zip(needed, _embed_all(recognizer, [train.points[i] for i in needed], object_size, batch_size)))
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)  # noqa: E731
    xt = unit(np.asarray(test_emb, dtype=np.float64))
    rows = []
    for k, draw in draws.items():
        idx = [i for c in sorted(draw) for i in draw[c]]
        x, y = unit(np.stack([emb[i] for i in idx]).astype(np.float64)), train.labels[idx]
        if len(set(y.tolist())) < 2:
            raise ValueError(f"{k}-shot: the training split has objects of fewer than 2 classes")
        clf = LogisticRegression(C=C, max_iter=2000).fit(x, y)
        pred = clf.classes_[np.argmax(clf.decision_function(xt), axis=1)]
        m = confusion_metrics(np.asarray(test_labels), pred, n)
        rows.append({"shots": k, "mean_class_acc": m["mean_class_acc"], "overall_acc": m["overall_acc"],
                     "train_objects": len(idx), "seed": seed,
                     "samples": {train.classes[c]: v for c, v in sorted(draw.items())}})
    return rows
