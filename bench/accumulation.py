"""Benchmark: multi-sweep accumulation, its cost and its effect on recall by range and false alarms.

    python bench/accumulation.py --world WORLD --checkpoint CKPT [--clip-model M --clip-weights W
        --clip-config J] [--sweeps 1 3 5 10] [--split val] [--json out.json]

The held-out keyframes of a nuScenes-format dataroot (``clip2 synth`` or real nuScenes) are read with
``NuScenesReader(nsweeps=K)`` (the accumulation the node runs with ``accumulate.sweeps: K``:
clip2_core.accumulate) and labelled by ``Pipeline.process`` with the node's default parameters,
LiDAR only. Scored like the replay (clip2_core.eval.detection): class-agnostic recall@1m by range
for objects with >= 1 and >= 10 single-sweep LiDAR points, false alarms, and the pipeline's time per
frame. Results go into BENCHMARKS.md (issue 14).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from clip2_core.datasets.nuscenes import NuScenesReader
from clip2_core.eval.detection import ScoredFrame, latency_stats, open_vocab_metrics, recall_by_range
from clip2_core.pipeline import Pipeline, PipelineConfig


def pipeline_for(args) -> Pipeline:
    from clip2_ros import params as P

    nested = P.load_param_file(P.default_param_file())
    nested["model"]["checkpoint"] = str(args.checkpoint)
    nested["model"]["backend"] = args.backend
    for key, val in (("model", args.clip_model), ("weights", args.clip_weights), ("model_config_file", args.clip_config)):
        if val:
            nested["clip"][key] = val
    nested["clip"]["allow_random"] = True  # a learning-check model: the report says random_clip
    nested["ensemble"] = False
    if args.vocab:
        from clip2_core.eval.recognition import VOCABULARIES

        nested["vocabulary"] = [t for _, t in VOCABULARIES[args.vocab]]
    return Pipeline(PipelineConfig.from_dict(P.pipeline_dict(nested)))


def run_setting(pipe: Pipeline, reader: NuScenesReader, max_frames: int):
    frames, ms, points = [], [], []
    for tok in reader.sample_tokens[:max_frames]:
        f = reader.frame(tok)
        t0 = time.perf_counter()
        res = pipe.process(f)
        ms.append((time.perf_counter() - t0) * 1e3)
        points.append(len(f.points))
        dets = res.detections
        frames.append(ScoredFrame(
            stamp=f.stamp, gt_boxes=np.array([b.as_array() for b in f.gt_boxes]).reshape(-1, 7),
            gt_labels=[str(b.label) for b in f.gt_boxes],
            gt_points=[int(b.attributes.get("num_lidar_pts", 0)) for b in f.gt_boxes],
            det_boxes=np.array([d.box.as_array() for d in dets]).reshape(-1, 7), det_labels=[d.label for d in dets],
            det_scores=[d.score for d in dets], sample_token=tok))
    return frames, ms, points


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=Path, required=True, help="nuScenes-format dataroot")
    ap.add_argument("--version", default="v1.0-synth")
    ap.add_argument("--split", default="val")
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--clip-model", default=None)
    ap.add_argument("--clip-weights", default=None)
    ap.add_argument("--clip-config", default=None)
    ap.add_argument("--vocab", default="nuscenes10", help="a clip2_core.eval.recognition vocabulary ('' = the node's)")
    ap.add_argument("--sweeps", type=int, nargs="+", default=[1, 3, 5, 10])
    ap.add_argument("--max-frames", type=int, default=10**9)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    pipe = pipeline_for(args)
    pipe.warm_up()
    base = NuScenesReader(args.world, args.version, split=args.split, cameras=(), load_images=False, class_map="long_tail")
    rows = []
    for k in args.sweeps:
        reader = NuScenesReader(args.world, args.version, split=args.split, cameras=(), load_images=False,
                                class_map="long_tail", nsweeps=k, nusc=base.nusc)
        frames, ms, pts = run_setting(pipe, reader, args.max_frames)
        m10 = open_vocab_metrics(frames, min_points=10)
        row = {"sweeps": k, "keyframes": len(frames), "points_p50": float(np.median(pts)),
               "pipeline_ms": latency_stats(ms), "recall_1m_min10": m10["at"]["1m"]["recall"],
               "false_alarm_rate_1m": m10["at"]["1m"]["false_alarm_rate"],
               "detections": m10["at"]["1m"]["detections"], "false_alarms": m10["at"]["1m"]["false_alarms"],
               "label_accuracy": m10["label_accuracy"], "by_range_min10": m10["by_range"],
               "by_range_min1": recall_by_range(frames, min_points=1)}
        rows.append(row)
        br1 = ", ".join(f"{b} {v['recall']:.3f} ({v['found']}/{v['objects']})" for b, v in row["by_range_min1"].items())
        print(f"sweeps {k:>2}: points p50 {row['points_p50']:.0f}  pipeline p50 {row['pipeline_ms']['p50']:.1f} / "
              f"p99 {row['pipeline_ms']['p99']:.1f} ms  recall@1m (>=10 pts) {row['recall_1m_min10']:.3f}  "
              f"false alarms {row['false_alarm_rate_1m']:.3f} ({row['false_alarms']}/{row['detections']})  "
              f"label acc {row['label_accuracy']:.3f}\n           recall@1m by range (>=1 pt): {br1}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "identity": pipe.recognizer.identity}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
