"""The paper's recognition protocol: zero-shot top-1 on ground-truth object crops.

Every annotated object with at least ``min_points`` LiDAR points is cropped (the points inside its
box), normalised exactly as in training and in the online pipeline, embedded by the point
encoder, and classified against the CLIP text bank of the vocabulary (prompt ensemble). Reported:
top-1 per class, mean class accuracy (the paper's headline number), overall accuracy, the
confusion matrix; optionally the point+image ensemble (CLIP on the object's best camera crop)
beside point-only.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from clip2_core.types import Frame

if TYPE_CHECKING:
    from clip2_core.segmentation import GroundConfig

log = logging.getLogger(__name__)

# (ground-truth label, text given to CLIP)
VOCABULARIES: Dict[str, List[Tuple[str, str]]] = {
    "nuscenes10": [
        ("car", "car"), ("truck", "truck"), ("bus", "bus"), ("trailer", "trailer"),
        ("construction_vehicle", "construction vehicle"), ("pedestrian", "pedestrian"), ("motorcycle", "motorcycle"),
        ("bicycle", "bicycle"), ("traffic_cone", "traffic cone"), ("barrier", "barrier"),
    ],
}


def load_vocabulary(spec: str) -> List[Tuple[str, str]]:
    """A named vocabulary (``nuscenes10``) or a file: JSON list of names, JSON object
    ``{gt_label: text}``, or a text file with one name per line. Names double as texts
    (underscores become spaces)."""
    if spec in VOCABULARIES:
        return list(VOCABULARIES[spec])
    p = Path(spec)
    if not p.is_file():
        raise FileNotFoundError(f"vocabulary {spec!r} is neither one of {sorted(VOCABULARIES)} nor a file")
    text = p.read_text()
    if p.suffix == ".json":
        data = json.loads(text)
        if isinstance(data, dict):
            pairs = [(str(k), str(v)) for k, v in data.items()]
        elif isinstance(data, list):
            pairs = [(str(n), str(n).replace("_", " ")) for n in data]
        else:
            raise ValueError(f"{p}: expected a JSON list or object")
    else:
        names = [ln.strip() for ln in text.splitlines()]
        pairs = [(n, n.replace("_", " ")) for n in names if n and not n.startswith("#")]
    if len(pairs) < 2:
        raise ValueError(f"{p}: a vocabulary needs at least 2 names")
    return pairs


def confusion_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> Dict[str, object]:
    """Confusion matrix (rows = truth) and accuracies; classes absent from ``y_true`` are left
    out of the mean (their accuracy is NaN)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, np.diag(cm) / support, np.nan)
    present = support > 0
    return {
        "confusion": cm,
        "per_class_acc": per_class,
        "support": support,
        "mean_class_acc": float(np.nanmean(per_class)) if present.any() else float("nan"),
        "overall_acc": float(np.trace(cm) / cm.sum()) if cm.sum() else float("nan"),
    }


@dataclass
class RecognitionReport:
    classes: List[str]  # ground-truth labels, in row order
    texts: List[str]  # what CLIP was given for each class
    point: Dict[str, object]  # confusion_metrics of point-only
    ensemble: Optional[Dict[str, object]] = None  # same, point + image ensemble (objects without a crop use points)
    meta: Dict[str, object] = field(default_factory=dict)

    def to_json(self) -> Dict[str, object]:
        def clean(m):
            if m is None:
                return None
            return {
                "mean_class_acc": m["mean_class_acc"],
                "overall_acc": m["overall_acc"],
                "per_class_acc": {c: (None if np.isnan(a) else float(a)) for c, a in zip(self.classes, m["per_class_acc"])},
                "support": {c: int(s) for c, s in zip(self.classes, m["support"])},
                "confusion": np.asarray(m["confusion"]).tolist(),
            }

        return {"classes": self.classes, "texts": self.texts, "point": clean(self.point), "ensemble": clean(self.ensemble),
                "meta": self.meta}


