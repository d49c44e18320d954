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
    # the paper's SUN RGB-D protocol: the 10 common classes of the VoteNet split
    "sunrgbd10": [
        ("bed", "bed"), ("table", "table"), ("sofa", "sofa"), ("chair", "chair"), ("toilet", "toilet"),
        ("desk", "desk"), ("dresser", "dresser"), ("night_stand", "night stand"), ("bookshelf", "bookshelf"),
        ("bathtub", "bathtub"),
    ],
}

# Published zero-shot mean class accuracy on the default vocabularies (CLIP2, CVPR 2023, tables 1
# and 2), printed beside ours in reports. Figures from the paper, not measured here.
PUBLISHED_NUSCENES = {"CLIP2": "37.8%", "PointCLIP": "11.7%"}
PUBLISHED_SUNRGBD = {"CLIP2": "61.3%", "Clip2Point": "18.6%"}


def load_vocabulary(spec: str) -> List[Tuple[str, str]]:
    """A named vocabulary (``nuscenes10``, ``sunrgbd10``) or a file: JSON list of names, JSON object
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


def confusion_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int,
                      top5_hit: Optional[np.ndarray] = None) -> Dict[str, object]:
    """Confusion matrix (rows = truth) and accuracies; classes absent from ``y_true`` are left
    out of the mean (their accuracy is NaN). ``top5_hit`` (per object, bool): the truth is among
    the five best classes; adds ``top5_acc`` (overall) and ``mean_class_top5``."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, np.diag(cm) / support, np.nan)
    present = support > 0
    out = {
        "confusion": cm,
        "per_class_acc": per_class,
        "support": support,
        "mean_class_acc": float(np.nanmean(per_class)) if present.any() else float("nan"),
        "overall_acc": float(np.trace(cm) / cm.sum()) if cm.sum() else float("nan"),
    }
    if top5_hit is not None:
        hit = np.asarray(top5_hit, dtype=bool).reshape(-1)
        if hit.shape[0] != y_true.shape[0]:
            raise ValueError(f"{hit.shape[0]} top-5 flags for {y_true.shape[0]} objects")
        per5 = np.array([hit[y_true == c].mean() if support[c] else np.nan for c in range(num_classes)])
        out["top5_acc"] = float(hit.mean()) if hit.size else float("nan")
        out["mean_class_top5"] = float(np.nanmean(per5)) if present.any() else float("nan")
    return out


@dataclass
class RecognitionReport:
    classes: List[str]  # ground-truth labels, in row order
    texts: List[str]  # what CLIP was given for each class
    point: Dict[str, object]  # confusion_metrics of point-only
    ensemble: Optional[Dict[str, object]] = None  # same, point + image ensemble (objects without a crop use points)
    meta: Dict[str, object] = field(default_factory=dict)
    # other methods on the same crops: "pointclip" (the projection baseline), "clip2+pointclip"
    baselines: Dict[str, Dict[str, object]] = field(default_factory=dict)

    def to_json(self) -> Dict[str, object]:
        def clean(m):
            if m is None:
                return None
            out = {
                "mean_class_acc": m["mean_class_acc"],
                "overall_acc": m["overall_acc"],
                "per_class_acc": {c: (None if np.isnan(a) else float(a)) for c, a in zip(self.classes, m["per_class_acc"])},
                "support": {c: int(s) for c, s in zip(self.classes, m["support"])},
                "confusion": np.asarray(m["confusion"]).tolist(),
            }
            out.update({k: m[k] for k in ("top5_acc", "mean_class_top5") if k in m})
            return out

        data = {"classes": self.classes, "texts": self.texts, "point": clean(self.point), "ensemble": clean(self.ensemble),
                "meta": self.meta}
        if self.baselines:
            data["baselines"] = {k: clean(v) for k, v in self.baselines.items()}
        return data


METHODS = ("clip2", "pointclip", "clip2+pointclip")


