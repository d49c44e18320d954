"""Detections -> ROS output messages: MarkerArray, labelled PointCloud2, JSON, vision_msgs.

Colours come from :func:`clip2_core.viz.label_color`, so a label has the same colour in rviz
and in the PNGs the CLI writes. Every MarkerArray starts with a DELETEALL marker, so boxes
from the previous frame never linger.

The JSON document (one per frame, ``~/detections/json``) is::

    {"stamp": 12.5, "frame_id": "lidar", "vocabulary": [...],
     "detections": [{"label": "car", "score": 0.83, "cluster_id": 3, "num_points": 412,
                     "box": {"center": [x, y, z], "size": [l, w, h], "yaw": 0.1},
                     "top_k": [["car", 0.83], ["truck", 0.1]]}, ...],
     "timings_ms": {"ground": 4.1, ...}, "cameras": {"CAM_FRONT": 12.49},
     "clip": {"model": "ViT-B-32", "weights_id": "tag:ViT-B-32/openai", "random": false},
     "random_clip": false, "encoder": "pointnet2-s-v1", "backend": "onnxruntime"}

With random CLIP weights (allowed only by ``clip.allow_random``) the document says
``"random_clip": true`` and carries a ``"warning"``.

Boxes are in ``frame_id`` with the clip2 box convention (centre, lwh, yaw about +z).
``cameras``: the stamp of the image of each camera used with this sweep (absent cameras were not used).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import numpy as np

from clip2_core import geometry
from clip2_core.geometry import BOX_EDGES, box_corners
from clip2_core.types import Box3D, Detection
from clip2_core.viz import label_color

from clip2_ros.conversions import quaternion_to_yaw, structured_to_pointcloud2, yaw_to_quaternion

if TYPE_CHECKING:  # message types are imported where used
    from visualization_msgs.msg import MarkerArray

NS_BOXES = "boxes"
NS_LABELS = "labels"
NS_OUTLINES = "outlines"
UNKNOWN_LABEL_ID = -1


def format_label(label: str, score: float) -> str:
    """The marker text: ``"car 0.83"``."""
    return f"{label} {score:.2f}"


@dataclass
class MarkerGeometry:
    """What the markers of one frame draw, computed once per frame for the message classes
    (:func:`detections_to_markers`) and the CDR writer (:mod:`clip2_ros.marker_cdr`) alike."""

    centers: List[Tuple[float, float, float]]
    sizes: List[Tuple[float, float, float]]  # l, w, h, each >= 1 mm (rviz drops zero scales)
    quats: List[Tuple[float, float, float, float]]  # x, y, z, w
    rgb: List[Tuple[float, float, float]]  # label colours
    vertices: np.ndarray  # (M * 24, 3) float64: the 12 box edges as LINE_LIST vertex pairs


def marker_geometry(detections: Sequence[Detection]) -> MarkerGeometry:
    boxes = np.stack([np.asarray(d.box.as_array(), dtype=np.float64) for d in detections]).reshape(-1, 7)
    corners = box_corners(boxes)  # (M, 8, 3)
    return MarkerGeometry(
        centers=[tuple(c) for c in boxes[:, :3].tolist()],
        sizes=[tuple(c) for c in np.maximum(boxes[:, 3:6], 1e-3).tolist()],
        quats=[tuple(q) for q in geometry.yaw_to_quaternion(boxes[:, 6], scalar_first=False).reshape(-1, 4).tolist()],
        rgb=[tuple(float(v) for v in label_color(d.label)) for d in detections],
        vertices=corners[:, BOX_EDGES.reshape(-1), :].reshape(-1, 3),
    )


def detections_to_markers(
    detections: Sequence[Detection],
    frame_id: str,
    stamp=None,
    box_alpha: float = 0.3,
    text_height: float = 0.7,
    line_width: float = 0.06,
) -> "MarkerArray":
    """A MarkerArray for one frame.

    Layout: ``[DELETEALL, CUBE x M (ns "boxes", id i), TEXT_VIEW_FACING x M (ns "labels", id i),
    LINE_LIST (ns "outlines", id 0, all box edges, per-vertex colours)]``; the outline marker is
    omitted when there are no detections. Box i and text i are detection i.
    """
    from geometry_msgs.msg import Point
    from std_msgs.msg import ColorRGBA
    from visualization_msgs.msg import Marker, MarkerArray

    out = MarkerArray()
    clear = Marker()
    clear.header.frame_id = frame_id
    if stamp is not None:
        clear.header.stamp = stamp
    clear.action = Marker.DELETEALL
    out.markers.append(clear)

    def base(ns: str, mid: int, mtype: int) -> Marker:
        m = Marker()
        m.header.frame_id = frame_id
        if stamp is not None:
            m.header.stamp = stamp
        m.ns, m.id, m.type, m.action = ns, int(mid), mtype, Marker.ADD
        m.pose.orientation.w = 1.0
        m.frame_locked = False
        return m

    if not detections:
        return out
    g = marker_geometry(detections)
    texts = []
    for i, det in enumerate(detections):
        (r, g_, b), (cx, cy, cz), (l, w, h) = g.rgb[i], g.centers[i], g.sizes[i]
        qx, qy, qz, qw = g.quats[i]
        cube = base(NS_BOXES, i, Marker.CUBE)
        cube.pose.position.x, cube.pose.position.y, cube.pose.position.z = cx, cy, cz
        cube.pose.orientation.x, cube.pose.orientation.y = qx, qy
        cube.pose.orientation.z, cube.pose.orientation.w = qz, qw
        cube.scale.x, cube.scale.y, cube.scale.z = l, w, h
        cube.color = ColorRGBA(r=r, g=g_, b=b, a=float(box_alpha))
        out.markers.append(cube)

        text = base(NS_LABELS, i, Marker.TEXT_VIEW_FACING)
        text.pose.position.x, text.pose.position.y = cx, cy
        text.pose.position.z = cz + 0.5 * h + 0.6 * text_height
        text.scale.z = float(text_height)
        text.color = ColorRGBA(r=r, g=g_, b=b, a=1.0)
        text.text = format_label(det.label, float(det.score))
        texts.append(text)
    out.markers.extend(texts)

    outline = base(NS_OUTLINES, 0, Marker.LINE_LIST)
    outline.scale.x = float(line_width)
    outline.points = [Point(x=x, y=y, z=z) for x, y, z in g.vertices.tolist()]  # tolist: 1.9 vs 2.5 ms for 45 boxes
    cols = []
    for r, g_, b in g.rgb:
        c = ColorRGBA(r=r, g=g_, b=b, a=1.0)
        cols.extend([c] * (2 * BOX_EDGES.shape[0]))
    outline.colors = cols
    outline.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
    out.markers.append(outline)
    return out


def markers_to_boxes(msg) -> Tuple[np.ndarray, List[str], List[float]]:
    """Read boxes back from a MarkerArray written by :func:`detections_to_markers`.

    Returns (boxes (M, 7) float64, labels (M,), scores (M,)) ordered by marker id.
    """
    cubes, texts = {}, {}
    for m in msg.markers:
        if m.ns == NS_BOXES and m.type == m.CUBE:
            q = m.pose.orientation
            yaw = quaternion_to_yaw(q.x, q.y, q.z, q.w)
            p = m.pose.position
            cubes[m.id] = [p.x, p.y, p.z, m.scale.x, m.scale.y, m.scale.z, yaw]
        elif m.ns == NS_LABELS and m.type == m.TEXT_VIEW_FACING:
            label, _, score = m.text.rpartition(" ")
            texts[m.id] = (label, float(score))
    ids = sorted(cubes)
    boxes = np.array([cubes[i] for i in ids], dtype=np.float64).reshape(-1, 7)
    labels = [texts[i][0] if i in texts else "" for i in ids]
    scores = [texts[i][1] if i in texts else float("nan") for i in ids]
    return boxes, labels, scores


def detections_to_dict(
    detections: Sequence[Detection],
    stamp: float,
    frame_id: str,
    vocabulary: Optional[Sequence[str]] = None,
    timings_ms: Optional[Dict[str, float]] = None,
    image_used: Optional[Sequence[bool]] = None,
    identity: Optional[Dict] = None,
    cameras: Optional[Dict[str, float]] = None,
    sweeps: Optional[int] = None,
) -> dict:
    """The per-frame JSON document as a dict (see the module docstring).

    ``image_used`` (per detection): whether a camera crop was fused into its label.
    ``identity``: what produced the labels (:attr:`clip2_core.recognition.Recognizer.identity`:
    ``clip`` model and weights identity, ``random_clip``, encoder, backend); copied into the
    document, with a ``warning`` when the CLIP weights are random.
    ``cameras``: camera name -> stamp [s] of the image used with this sweep (``cameras`` in the document).
    ``sweeps``: LiDAR sweeps accumulated into this frame (``sweeps``; only with ``accumulate.sweeps`` > 1).
    """
    dets = []
    for i, d in enumerate(detections):
        dets.append(
            {
                "label": d.label,
                "score": round(float(d.score), 6),
                "cluster_id": int(d.cluster_id),
                "num_points": int(d.num_points),
                "box": {
                    "center": [round(float(v), 4) for v in d.box.center],
                    "size": [round(float(v), 4) for v in d.box.size],
                    "yaw": round(float(d.box.yaw), 5),
                },
                "top_k": [[str(lbl), round(float(p), 6)] for lbl, p in (d.top_k or [])],
                "image_used": bool(image_used[i]) if image_used is not None and i < len(image_used) else False,
            }
        )
    doc = {
        "stamp": float(stamp),
        "frame_id": frame_id,
        "vocabulary": list(vocabulary) if vocabulary is not None else None,
        "detections": dets,
        "timings_ms": {k: round(float(v), 3) for k, v in (timings_ms or {}).items()},
    }
    if cameras is not None:
        doc["cameras"] = {k: float(v) for k, v in cameras.items()}
    if sweeps is not None:
        doc["sweeps"] = int(sweeps)
    if identity is not None:
        doc.update({k: identity[k] for k in ("clip", "random_clip", "encoder", "backend", "encoder_fallback") if k in identity})
        if identity.get("random_clip"):
            doc["warning"] = "CLIP weights are RANDOM: these labels are not zero-shot results"
    return doc


def detections_to_json(*args, **kwargs) -> str:
    """:func:`detections_to_dict` serialised (compact)."""
    return json.dumps(detections_to_dict(*args, **kwargs), separators=(",", ":"))


def json_to_detections(doc: str | dict) -> List[Detection]:
    """Parse a per-frame JSON document back into Detections (for tools and tests)."""
    d = json.loads(doc) if isinstance(doc, str) else doc
    out = []
    for det in d["detections"]:
        b = det["box"]
        out.append(
            Detection(
                box=Box3D(center=b["center"], size=b["size"], yaw=b["yaw"], label=det["label"], score=det["score"]),
                label=det["label"],
                score=float(det["score"]),
                cluster_id=int(det.get("cluster_id", -1)),
                num_points=int(det.get("num_points", 0)),
                top_k=[(t[0], float(t[1])) for t in det.get("top_k", [])],
            )
        )
    return out


LABELLED_CLOUD_DTYPE = np.dtype(
    [
        ("x", "<f4"),
        ("y", "<f4"),
        ("z", "<f4"),
        ("label_id", "<i4"),  # index into the vocabulary, -1 = unknown
        ("score", "<f4"),
        ("cluster_id", "<i4"),
    ]
)


def labelled_points(
    points: np.ndarray,
    cluster_labels: np.ndarray,
    detections: Sequence[Detection],
    vocabulary: Sequence[str],
) -> np.ndarray:
    """Structured array (LABELLED_CLOUD_DTYPE) of the points that belong to a detection.

    Args:
        points: (N, 3+) sweep points. cluster_labels: (N,) int cluster id per point (-1 = none).
        detections: each with the ``cluster_id`` it came from. vocabulary: label -> id.
    """
    lab = np.asarray(cluster_labels, dtype=np.int64)
    pts = np.asarray(points)
    if lab.shape[0] != pts.shape[0]:
        raise ValueError(f"{lab.shape[0]} cluster labels for {pts.shape[0]} points")
    vocab_index = {v: i for i, v in enumerate(vocabulary)}
    ncl = int(lab.max()) + 1 if lab.size else 0
    not_detected = np.int32(UNKNOWN_LABEL_ID - 1)
    label_of = np.full(ncl + 1, not_detected, dtype=np.int32)  # last slot: points with no cluster
    score_of = np.zeros(ncl + 1, dtype=np.float32)
    for d in detections:
        if 0 <= d.cluster_id < ncl:
            label_of[d.cluster_id] = vocab_index.get(d.label, UNKNOWN_LABEL_ID)
            score_of[d.cluster_id] = d.score
    slot = np.where(lab >= 0, lab, ncl)
    keep = label_of[slot] != not_detected
    idx = np.flatnonzero(keep)
    rec = np.empty(idx.shape[0], dtype=LABELLED_CLOUD_DTYPE)
    rec["x"], rec["y"], rec["z"] = pts[idx, 0], pts[idx, 1], pts[idx, 2]
    rec["label_id"] = label_of[lab[idx]]
    rec["score"] = score_of[lab[idx]]
    rec["cluster_id"] = lab[idx]
    return rec


def labelled_cloud(points, cluster_labels, detections, vocabulary, frame_id: str, stamp=None):
    """PointCloud2 of the detected clusters' points with label_id, score and cluster_id fields."""
    return structured_to_pointcloud2(
        labelled_points(points, cluster_labels, detections, vocabulary), frame_id=frame_id, stamp=stamp
    )