def evaluate_recognition(
    frames: Iterable[Frame],
    recognizer,
    vocabulary: Sequence[Tuple[str, str]],
    min_points: int = 5,
    ensemble: bool = False,
    ground: Optional["GroundConfig"] = None,
    progress: bool = True,
    remove_ground_points: bool = True,
) -> RecognitionReport:
    """Run the protocol over ``frames`` (with ``gt_boxes``; cameras with images for the ensemble).

    Args:
        recognizer: the :class:`clip2_core.recognition.Recognizer` the pipeline runs (its CLIP,
            templates, normalisation, camera-crop choice and fusion weight are what is measured).
        vocabulary: ``(ground-truth label, text given to CLIP)`` pairs; the recognizer's own
            vocabulary is left as it is.
        ensemble: also score the point + image ensemble.
        ground: the pipeline's ground filter (``PipelineConfig.segmentation.ground``; default
            :class:`~clip2_core.segmentation.GroundConfig`).
        remove_ground_points: crop the box's points minus those the ground filter removes, i.e.
            what the online pipeline sees of the object (``min_points`` counts what remains);
            off: every point inside the box.

    Each crop goes through the recognition step exactly as a cluster of the same points would
    in :meth:`clip2_core.pipeline.Pipeline.process`: centred on its fitted box, sampled with the
    recognizer's seed, its camera crop chosen from the fitted box.
    """
    from tqdm import tqdm

    from clip2_core.datasets.nuscenes import GTCrop, box_point_masks, gt_object_crops
    from clip2_core.geometry import fit_box
    from clip2_core.segmentation import GroundConfig, remove_ground

    ground = ground or GroundConfig()
    classes = [c for c, _ in vocabulary]
    texts = [t for _, t in vocabulary]
    state = recognizer.state if recognizer.vocabulary == texts else recognizer.build_vocabulary(texts, recognizer.templates)
    index = {c: i for i, c in enumerate(classes)}
    y_true: List[int] = []
    y_point: List[int] = []
    y_ens: List[int] = []
    n_images = 0
    for frame in tqdm(frames, desc="eval recognition", unit="frame", disable=not progress):
        if remove_ground_points and frame.gt_boxes:
            keep = ~remove_ground(frame.points, ground)
            masks = box_point_masks(frame) & keep[:, None]
            crops = [GTCrop(frame.points[masks[:, j]], str(b.label), b) for j, b in enumerate(frame.gt_boxes)
                     if b.label in index and int(masks[:, j].sum()) >= min_points]
        else:
            crops = [c for c in gt_object_crops(frame, min_points=min_points) if c.label in index]
        if not crops:
            continue
        points = [c.points for c in crops]
        boxes = np.stack([fit_box(p[:, :3]) for p in points])
        emb = recognizer.embed_points(points, boxes, frame.intensity_max)  # once for both scores
        y_true += [index[c.label] for c in crops]
        y_point += _top1(state.classifier.classify(emb), len(state.names))
        if ensemble:
            img, valid = recognizer.embed_images(frame, boxes)
            n_images += int(valid.sum())
            y_ens += _top1(state.classifier.classify(emb, img, valid), len(state.names))
    if not y_true:
        raise ValueError(f"no ground-truth crops with >= {min_points} points and a label in the vocabulary {classes}")
    ident = recognizer.identity
    report = RecognitionReport(
        classes=classes,
        texts=texts,
        point=confusion_metrics(np.array(y_true), np.array(y_point), len(classes)),
        ensemble=confusion_metrics(np.array(y_true), np.array(y_ens), len(classes)) if ensemble else None,
        meta={"objects": len(y_true), "min_points": min_points,
              "ensemble_weight": recognizer.config.ensemble_weight if ensemble else None,
              "ground_removed": remove_ground_points, "objects_with_image_crop": n_images,
              "clip": recognizer.clip.identity, "random_clip": ident["random_clip"], "backend": ident["backend"],
              "encoder": ident["encoder"], "templates": list(state.templates)},
    )
    if ident["random_clip"]:
        report.meta["warning"] = "CLIP weights are RANDOM: these numbers check the machinery, they are not zero-shot results"
    return report


def _top1(result, n_classes: int) -> List[int]:
    """Top-1 vocabulary index per crop (the protocol scores top-1 among the vocabulary's classes,
    whatever the unknown threshold; a background slot's columns, after them, are not candidates)."""
    return np.argmax(result.probs[:, :n_classes], axis=1).tolist()


def write_report(report: RecognitionReport, out_dir: str | Path, title: str = "Recognition") -> Dict[str, Path]:
    """report.json, report.md and confusion.png (point-only; confusion_ensemble.png too)."""
    from clip2_core.viz import save_confusion_png

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = report.to_json()
    (out / "report.json").write_text(json.dumps(data, indent=1))
    lines = [f"# {title}", ""]
    if "warning" in report.meta:
        lines += [f"> **{report.meta['warning']}**", ""]
    lines += [f"Objects: {report.meta['objects']} (GT crops with >= {report.meta['min_points']} points); "
              f"encoder {report.meta['encoder']} on {report.meta['backend']}; CLIP {report.meta['clip'].get('model')}.", ""]
    head = "| class | text | objects | point top-1 |" + (" ensemble top-1 |" if report.ensemble else "")
    lines += [head, "|---|---|---|---|" + ("---|" if report.ensemble else "")]
    for i, (c, t) in enumerate(zip(report.classes, report.texts)):
        pa = report.point["per_class_acc"][i]
        row = f"| {c} | {t} | {int(report.point['support'][i])} | {'-' if np.isnan(pa) else f'{pa:.3f}'} |"
        if report.ensemble:
            ea = report.ensemble["per_class_acc"][i]
            row += f" {'-' if np.isnan(ea) else f'{ea:.3f}'} |"
        lines.append(row)
    lines += ["", f"**Mean class accuracy (point): {report.point['mean_class_acc']:.4f}**, overall {report.point['overall_acc']:.4f}"]
    if report.ensemble:
        lines.append(f"**Mean class accuracy (point + image, w={report.meta['ensemble_weight']}): "
                     f"{report.ensemble['mean_class_acc']:.4f}**, overall {report.ensemble['overall_acc']:.4f} "
                     f"({report.meta['objects_with_image_crop']} objects had a camera crop)")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    paths = {"json": out / "report.json", "md": out / "report.md",
             "confusion": save_confusion_png(out / "confusion.png", report.point["confusion"], report.classes, "point-only")}
    if report.ensemble:
        paths["confusion_ensemble"] = save_confusion_png(out / "confusion_ensemble.png", report.ensemble["confusion"],
                                                     report.classes, "point + image")
    return paths
