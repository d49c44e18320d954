"""``clip2 synth``: generate synthetic driving scenes as a nuScenes dataroot."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="generate a synthetic driving world in nuScenes format (LiDAR, 6 cameras, GT, 2D detections)",
        description=(
            "Procedural streets with vehicles, pedestrians, cones, barriers and long-tail objects, ray-cast by a "
            "32-beam LiDAR at 20 Hz and six cameras at the 2 Hz keyframes, written as a nuScenes dataroot that "
            "nuscenes-devkit loads (NuScenes(version, dataroot)), plus <version>/detections_2d.json: simulated "
            "open-vocabulary 2D detections. See docs/synthetic_world.md."
        ),
    )
    p.add_argument("--out", type=Path, required=True, help="dataroot to write (created)")
    p.add_argument("--scenes", type=int, default=1, help="number of scenes (default 1)")
    p.add_argument("--seconds", type=float, default=20.0, help="scene length in seconds (default 20)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed -> identical files)")
    p.add_argument("--version", default="v1.0-synth", help="table folder name (default v1.0-synth)")
    p.add_argument("--cameras", default="all", help="comma-separated camera channels to render, or 'all'")
    p.add_argument("--render-scale", type=float, default=0.25,
                   help="internal camera render resolution relative to 1600x900 (images are upsampled); default 0.25")
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPU count, at most 8)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier synthetic dataroot at --out")
    p.add_argument("--masks", action="store_true", help="also write per-pixel object-id masks under synth_masks/")
    p.add_argument("--no-detections", action="store_true", help="skip <version>/detections_2d.json")
    p.add_argument("--preview", action="store_true",
                   help="write preview_bev.png and preview_CAM_FRONT.png (GT + detections) for one frame into --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clip2_core.datasets.synth import CAMERA_NAMES, SynthConfig, generate

    cameras = CAMERA_NAMES if args.cameras == "all" else tuple(c.strip() for c in args.cameras.split(",") if c.strip())
    workers = args.workers if args.workers is not None else min(8, os.cpu_count() or 1)
    if workers < 1:
        raise ValueError("--workers must be >= 1")
    cfg = SynthConfig(out=args.out, scenes=args.scenes, seconds=args.seconds, seed=args.seed, version=args.version,
                      cameras=cameras, render_scale=args.render_scale, masks=args.masks, workers=workers,
                      detections=not args.no_detections, overwrite=args.overwrite)
    t0 = time.perf_counter()
    try:
        summary = generate(cfg, progress=not args.no_progress)
    except FileExistsError as exc:
        print(f"clip2 synth: error: {exc}", file=sys.stderr)
        return 2
    dt = time.perf_counter() - t0
    print(f"wrote {len(summary['scenes'])} scene(s), {summary['samples']} keyframes, {summary['annotations']} annotations "
          f"to {cfg.out} ({cfg.version}) in {dt:.1f} s "
          f"(per scene: {', '.join(f'{s:.1f}' for s in summary['seconds_per_scene'])} s)")
    if args.preview:
        paths = write_preview(cfg)
        for p in paths:
            print(f"preview: {p}")
    return 0


def write_preview(cfg) -> list:
    """Preview PNGs of the middle keyframe of the first scene, read back through the nuScenes reader."""
    from clip2_core.datasets.nuscenes import NuScenesReader
    from clip2_core.datasets.synth.preview import write_previews

    cams = [c for c in ("CAM_FRONT",) if c in cfg.cameras] or list(cfg.cameras[:1])
    reader = NuScenesReader(cfg.out, cfg.version, class_map="long_tail", cameras=cams)
    first_scene = reader.scene_sample_tokens(reader.scene_records[0]["name"])
    frame = reader.frame(first_scene[len(first_scene) // 2])
    dets = None
    det_file = cfg.out / cfg.version / "detections_2d.json"
    if det_file.is_file():
        dets = json.loads(det_file.read_text())["images"]
    return write_previews(frame, cfg.out, cameras=cams, detections_by_token=dets)
