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
    r.add_argument("--dataroot", type=Path, required=True, help="nuScenes-format dataroot (real or clip2 synth)")
    r.add_argument("--version", default="v1.0-trainval", help="table folder")
    r.add_argument("--split", default="val", help="scene split to evaluate (val, mini_val, ...; 'all' for every scene)")
    r.add_argument("--scenes", nargs="*", default=None, help="restrict to these scenes")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="clip2 checkpoint directory")
    src.add_argument("--onnx", type=Path, help="exported encoder (.onnx)")
    r.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime", "tensorrt"])
    r.add_argument("--vocab", default="nuscenes10", help="nuscenes10, or a file (JSON list/object or one name per line)")
    r.add_argument("--class-map", default="long_tail", help="nuScenes category -> label map: detection, long_tail, or a JSON file")
    r.add_argument("--min-points", type=int, default=5, help="smallest GT crop evaluated")
    r.add_argument("--keep-ground", action="store_true",
                   help="crop every point in the box (default: minus the ground filter's points, as the pipeline sees it)")
    r.add_argument("--ensemble", action="store_true", help="also report the point + image ensemble")
    r.add_argument("--ensemble-weight", type=float, default=0.5, help="image share of the fused logits")
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
                        "config/segmentation.yaml); its ground filter is applied to the crops")
    r.add_argument("--max-samples", type=int, default=None, help="evaluate at most this many keyframes")
    r.add_argument("--out", type=Path, required=True, help="report folder")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=run_recognition)


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
    from clip2_core.datasets.nuscenes import NuScenesReader
    from clip2_core.eval.recognition import evaluate_recognition, load_vocabulary, write_report
    from clip2_core.recognition import Recognizer, trained_metadata
    from clip2_core.runtime.embedders import create_embedder

    cfg = pipeline_config_from_args(args)
    vocab = load_vocabulary(args.vocab)
    embedder = create_embedder(cfg.model.onnx or cfg.model.checkpoint, backend=cfg.model.backend)
    cfg.vocabulary = [t for _, t in vocab]
    recognizer = Recognizer(cfg.recognition(), embedder, trained=trained_metadata(cfg.model.checkpoint, cfg.model.onnx))
    split = None if args.split == "all" else args.split
    reader = NuScenesReader(args.dataroot, args.version, split=split, scenes=args.scenes, class_map=args.class_map,
                            load_images=args.ensemble, cameras=None if args.ensemble else ())
    tokens = reader.sample_tokens[: args.max_samples] if args.max_samples else reader.sample_tokens
    frames = (reader.frame(t) for t in tokens)
    report = evaluate_recognition(frames, recognizer, vocab, min_points=args.min_points, ensemble=args.ensemble,
                                  ground=cfg.segmentation.ground, progress=not args.no_progress,
                                  remove_ground_points=not args.keep_ground)
    report.meta.update({"dataroot": args.dataroot.name, "version": args.version, "split": args.split, "samples": len(tokens),
                        "source": str(args.onnx or args.checkpoint)})
    paths = write_report(report, args.out, title=f"Recognition: {args.version} {args.split}")
    print(Path(paths["md"]).read_text())
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0