class CropScorer:
    """Top-1 / top-5 of every method asked for, accumulated over batches of the same crops.

    ``clip2``: the point encoder vs the text bank (always scored: it is the report's ``point``);
    ``pointclip``: :class:`clip2_core.eval.pointclip.PointCLIPBaseline` on the crops' depth maps;
    ``clip2+pointclip``: ``(1 - w) * clip2 + w * pointclip`` logits, ``w = pointclip_weight``;
    ``image`` (``ensemble``): the point + camera-crop ensemble of the recognizer.
    """

    def __init__(self, recognizer, state, methods: Sequence[str] = ("clip2",), pointclip=None,
                 pointclip_weight: float = 0.5, ensemble: bool = False) -> None:
        unknown = sorted(set(methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
        if not 0.0 <= pointclip_weight <= 1.0:
            raise ValueError(f"pointclip_weight must be in [0, 1], got {pointclip_weight}")
        self.recognizer, self.state = recognizer, state
        self.methods = [m for m in METHODS if m in methods or m == "clip2"]
        if any("pointclip" in m for m in self.methods) and pointclip is None:
            from clip2_core.eval.pointclip import PointCLIPBaseline

            pointclip = PointCLIPBaseline(recognizer.clip)
        self.pointclip, self.pointclip_weight, self.ensemble = pointclip, float(pointclip_weight), bool(ensemble)
        self.n = len(state.names)
        self.y_true: List[int] = []
        self.embeddings: List[np.ndarray] = []  # the point embeddings, in order (few-shot probes reuse them)
        self.logits: Dict[str, List[np.ndarray]] = {m: [] for m in self.methods + (["image"] if ensemble else [])}
        self.n_images = 0

    def add(self, labels: Sequence[int], crops: Sequence[np.ndarray], boxes: np.ndarray,
            intensity_max: Optional[float] = None, frame: Optional[Frame] = None) -> None:
        """Score ``crops`` (each ``(K, C)``, truth ``labels``) centred on ``boxes`` ``(M, 7)``;
        ``frame``: where the camera crops come from (the ``image`` ensemble)."""
        if not len(crops):
            return
        clf = self.state.classifier
        emb = self.recognizer.embed_points(crops, boxes, intensity_max)
        point = clf.logits(emb)[:, : self.n]
        self.y_true += list(labels)
        self.embeddings.append(emb)
        self.logits["clip2"].append(point)
        if self.pointclip is not None:
            pc = self.pointclip.logits(crops, boxes, self.state.bank.embeddings[: self.n])
            if "pointclip" in self.logits:
                self.logits["pointclip"].append(pc)
            if "clip2+pointclip" in self.logits:
                w = self.pointclip_weight
                self.logits["clip2+pointclip"].append((1.0 - w) * point + w * pc)
        if self.ensemble:
            if frame is None:
                raise ValueError("the point + image ensemble needs the frame with its cameras")
            img, valid = self.recognizer.embed_images(frame, boxes)
            self.n_images += int(valid.sum())
            fused = clf.fuse_logits(clf.logits(emb), clf.logits(img), valid)[:, : self.n]
            self.logits["image"].append(fused)

    def metrics(self, method: str) -> Dict[str, object]:
        y = np.asarray(self.y_true, dtype=np.int64)
        lg = np.concatenate(self.logits[method]) if self.logits[method] else np.zeros((0, self.n), np.float32)
        order = np.argsort(-lg, axis=1, kind="stable")
        top5 = (order[:, :5] == y[:, None]).any(axis=1)
        return confusion_metrics(y, order[:, 0], self.n, top5_hit=top5)


def evaluate_recognition(
    frames: Iterable[Frame],
    recognizer,
    vocabulary: Sequence[Tuple[str, str]],
    min_points: int = 5,
    ensemble: bool = False,
    ground: Optional["GroundConfig"] = None,
    progress: bool = True,
    remove_ground_points: bool = True,
    methods: Sequence[str] = ("clip2",),
    pointclip=None,
    pointclip_weight: float = 0.5,
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
        methods: also score these of :data:`METHODS` on the same crops (``pointclip``: the
            projection baseline with the recognizer's CLIP and text bank; ``clip2+pointclip``:
            their logit ensemble, weight ``pointclip_weight`` on PointCLIP). ``pointclip``: a
            configured :class:`~clip2_core.eval.pointclip.PointCLIPBaseline` (default settings if None).

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
    state = vocabulary_state(recognizer, texts)
    scorer = CropScorer(recognizer, state, methods, pointclip, pointclip_weight, ensemble)
    index = {c: i for i, c in enumerate(classes)}
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
        scorer.add([index[c.label] for c in crops], points, boxes, frame.intensity_max, frame)
    if not scorer.y_true:
        raise ValueError(f"no ground-truth crops with >= {min_points} points and a label in the vocabulary {classes}")
    report = scorer_report(scorer, recognizer, classes, texts, {"objects": len(scorer.y_true), "min_points": min_points,
                                                                "ground_removed": remove_ground_points})
    report.meta.update({"ensemble_weight": recognizer.config.ensemble_weight if ensemble else None,
                        "objects_with_image_crop": scorer.n_images})
    return report


def vocabulary_state(recognizer, texts: Sequence[str]):
    """The recognizer's text bank for ``texts`` (its own when it already holds exactly these)."""
    return recognizer.state if recognizer.vocabulary == list(texts) else recognizer.build_vocabulary(texts, recognizer.templates)


def scorer_report(scorer: CropScorer, recognizer, classes: Sequence[str], texts: Sequence[str],
                  meta: Dict[str, object]) -> RecognitionReport:
    """A :class:`RecognitionReport` of what ``scorer`` accumulated (identity and warnings included)."""
    ident = recognizer.identity
    report = RecognitionReport(
        classes=list(classes), texts=list(texts), point=scorer.metrics("clip2"),
        ensemble=scorer.metrics("image") if scorer.ensemble else None,
        baselines={m: scorer.metrics(m) for m in scorer.methods if m != "clip2"},
        meta={**meta, "clip": recognizer.clip.identity, "random_clip": ident["random_clip"], "backend": ident["backend"],
              "encoder": ident["encoder"], "templates": list(scorer.state.templates), "methods": list(scorer.methods)},
    )
    if scorer.pointclip is not None:
        from dataclasses import asdict

        report.meta["pointclip"] = {**asdict(scorer.pointclip.config), "weight_in_ensemble": scorer.pointclip_weight}
    if ident["random_clip"]:
        report.meta["warning"] = "CLIP weights are RANDOM: these numbers check the machinery, they are not zero-shot results"
    return report


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
    what = (f"GT crops with >= {report.meta['min_points']} points" if "min_points" in report.meta
            else f"{report.meta.get('dataset', '?')} {report.meta.get('split', '')} objects")
    lines += [f"Objects: {report.meta['objects']} ({what}); "
              f"encoder {report.meta['encoder']} on {report.meta['backend']}; CLIP {report.meta['clip'].get('model')}.", ""]
    cols = [("point top-1", report.point)] + ([("ensemble top-1", report.ensemble)] if report.ensemble else [])
    cols += [(f"{name} top-1", m) for name, m in report.baselines.items()]
    lines += ["| class | text | objects | " + " | ".join(c for c, _ in cols) + " |", "|---|---|---|" + "---|" * len(cols)]
    for i, (c, t) in enumerate(zip(report.classes, report.texts)):
        accs = [m["per_class_acc"][i] for _, m in cols]
        lines.append(f"| {c} | {t} | {int(report.point['support'][i])} | "
                     + " | ".join("-" if np.isnan(a) else f"{a:.3f}" for a in accs) + " |")
    lines += ["", f"**Mean class accuracy (point): {report.point['mean_class_acc']:.4f}**, overall {report.point['overall_acc']:.4f}"]
    if report.ensemble:
        lines.append(f"**Mean class accuracy (point + image, w={report.meta['ensemble_weight']}): "
                     f"{report.ensemble['mean_class_acc']:.4f}**, overall {report.ensemble['overall_acc']:.4f} "
                     f"({report.meta['objects_with_image_crop']} objects had a camera crop)")
    if report.baselines:
        lines += ["", "Methods on the same crops (top-5: the truth among the five best classes):", "",
                  "| method | mean class top-1 | overall top-1 | mean class top-5 | overall top-5 |", "|---|---|---|---|---|"]
        for name, m in [("clip2", report.point)] + list(report.baselines.items()):
            lines.append(f"| {name} | {m['mean_class_acc']:.4f} | {m['overall_acc']:.4f} | "
                         f"{m.get('mean_class_top5', float('nan')):.4f} | {m.get('top5_acc', float('nan')):.4f} |")
        pc = report.meta.get("pointclip")
        if pc:
            lines += ["", f"pointclip: {len(pc['views'])} depth-map views of {pc['size']} px through CLIP's image tower, "
                          f"the same text bank; clip2+pointclip logits weight {pc['weight_in_ensemble']} on pointclip."]
    if report.meta.get("few_shot"):
        lines += ["", f"Few-shot linear probes on frozen clip2 embeddings (seed {report.meta['few_shot'][0]['seed']}; "
                      "the training objects drawn are listed in report.json):", "",
                  "| shots per class | training objects | mean class top-1 | overall top-1 |", "|---|---|---|---|",
                  f"| 0 (zero-shot) | 0 | {report.point['mean_class_acc']:.4f} | {report.point['overall_acc']:.4f} |"]
        for row in report.meta["few_shot"]:
            lines.append(f"| {row['shots']} | {row['train_objects']} | {row['mean_class_acc']:.4f} | {row['overall_acc']:.4f} |")
    if report.meta.get("published"):
        lines += ["", "Published zero-shot top-1 on this benchmark (real CLIP, full training; not measured here): "
                  + ", ".join(f"{k} {v}" for k, v in report.meta["published"].items()) + "."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    paths = {"json": out / "report.json", "md": out / "report.md",
             "confusion": save_confusion_png(out / "confusion.png", report.point["confusion"], report.classes, "point-only")}
    if report.ensemble:
        paths["confusion_ensemble"] = save_confusion_png(out / "confusion_ensemble.png", report.ensemble["confusion"],
                                                     report.classes, "point + image")
    for name, m in report.baselines.items():
        key = "confusion_" + name.replace("+", "_")
        paths[key] = save_confusion_png(out / f"{key}.png", m["confusion"], report.classes, name)
    return paths
