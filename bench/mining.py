"""Benchmark: mining speed (frames/s, excluding the 2D detector and CLIP) and the cluster-choice rules.

    python bench/mining.py --dataroot DIR [--version v1.0-synth] [--json out.json]

DIR is a ``clip2 synth`` world (its detections_2d.json is the 2D detector, so detector cost is
nil). Frames are loaded and their images decoded before timing; each timed call is
``mine_frame(frame, detections, cfg, clip=None)``: ground removal, per-image projection,
frustum + DBSCAN selection, plausibility filters, cross-camera de-duplication. The rule
comparison mines every keyframe with each rule and scores purity / recall against the
ground truth (clip2_core.mining.quality). Results go into BENCHMARKS.md ("Issue 5").
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataroot", type=Path, required=True)
    ap.add_argument("--version", default="v1.0-synth")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes over all frames (median frame time)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from clip2_core.datasets.nuscenes import NuScenesReader
    from clip2_core.mining.detectors import DetectionsFile
    from clip2_core.mining.miner import MineConfig, MineStats, decode_image, mine_frame
    from clip2_core.mining.quality import proxy_quality
    from clip2_core.mining.select import RULES, FrustumConfig
    from clip2_core.mining.shards import ShardWriter, write_index

    reader = NuScenesReader(args.dataroot, args.version, class_map="long_tail", load_images=False)
    det = DetectionsFile(args.dataroot / args.version / "detections_2d.json")
    frames = []
    for tok in reader.sample_tokens:
        f = reader.frame(tok)
        for cam in f.cameras.values():
            cam.image = decode_image(cam.image_path)
        frames.append(f)
    results = {"frames": len(frames), "rules": {}}
    cfg = MineConfig()
    per_frame = []
    for _ in range(args.repeats):
        for f in frames:
            t0 = time.perf_counter()
            mine_frame(f, det, cfg, clip=None)
            per_frame.append(time.perf_counter() - t0)
    med = statistics.median(per_frame)
    results["median_frame_ms"] = round(med * 1e3, 2)
    results["frames_per_s"] = round(1.0 / med, 2)
    for rule in RULES:
        with tempfile.TemporaryDirectory() as tmp:
            c = MineConfig(frustum=FrustumConfig(rule=rule))
            stats = MineStats()
            w = ShardWriter(tmp, shard_size=100000)
            for f in frames:
                w.write_sample(f.token, mine_frame(f, det, c, clip=None, stats=stats))
            w.close()
            write_index(tmp)
            q = proxy_quality(tmp, reader, min_points=20, detections=det)
            results["rules"][rule] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in q.items()}
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
