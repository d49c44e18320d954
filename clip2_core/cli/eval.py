"""``clip2 eval``: measure a trained encoder the way the paper does."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluation protocols (recognition on GT crops)", description=__doc__)
    esub = p.add_subparsers(dest="protocol", metavar="PROTOCOL")
    esub.required = True
    r = esub.add_parser(
        "recognition",
        help="zero-shot top-1 on ground-truth object crops (the paper's protocol)",
        description=(
            "Crops every annotated object with >= --min-points LiDAR points, embeds it with the point encoder and "
            "classifies it against the CLIP text bank of --vocab. Writes report.json, report.md and confusion PNGs. "
            "With --ensemble, also reports the point + image ensemble (CLIP on the object's best camera crop)."
        ),
    )
    r.add_argument("--dataset", default="nuscenes", choices=["nuscenes", "sunrgbd"],
                   help="nuscenes (LiDAR, nuScenes format) or sunrgbd (RGB-D frames in the SUN RGB-D release layout)")
    r.add_argument("--dataroot", type=Path, required=True,
                   help="nuScenes-format dataroot (real or clip2 synth), or the SUNRGBD folder (or one above it)")
    r.add_argument("--version", default="v1.0-trainval", help="nuScenes table folder")
    r.add_argument("--split", default=None,
                   help="split to evaluate: nuScenes scene split (default val; mini_val, ...), SUN RGB-D train/test "
                        "(default test; val = test); 'all' for everything")
    r.add_argument("--split-file", type=Path, default=None,
                   help="SUN RGB-D split: allsplit.mat or a text file of frame folders (default: the toolbox's "
                        "traintestsplit/allsplit.mat beside or under --dataroot)")
    r.add_argument("--scenes", nargs="*", default=None, help="nuScenes: restrict to these scenes")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="clip2 checkpoint directory")
    src.add_argument("--onnx", type=Path, help="exported encoder (.onnx)")
    r.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime", "tensorrt"])
    r.add_argument("--vocab", default=None,
                   help="nuscenes10 (nuScenes default), sunrgbd10 (SUN RGB-D default: the paper's 10 classes), or a "
                        "file (JSON list/object or one name per line)")
    r.add_argument("--class-map", default="long_tail", help="nuScenes category -> label map: detection, long_tail, or a JSON file")
    r.add_argument("--min-points", type=int, default=5, help="smallest GT crop evaluated")
    r.add_argument("--keep-ground", action="store_true",
                   help="crop every point in the box (default: minus the ground filter's points, as the pipeline sees it)")
    r.add_argument("--ensemble", action="store_true", help="also report the point + image ensemble")
    r.add_argument("--ensemble-weight", type=float, default=0.5, help="image share of the fused logits")
    add_method_args(r)
    r.add_argument("--clip-model", default=None, help="override the CLIP recorded in the checkpoint")
    r.add_argument("--clip-weights", default=None, help="override the CLIP weights recorded in the checkpoint")
    r.add_argument("--clip-config", default=None, help="extra open_clip architecture JSON to register")
    r.add_argument("--templates", nargs="*", default=None,
                   help="prompt templates with {} (default: those the encoder was trained with, else the built-in ensemble)")
    r.add_argument("--allow-random-clip", action="store_true",
                   help="accept RANDOM CLIP weights (tests, demos); the report then says so")
    r.add_argument("--allow-clip-mismatch", action="store_true",
                   help="accept CLIP weights other than those the encoder was trained against")
    r.add_argument("--segmentation-config", type=Path, default=None,
                   help="the pipeline's segmentation config (YAML/JSON with ground/cluster sections, e.g. "
                        "config/segmentation.yaml); its ground filter is applied to the crops (default: the "
                        "pipeline's; SUN RGB-D: the indoor floor filter, clip2_core.segmentation.INDOOR_GROUND)")
    r.add_argument("--max-samples", type=int, default=None, help="evaluate at most this many keyframes")
    r.add_argument("--out", type=Path, required=True, help="report folder")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=run_recognition)

    o = esub.add_parser(
        "objects",
        help="zero-shot (and few-shot) top-1 / top-5 on ScanObjectNN or ModelNet40",
        description=(
            "Classifies every object of the test split against the CLIP text bank of the dataset's classes, with "
            "the same recognition step as the LiDAR protocol; --method adds the PointCLIP projection baseline, "
            "--few-shot linear probes on frozen embeddings. Official layouts: see clip2_core/datasets/objects.py "
            "and docs/evaluation.md."
        ),
    )
    o.add_argument("--dataset", required=True, choices=["scanobjectnn", "modelnet40"])
    o.add_argument("--root", type=Path, required=True,
                   help="ScanObjectNN h5_files (or its parent); modelnet40_ply_hdf5_2048 or ModelNet40 (.off) (or a parent)")
    o.add_argument("--variant", default="PB_T50_RS", choices=["OBJ_ONLY", "OBJ_BG", "PB_T50_RS"], help="ScanObjectNN variant")
    o.add_argument("--up", default="y", choices=["y", "z"], help="the dataset's up axis (both official releases: y)")
    o.add_argument("--object-size", type=float, default=None,
                   help="scale each object so its longest box side is this many metres (default: as stored)")
    o.add_argument("--few-shot", type=int, nargs="*", default=[], metavar="K",
                   help="also fit linear probes with K training objects per class, e.g. --few-shot 1 2 4 8 16")
    o.add_argument("--seed", type=int, default=0, help="few-shot draw")
    o.add_argument("--max-objects", type=int, default=None, help="evaluate only the first N test objects")
    src = o.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="clip2 checkpoint directory")
    src.add_argument("--onnx", type=Path, help="exported encoder (.onnx)")
    o.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime", "tensorrt"])
    add_method_args(o)
    for flag, hlp in (("--clip-model", "override the CLIP recorded in the checkpoint"),
                      ("--clip-weights", "override the CLIP weights recorded in the checkpoint"),
                      ("--clip-config", "extra open_clip architecture JSON to register")):
        o.add_argument(flag, default=None, help=hlp)
    o.add_argument("--templates", nargs="*", default=None, help="prompt templates with {}")
    o.add_argument("--allow-random-clip", action="store_true", help="accept RANDOM CLIP weights (tests); the report says so")
    o.add_argument("--allow-clip-mismatch", action="store_true")
    o.add_argument("--out", type=Path, required=True, help="report folder")
    o.add_argument("--no-progress", action="store_true")
    o.set_defaults(func=run_objects, segmentation_config=None, ensemble=False, ensemble_weight=0.5)

    rp = esub.add_parser(
        "replay",
        help="replay bags through the live ROS 2 node and score it (nuScenes devkit + open-vocabulary metrics)",
        description=(
            "Starts lidar_openvocab_node, plays each scene bag (clip2 bag from-nuscenes output) through DDS, records "
            "everything the node publishes and scores the keyframes: nuscenes-devkit DetectionEval (mAP, NDS), "
            "class-agnostic recall, false-alarm rate, label accuracy, latency, CPU and memory. Writes report.json, "
            "report.md, PNGs, the submission file and the node's outputs as rosbag2. See docs/replay.md."
        ),
    )
    rp.add_argument("--bag", type=Path, required=True, help="a scene bag folder, or a folder of them")
    rp.add_argument("--params", type=Path, default=None,
                    help="node parameter file (default: each scene's lidar_openvocab.param.yaml)")
    rp.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                    help="override a node parameter, e.g. --set model.onnx=model.onnx (repeatable; values are YAML)")
    rp.add_argument("--out", type=Path, required=True, help="report folder")
    rp.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1: real time)")
    rp.add_argument("--lockstep", action="store_true",
                    help="publish each sweep only after the node answered the previous one: every sweep is "
                         "processed whatever the machine's speed (quality, not real-time behaviour)")
    rp.add_argument("--scenes", nargs="*", default=None, help="only these scene bags")
    rp.add_argument("--dataroot", type=Path, default=None,
                    help="nuScenes dataroot for the devkit (default: the one recorded by clip2 bag from-nuscenes)")
    rp.add_argument("--label-map", type=Path, default=None,
                    help="JSON {vocabulary word: nuScenes detection class or null} (default rules: docs/replay.md)")
    rp.add_argument("--min-points", type=int, default=10, help="objects with fewer LiDAR points do not count for recall")
    rp.add_argument("--check-offline", action="store_true",
                    help="also run the processed sweeps through Pipeline directly and compare frame by frame")
    rp.add_argument("--domain-id", type=int, default=None, help="ROS domain of the replay (default: a private random one)")
    rp.add_argument("--no-progress", action="store_true")
    rp.set_defaults(func=run_replay)


def add_method_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", nargs="+", default=["clip2"], choices=["clip2", "pointclip", "clip2+pointclip", "all"],
                   help="methods scored side by side on the same crops: clip2 (the point encoder, always), pointclip "
                        "(PointCLIP V2-style depth maps through CLIP's image tower, nothing learnt), clip2+pointclip "
                        "(their logit ensemble); all = every one")
    p.add_argument("--pointclip-weight", type=float, default=0.5, help="pointclip share of the clip2+pointclip logits")
    p.add_argument("--pointclip-size", type=int, default=224, help="depth-map side in pixels")


def methods_from_args(args: argparse.Namespace):
    """(methods, PointCLIPBaseline config or None) of --method / --pointclip-*."""
    from clip2_core.eval.pointclip import ProjectionConfig
    from clip2_core.eval.recognition import METHODS

    methods = list(METHODS) if "all" in args.method else list(dict.fromkeys(["clip2", *args.method]))
    cfg = ProjectionConfig(size=args.pointclip_size) if any("pointclip" in m for m in methods) else None
    return methods, cfg


def pipeline_config_from_args(args: argparse.Namespace):
    """The :class:`~clip2_core.pipeline.PipelineConfig` an evaluation runs (the node's, given the same settings)."""
    from clip2_core.cli.cluster import load_segmentation_config
    from clip2_core.pipeline import PipelineConfig

    return PipelineConfig.from_dict({
        "segmentation": load_segmentation_config(args.segmentation_config, {}).to_dict(),
        "model": {"checkpoint": str(args.checkpoint) if args.checkpoint else None,
                  "onnx": str(args.onnx) if args.onnx else None, "backend": args.backend},
        "clip": {"model": args.clip_model, "weights": args.clip_weights, "model_config_file": args.clip_config,
                 "templates": args.templates or None, "allow_random": bool(args.allow_random_clip),
                 "allow_mismatch": bool(args.allow_clip_mismatch)},
        "ensemble": bool(args.ensemble),
        "ensemble_weight": args.ensemble_weight,
    })


def run_recognition(args: argparse.Namespace) -> int:
    from clip2_core.eval.pointclip import PointCLIPBaseline
    from clip2_core.eval.recognition import (PUBLISHED_NUSCENES, PUBLISHED_SUNRGBD, evaluate_recognition,
                                             load_vocabulary, write_report)
    from clip2_core.recognition import Recognizer, trained_metadata
    from clip2_core.runtime.embedders import create_embedder

    indoor = args.dataset == "sunrgbd"
    default_vocab = "sunrgbd10" if indoor else "nuscenes10"
    vocab_name = args.vocab or default_vocab
    split = args.split or ("test" if indoor else "val")
    cfg = pipeline_config_from_args(args)
    ground = cfg.segmentation.ground
    if indoor and args.segmentation_config is None:
        from clip2_core.segmentation import INDOOR_GROUND

        ground = INDOOR_GROUND
    vocab = load_vocabulary(vocab_name)
    if indoor:  # read the frames before loading any model: a wrong root fails fast
        from clip2_core.datasets.sunrgbd import SunRGBDReader

        reader = SunRGBDReader(args.dataroot, split=None if split == "all" else split, split_file=args.split_file,
                               load_images=args.ensemble)
        names = reader.names[: args.max_samples] if args.max_samples else reader.names
        if not names:
            raise SystemExit(f"no SUN RGB-D frames of split {split!r} under {args.dataroot}")
        frames = (reader.frame(n) for n in names)
        where = {"dataset": "sunrgbd", "split": split, "samples": len(names)}
        title = f"Recognition: SUN RGB-D {split}"
    else:
        from clip2_core.datasets.nuscenes import NuScenesReader

        reader = NuScenesReader(args.dataroot, args.version, split=None if split == "all" else split, scenes=args.scenes,
                                class_map=args.class_map, load_images=args.ensemble,
                                cameras=None if args.ensemble else ())
        tokens = reader.sample_tokens[: args.max_samples] if args.max_samples else reader.sample_tokens
        frames = (reader.frame(t) for t in tokens)
        where = {"dataset": "nuscenes", "version": args.version, "split": split, "samples": len(tokens)}
        title = f"Recognition: {args.version} {split}"
    embedder = create_embedder(cfg.model.onnx or cfg.model.checkpoint, backend=cfg.model.backend)
    cfg.vocabulary = [t for _, t in vocab]
    recognizer = Recognizer(cfg.recognition(), embedder, trained=trained_metadata(cfg.model.checkpoint, cfg.model.onnx))
    methods, projection = methods_from_args(args)
    report = evaluate_recognition(frames, recognizer, vocab, min_points=args.min_points, ensemble=args.ensemble,
                                  ground=ground, progress=not args.no_progress,
                                  remove_ground_points=not args.keep_ground, methods=methods,
                                  pointclip=PointCLIPBaseline(recognizer.clip, projection) if projection else None,
                                  pointclip_weight=args.pointclip_weight)
    report.meta.update({"dataroot": args.dataroot.name, **where, "source": str(args.onnx or args.checkpoint)})
    if vocab_name == default_vocab:  # the paper's figures only compare on the paper's classes
        report.meta["published"] = PUBLISHED_SUNRGBD if indoor else PUBLISHED_NUSCENES
    paths = write_report(report, args.out, title=title)
    print(Path(paths["md"]).read_text())
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0


def run_objects(args: argparse.Namespace) -> int:
    from clip2_core.datasets.objects import read_modelnet40, read_scanobjectnn
    from clip2_core.eval.objects import PUBLISHED_SCANOBJECTNN, evaluate_objects
    from clip2_core.eval.pointclip import PointCLIPBaseline
    from clip2_core.eval.recognition import write_report
    from clip2_core.recognition import Recognizer, trained_metadata
    from clip2_core.runtime.embedders import create_embedder

    def read(split):
        if args.dataset == "scanobjectnn":
            return read_scanobjectnn(args.root, args.variant, split, up=args.up)
        return read_modelnet40(args.root, split, up=args.up, seed=args.seed)

    test = read("test")
    if args.max_objects:
        test.points, test.labels = test.points[: args.max_objects], test.labels[: args.max_objects]
    train = read("train") if args.few_shot else None
    cfg = pipeline_config_from_args(args)
    cfg.vocabulary = list(test.texts)
    embedder = create_embedder(cfg.model.onnx or cfg.model.checkpoint, backend=cfg.model.backend)
    recognizer = Recognizer(cfg.recognition(), embedder, trained=trained_metadata(cfg.model.checkpoint, cfg.model.onnx))
    methods, projection = methods_from_args(args)
    report = evaluate_objects(test, recognizer, methods,
                              PointCLIPBaseline(recognizer.clip, projection) if projection else None,
                              args.pointclip_weight, args.object_size, train=train, shots=args.few_shot, seed=args.seed,
                              progress=not args.no_progress)
    report.meta["source"] = str(args.onnx or args.checkpoint)
    if args.dataset == "scanobjectnn":
        report.meta["variant"] = args.variant
        report.meta["published"] = PUBLISHED_SCANOBJECTNN
    paths = write_report(report, args.out, title=f"Objects: {test.name} {test.split}")
    print(Path(paths["md"]).read_text())
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0


def run_replay(args: argparse.Namespace) -> int:
    from clip2_ros.replay import ReplayConfig, parse_override, run_replay as replay
    from clip2_ros.replay_report import headline_lines

    overrides = dict(parse_override(o) for o in args.overrides)
    cfg = ReplayConfig(bag=args.bag, out=args.out, params=args.params, overrides=overrides, rate=args.rate,
                       scenes=args.scenes, dataroot=args.dataroot, label_map=args.label_map, min_points=args.min_points,
                       check_offline=args.check_offline, domain_id=args.domain_id, progress=not args.no_progress,
                       lockstep=args.lockstep)
    report = replay(cfg)
    if report.get("identity", {}).get("random_clip"):
        print("WARNING: CLIP weights are RANDOM: labels only reflect the classes the encoder was trained on")
    print(f"replay of {len(report['scenes'])} scene(s) at rate {report['rate']}"
          f"{' (lockstep)' if report.get('lockstep') else ''}:")
    print("\n".join(headline_lines(report)))
    if "offline_check" in report:
        oc = report["offline_check"]
        print(f"  online == offline: {oc['frames_identical']}/{oc['frames_checked']} frames")
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0
