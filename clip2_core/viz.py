"""Pictures people would rather look at: bird's-eye views of sweeps, clusters and boxes.

Uses matplotlib's Agg backend (no display needed); imported lazily by the CLI.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from clip2_core.geometry import box_corners


def label_color(label: str) -> Tuple[float, float, float]:
    """A stable, well-saturated RGB colour in [0, 1] for a label (same label -> same colour everywhere)."""
    h = int.from_bytes(hashlib.sha1(label.encode("utf-8")).digest()[:4], "little") / 2**32
    import colorsys

    return colorsys.hsv_to_rgb(h, 0.75, 0.95)


def _cluster_palette(n: int) -> np.ndarray:
    golden = 0.61803398875
    import colorsys

    return np.array([colorsys.hsv_to_rgb((i * golden) % 1.0, 0.7, 0.95) for i in range(max(n, 1))])


def save_bev_png(
    path: str | Path,
    points: np.ndarray,
    boxes: Optional[np.ndarray] = None,
    box_labels: Optional[Sequence[str]] = None,
    gt_boxes: Optional[np.ndarray] = None,
    ground_mask: Optional[np.ndarray] = None,
    cluster_labels: Optional[np.ndarray] = None,
    extent: Optional[float] = None,
    title: Optional[str] = None,
    dpi: int = 110,
) -> Path:
    """Write a bird's-eye PNG of a sweep (x to the right, y up, LiDAR frame).

    Args:
        points: (N, 3+) LiDAR-frame points. boxes: (M, 7) predicted / cluster boxes drawn in
            colour with ``box_labels`` (M,) as text. gt_boxes: (G, 7) drawn dashed in white.
        ground_mask: (N,) bool, ground drawn dark grey. cluster_labels: (N,) int, -1 = none;
            clustered points coloured per cluster. extent: half-width of the view [m]
            (default: fit the boxes and points, at most 60 m).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = np.asarray(points)[:, :3]
    finite = np.isfinite(pts).all(axis=1)
    fig, ax = plt.subplots(figsize=(9, 9), facecolor="black")
    ax.set_facecolor("black")
    base = finite.copy()
    if ground_mask is not None:
        g = finite & np.asarray(ground_mask, dtype=bool)
        ax.scatter(pts[g, 0], pts[g, 1], s=0.2, c="#3a3a3a", linewidths=0, rasterized=True)
        base &= ~g
    if cluster_labels is not None:
        lab = np.asarray(cluster_labels)
        inc = finite & (lab >= 0)
        other = base & ~inc
        ax.scatter(pts[other, 0], pts[other, 1], s=0.3, c="#9a9a9a", linewidths=0, rasterized=True)
        if inc.any():
            pal = _cluster_palette(int(lab.max()) + 1)
            ax.scatter(pts[inc, 0], pts[inc, 1], s=0.8, c=pal[lab[inc]], linewidths=0, rasterized=True)
    else:
        z = pts[base, 2]
        ax.scatter(pts[base, 0], pts[base, 1], s=0.3, c=z, cmap="viridis", linewidths=0, rasterized=True)

    def draw(bxs, style, colors, texts):
        for k, c in enumerate(box_corners(np.asarray(bxs).reshape(-1, 7))):
            ring = c[[0, 1, 2, 3, 0], :2]
            ax.plot(ring[:, 0], ring[:, 1], style, color=colors[k], linewidth=1.2)
            front = 0.5 * (c[0, :2] + c[3, :2])  # heading marker: centre -> front face
            ctr = c[:4, :2].mean(axis=0)
            ax.plot([ctr[0], front[0]], [ctr[1], front[1]], style, color=colors[k], linewidth=1.0)
            if texts is not None:
                ax.text(c[:, 0].max(), c[:, 1].max(), texts[k], color=colors[k], fontsize=7)

    if gt_boxes is not None and len(gt_boxes):
        draw(gt_boxes, "--", ["white"] * len(gt_boxes), None)
    if boxes is not None and len(boxes):
        labels = list(box_labels) if box_labels is not None else None
        colors = [label_color(t) for t in labels] if labels else ["#ff5555"] * len(boxes)
        draw(boxes, "-", colors, labels)
    if extent is None:  # fit the data: a square around the 1-99 % range of the points and the sensor
        xy = pts[finite, :2] if finite.any() else np.zeros((1, 2))
        lo = np.minimum(np.percentile(xy, 1, axis=0), 0.0) - 3.0
        hi = np.maximum(np.percentile(xy, 99, axis=0), 0.0) + 3.0
        half = float(np.clip((hi - lo).max() / 2, 10.0, 60.0))
        mid = (lo + hi) / 2
        ax.set_xlim(mid[0] - half, mid[0] + half)
        ax.set_ylim(mid[1] - half, mid[1] + half)
    else:
        ax.set_xlim(-extent, extent)
        ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.tick_params(colors="#aaaaaa", labelsize=7)
    ax.set_xlabel("x [m]", color="#aaaaaa")
    ax.set_ylabel("y [m]", color="#aaaaaa")
    ax.plot([0], [0], marker="^", color="red", markersize=6)
    if title:
        ax.set_title(title, color="white", fontsize=10)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, facecolor="black", bbox_inches="tight")
    plt.close(fig)
    return out


def save_confusion_png(path: str | Path, cm: np.ndarray, classes: Sequence[str], title: str,
                       cols: Optional[Sequence[str]] = None) -> Path:
    """A row-normalised confusion matrix PNG (rows: ground truth ``classes``; columns: predicted
    ``cols``, default the same classes), counts written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = list(classes) if cols is None else list(cols)
    cm = np.asarray(cm, dtype=np.float64).reshape(len(classes), len(cols))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n, m = len(classes), len(cols)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * max(m, 2), 0.8 + 0.5 * max(n, 2)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(m), cols, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    for i in range(n):
        for j in range(m):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(f"confusion ({title})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