def detections_to_vision_msgs(detections: Sequence[Detection], frame_id: str, stamp=None):
    """vision_msgs/Detection3DArray (vision_msgs 4.x API). Import it only when vision_msgs exists."""
    from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose

    out = Detection3DArray()
    out.header.frame_id = frame_id
    if stamp is not None:
        out.header.stamp = stamp
    for i, d in enumerate(detections):
        det = Detection3D()
        det.header = out.header
        det.id = str(d.cluster_id if d.cluster_id >= 0 else i)
        cx, cy, cz = (float(v) for v in d.box.center)
        qx, qy, qz, qw = yaw_to_quaternion(d.box.yaw)
        pose = det.bbox.center
        pose.position.x, pose.position.y, pose.position.z = cx, cy, cz
        pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = qx, qy, qz, qw
        det.bbox.size.x, det.bbox.size.y, det.bbox.size.z = (float(v) for v in d.box.size)
        hyps = [(d.label, d.score)] + [(lbl, p) for lbl, p in (d.top_k or []) if lbl != d.label]
        for label, score in hyps:
            h = ObjectHypothesisWithPose()
            h.hypothesis.class_id = str(label)
            h.hypothesis.score = float(score)
            h.pose.pose = pose
            det.results.append(h)
        out.detections.append(det)
    return out
