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
    r.add_argument("--max-samples", type=int, default=None, help="evaluate at most this many keyframes")
    r.add_argument("--out", type=Path, required=True, help="report folder")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=run_recognition)


def run_recognition(args: argparse.Namespace) -> int:
    from clip2_core.checkpoint import read_checkpoint_config
    from clip2_core.datasets.nuscenes import NuScenesReader
    from clip2_core.eval.recognition import evaluate_recognition, load_vocabulary, write_report
    from clip2_core.runtime.embedders import create_embedder
    from clip2_core.runtime.export import read_onnx_metadata
    from clip2_core.vlm import FrozenCLIP, VLMConfig

    source = args.onnx or args.checkpoint
    embedder = create_embedder(source, backend=args.backend)
    meta = read_onnx_metadata(args.onnx) if args.onnx else read_checkpoint_config(args.checkpoint)
    trained = meta.get("clip") or {}
    templates = args.templates or (meta.get("extra") or {}).get("templates")
    model = args.clip_model or trained.get("model")
    weights = args.clip_weights if args.clip_weights is not None else trained.get("pretrained")
    if model is None:
        raise ValueError("the encoder does not record its CLIP model: pass --clip-model (and --clip-weights)")
    clip = FrozenCLIP(VLMConfig(model=model, pretrained=weights, model_config_file=args.clip_config))
    if trained.get("weights_id") and trained["weights_id"] != clip.weights_id:
        print(f"warning: encoder trained against CLIP {trained['weights_id'][:20]}..., evaluating with {clip.weights_id[:20]}...")
    vocab = load_vocabulary(args.vocab)
    split = None if args.split == "all" else args.split
    reader = NuScenesReader(args.dataroot, args.version, split=split, scenes=args.scenes, class_map=args.class_map,
                            load_images=args.ensemble, cameras=None if args.ensemble else ())
    tokens = reader.sample_tokens[: args.max_samples] if args.max_samples else reader.sample_tokens
    frames = (reader.frame(t) for t in tokens)
    report = evaluate_recognition(frames, embedder, clip, vocab, min_points=args.min_points,
                                  ensemble_weight=args.ensemble_weight if args.ensemble else None, templates=templates,
                                  progress=not args.no_progress, remove_ground_points=not args.keep_ground)
    report.meta.update({"dataroot": args.dataroot.name, "version": args.version, "split": args.split, "samples": len(tokens),
                        "source": str(source)})
    paths = write_report(report, args.out, title=f"Recognition: {args.version} {args.split}")
    print(Path(paths["md"]).read_text())
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0
