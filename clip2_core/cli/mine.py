"""``clip2 mine``: mine (text, image, point) triplet proxies from a nuScenes-format dataroot or SUN RGB-D frames."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from pathlib import Path

log = logging.getLogger("clip2.mine")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mine",
        help="mine triplet proxies (text, image crop, point crop) into shards",
        description=(
            "For every keyframe and camera image: 2D proposals (a detections file, an OWL open-vocabulary "
            "detector, or LiDAR clusters named by CLIP) -> frustum -> DBSCAN -> the object's points; CLIP image "
            "embeddings of the crops; written as resumable tar shards with an index and a summary. Under torchrun "
            "each rank mines its share of the scenes into its own shards."
        ),
    )
    p.add_argument("--dataset", default="nuscenes", choices=["nuscenes", "sunrgbd"],
                   help="nuscenes (LiDAR sweeps + cameras) or sunrgbd (RGB-D frames in the SUN RGB-D release layout: "
                        "points from depth, the indoor preset MineConfig.indoor; docs/mining.md)")
    p.add_argument("--dataroot", type=Path, required=True,
                   help="nuScenes-format dataroot (real or clip2 synth), or the SUNRGBD folder (or one above it)")
    p.add_argument("--version", default="v1.0-trainval", help="table folder (v1.0-trainval, v1.0-mini, v1.0-synth)")
    p.add_argument("--split", default=None,
                   help="scene split (train, val, mini_train, ...; synthetic splits too); SUN RGB-D: train / test")
    p.add_argument("--split-file", type=Path, default=None,
                   help="SUN RGB-D: allsplit.mat or a text file of frame folders (default: the toolbox's, if found)")
    p.add_argument("--scenes", nargs="*", default=None, help="nuScenes scene names to mine (default: all of the split)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--detections", type=Path, help="2D detections JSON (clip2.detections_2d/v1 or COCO-style)")
    src.add_argument("--detector", help="OWLv2 / OWL-ViT weights: a save_pretrained folder or a hub-cache name")
    src.add_argument("--lidar-proposals", action="store_true", help="no 2D detector: LiDAR clusters named by CLIP")
    p.add_argument("--queries", nargs="*", default=None, help="vocabulary for --detector / --lidar-proposals")
    p.add_argument("--clip-model", default="ViT-B-32", help="open_clip architecture or local-dir:PATH")
    p.add_argument("--clip-weights", default=None,
                   help="pretrained tag (from your hub cache) or weights file; none = RANDOM, refused without --allow-random-clip")
    p.add_argument("--allow-random-clip", action="store_true",
                   help="accept RANDOM CLIP weights (tests, demos): image embeddings are then meaningless, and the summary says so")
    p.add_argument("--clip-config", default=None, help="extra open_clip architecture JSON to register")
    p.add_argument("--out", type=Path, required=True, help="output folder for the shards")
    p.add_argument("--background-per-frame", type=int, default=None, metavar="N",
                   help="background proxies per frame (default 16): LiDAR clusters a camera sees that no 2D box covers, "
                        "labelled 'background', so the encoder learns to reject scene structure (0: none)")
    p.add_argument("--resume", action="store_true", help="skip samples finished by an earlier run")
    p.add_argument("--rule", default=None, choices=["front", "coverage", "largest", "nearest", "span"],
                   help="which DBSCAN cluster in the frustum is the object (default: front for LiDAR, span "
                        "after plane removal indoors; docs/mining.md)")
    p.add_argument("--label-map", default=None,
                   help="fold detector labels into proxy texts: a JSON file {label: text} or 'synthetic' (clip2 synth's detector)")
    p.add_argument("--min-score", type=float, default=0.1, help="ignore proposals below this detector score")
    p.add_argument("--save-jpeg", action="store_true", help="store the image crops in the shards")
    p.add_argument("--shard-size", type=int, default=512, help="proxies per shard")
    p.add_argument("--max-samples", type=int, default=None, help="stop after this many keyframes (quick looks)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from clip2_core.datasets.nuscenes import NuScenesReader
    from clip2_core.mining.miner import MineConfig, MineStats, mine_frame
    from clip2_core.mining.select import FrustumConfig
    from clip2_core.mining.shards import ShardWriter, finished_samples, write_index
    from clip2_core.recognition import ClipConfig, check_clip
    from clip2_core.vlm import FrozenCLIP, VLMConfig

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    dist = None
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="gloo")
    if args.dataset == "sunrgbd":
        from clip2_core.datasets.sunrgbd import SunRGBDReader

        reader = SunRGBDReader(args.dataroot, split=None if args.split in (None, "all") else args.split,
                               split_file=args.split_file)
        mine_scenes = []  # frames are independent: ranks take every world-th one
        tokens = reader.names[rank::world]
    else:
        reader = NuScenesReader(args.dataroot, args.version, split=args.split, scenes=args.scenes, load_images=False)
        scenes = [s["name"] for s in reader.scene_records]
        mine_scenes = scenes[rank::world]
        tokens = [t for t in reader.sample_tokens if reader._scene_of[t] in set(mine_scenes)]
    if args.max_samples is not None:
        tokens = tokens[: args.max_samples]
    clip = FrozenCLIP(VLMConfig(model=args.clip_model, pretrained=args.clip_weights, model_config_file=args.clip_config))
    check_clip(clip, None, ClipConfig(allow_random=args.allow_random_clip), what="mining")
    if args.detections:
        from clip2_core.mining.detectors import DetectionsFile

        detector = DetectionsFile(args.detections)
    elif args.detector:
        from clip2_core.mining.detectors import OwlDetector
        from clip2_core.mining.lidar_proposals import DEFAULT_VOCABULARY

        detector = OwlDetector(args.detector, args.queries or list(DEFAULT_VOCABULARY), score_threshold=args.min_score)
    else:
        from clip2_core.mining.lidar_proposals import DEFAULT_VOCABULARY, LidarProposals

        detector = LidarProposals(clip, args.queries or DEFAULT_VOCABULARY)
    from clip2_core.mining.labels import load_label_map

    common = dict(min_score=args.min_score, save_jpeg=args.save_jpeg, shard_size=args.shard_size,
                  label_map=load_label_map(args.label_map),
                  **({} if args.background_per_frame is None else {"background_per_frame": args.background_per_frame}))
    if args.dataset == "sunrgbd":
        cfg = MineConfig.indoor(**common)
        if args.rule:
            cfg.frustum = dataclasses.replace(cfg.frustum, rule=args.rule)
    else:
        cfg = MineConfig(frustum=FrustumConfig(rule=args.rule or "front"), **common)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.resume and any(args.out.glob(f"shard-r{rank:02d}-*.tar*")):  # this rank's own: ranks start at different times
        raise ValueError(f"{args.out} already holds shards: pass --resume to continue, or choose a new --out")
    writer = ShardWriter(args.out, rank=rank, shard_size=args.shard_size, save_jpeg=args.save_jpeg)
    done = finished_samples(args.out) if args.resume else set()
    stats = MineStats()
    bar = tqdm(tokens, desc=f"mine r{rank}", unit="sample", disable=args.no_progress)
    try:
        for tok in bar:
            if tok in done:
                stats.samples_skipped_resume += 1
                continue
            try:
                frame = reader.frame(tok)
            except (OSError, ValueError) as exc:
                stats.corrupt_points += 1
                log.warning("skipping sample %s: %s", tok, exc)
                continue
            proxies = mine_frame(frame, detector, cfg, clip, stats)
            writer.write_sample(tok, proxies)
            stats.samples += 1
            bar.set_postfix(proxies=stats.proxies)
    except KeyboardInterrupt:
        writer.abort()  # the shard in progress is dropped; its samples are redone by --resume
        log.warning("interrupted: finished shards are kept; rerun with --resume")
        raise
    writer.close()
    if dist is not None:
        dist.barrier()
    summary = {"rank": rank, "world": world, "scenes": mine_scenes, "clip": clip.identity, "random_clip": clip.is_random,
               "detector": getattr(detector, "name", "?"), "dataset": args.dataset,
               "preset": "indoor" if args.dataset == "sunrgbd" else "lidar", "rule": cfg.frustum.rule,
               "planes": cfg.frustum.planes, **stats.to_dict()}
    (args.out / f"summary-r{rank:02d}.json").write_text(json.dumps(summary, indent=1, default=str))
    if rank == 0:
        index = write_index(args.out)
        _histogram(args.out / "points_per_proxy.png", stats.points_per_proxy)
        if clip.is_random:
            print("NOTE: CLIP weights are RANDOM (--allow-random-clip): the proxies' image embeddings are not CLIP's")
        print(f"mined {stats.proxies} proxies from {stats.samples} samples ({stats.samples_skipped_resume} already done); "
              f"index: {index['num_proxies']} proxies in {len(index['shards'])} shards")
        print(f"skipped: {stats.no_points} proposals without a plausible object, {stats.duplicates} cross-camera duplicates, "
              f"{stats.corrupt_points} unreadable samples, {stats.corrupt_images} undecodable images")
        for label, n in list(index["labels"].items())[:40]:
            print(f"  {label:<28} {n}")
        if stats.samples:
            print(f"selection time (ground removal + frustum/DBSCAN, no detector/CLIP): "
                  f"{stats.seconds_select / stats.samples * 1e3:.1f} ms/sample")
    if dist is not None:
        dist.barrier()
        dist.destroy_process_group()
    return 0


def _histogram(path: Path, counts) -> None:
    if not counts:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(np.asarray(counts), bins=np.logspace(np.log10(max(1, min(counts))), np.log10(max(counts) + 1), 30))
    ax.set_xscale("log")
    ax.set_xlabel("points per proxy")
    ax.set_ylabel("proxies")
    ax.set_title(f"{len(counts)} proxies, median {int(np.median(counts))} points")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
