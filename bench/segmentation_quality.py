"""Benchmark: segmentation quality (recall ceiling, miss reasons, background clusters) and time.

    python bench/segmentation_quality.py [--dataroot WORLD] [--version v1.0-synth] [--sweeps 300 301 302]
                                         [--set cluster.tolerance=0.5 ...] [--json out.json]

Scores ``Segmenter`` (default configuration unless ``--set``) with
:func:`clip2_core.eval.segmentation.segmentation_quality` on: the KITTI 000008 sample frame, the
synthetic ``make_sweep`` seeds given, and (``--dataroot``) every keyframe of a ``clip2 synth``
world such as ``make demo``'s held-out ``outputs/demo/world_val`` (long-tail classes included).
Recall here is the ceiling of the node's class-agnostic recall@1m: a cluster must stand for the
object before recognition can label it. Results go into BENCHMARKS.md ("Issue 13").
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def _set(cfg, text: str) -> None:
    name, value = text.split("=", 1)
    section, key = name.split(".")
    obj = getattr(cfg, section)
    cur = getattr(obj, key)
    if isinstance(cur, bool):
        setattr(obj, key, value.lower() in ("1", "true"))
    elif isinstance(cur, str):
        setattr(obj, key, value)
    else:
        setattr(obj, key, type(cur)(json.loads(value)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataroot", type=Path, default=None)
    ap.add_argument("--version", default="v1.0-synth")
    ap.add_argument("--sweeps", type=int, nargs="*", default=[300, 301, 302])
    ap.add_argument("--set", action="append", default=[], help="segmentation override, e.g. cluster.tolerance=0.5")
    ap.add_argument("--min-points", type=int, default=10)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--verbose", action="store_true", help="print every miss")
    args = ap.parse_args()

    import numpy as np

    from clip2_core.data import sample_frame_dir
    from clip2_core.datasets.synth.sweep import make_sweep
    from clip2_core.eval.segmentation import score_sweeps
    from clip2_core.segmentation import SegmentationConfig, Segmenter

    cfg = SegmentationConfig()
    for s in args.set:
        _set(cfg, s)
    seg = Segmenter(cfg)
    sets = {}
    kitti = sample_frame_dir("kitti_000008")
    gt = json.loads((kitti / "gt.json").read_text())["boxes_3d"]
    sets["kitti_000008"] = [{"points": np.load(kitti / "points.npy", allow_pickle=False),
                             "gt_boxes": np.array([g["center"] + g["size_lwh"] + [g["yaw"]] for g in gt]),
                             "gt_labels": [g["class_name"] for g in gt]}]
    if args.sweeps:
        items = []
        for s in args.sweeps:
            sc = make_sweep(s)
            items.append({"points": sc.points, "gt_boxes": sc.boxes, "gt_labels": list(sc.names)})
        sets["make_sweep"] = items
    if args.dataroot:
        from clip2_core.datasets.nuscenes import NuScenesReader

        reader = NuScenesReader(args.dataroot, args.version, class_map="long_tail", cameras=(), load_images=False)
        items = []
        for tok in reader.sample_tokens:
            f = reader.frame(tok)
            items.append({"points": f.points, "gt_boxes": np.array([b.as_array() for b in f.gt_boxes]).reshape(-1, 7),
                          "gt_labels": [b.label for b in f.gt_boxes]})
        sets[f"world:{args.dataroot.name}"] = items

    report = {"config": cfg.to_dict(), "sets": {}}
    for name, items in sets.items():
        times = []
        for it in items:  # timing pass (segmentation only)
            t0 = time.perf_counter()
            seg.segment(it["points"])
            times.append((time.perf_counter() - t0) * 1e3)
        score = score_sweeps(items, seg, min_points=args.min_points)
        s = score.summary()
        s["sweeps"] = len(items)
        s["median_ms"] = statistics.median(times)
        report["sets"][name] = s
        miss = ", ".join(f"{k} {v}" for k, v in s["misses"].items() if v)
        print(f"{name:<22} {s['found']:>4}/{s['objects']:<4} recall@1m {s['recall']:.3f}  misses: {miss or '-'}  "
              f"clusters {s['clusters']} (background {s['background_clusters']}, {s['background_share']:.0%})  "
              f"{s['median_ms']:.1f} ms/sweep")
        if args.verbose:
            worst = sorted(s["per_class"].items(), key=lambda kv: kv[1]["recall"])
            print("    per class: " + ", ".join(f"{c} {d['found']}/{d['objects']}" for c, d in worst))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
