"""``clip2 demo``: the main job on built-in sample data (what ``make demo`` runs).

Today: ground removal + clustering on the real KITTI sample frame and on a synthetic 32-beam
sweep, with a table per sweep and bird's-eye PNGs. Later stages (recognition with a trained
encoder, the ROS node replay) plug in here as they land.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

_SAMPLE = Path(__file__).resolve().parents[2] / "test" / "data" / "kitti_000008"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the main job on built-in sample data and write pictures", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder (PNGs, JSON)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic sweep")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from clip2_core.benchmarks.sweeps import make_sweep
    from clip2_core.geometry import points_in_boxes
    from clip2_core.segmentation import Segmenter
    from clip2_core.viz import save_bev_png

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    seg = Segmenter()
    sweeps = []
    if (_SAMPLE / "points.npy").is_file():
        gt = json.loads((_SAMPLE / "gt.json").read_text())["boxes_3d"]
        gt_boxes = np.array([g["center"] + g["size_lwh"] + [g["yaw"]] for g in gt])
        sweeps.append(("kitti_000008", np.load(_SAMPLE / "points.npy"), gt_boxes, None))
    scene = make_sweep(args.seed)
    seen = points_in_boxes(scene.points, scene.boxes).sum(axis=0) >= 20
    sweeps.append((f"synthetic_seed{args.seed}", scene.points, scene.boxes[seen], 50.0))
    summary = {}
    for name, points, gt_boxes, extent in sweeps:
        res = seg.segment(points)
        centres = np.array([c.box.center for c in res.clusters]).reshape(-1, 3)
        hits = 0
        for b in gt_boxes:
            if len(centres) and np.min(np.linalg.norm(centres[:, :2] - b[:2], axis=1)) <= 1.0:
                hits += 1
        recall = hits / max(len(gt_boxes), 1)
        png = save_bev_png(
            out / f"{name}_bev.png",
            points,
            boxes=np.array([c.box.as_array() for c in res.clusters]).reshape(-1, 7),
            box_labels=[f"#{c.cluster_id}" for c in res.clusters],
            gt_boxes=gt_boxes,
            ground_mask=res.ground_mask,
            cluster_labels=res.labels,
            extent=extent,
            title=f"{name}: {len(res.clusters)} clusters, GT recall@1m {hits}/{len(gt_boxes)} (dashed = GT)",
        )
        t = res.timings_ms
        print(
            f"{name:<20} {points.shape[0]:>6} points  {int(res.ground_mask.sum()):>6} ground  {len(res.clusters):>3} clusters  "
            f"GT recall@1m {hits}/{len(gt_boxes)}  ground {t['ground']:.1f} ms  cluster {t['cluster']:.1f} ms  -> {png}"
        )
        summary[name] = {"points": int(points.shape[0]), "clusters": len(res.clusters), "gt_recall_1m": recall, "timings_ms": t}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {out / 'summary.json'}")
    return 0
