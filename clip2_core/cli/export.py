"""``clip2 export``: a point-encoder checkpoint -> ONNX (dynamic batch axis), with a parity check."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a point-encoder checkpoint to ONNX",
        description=(
            "Exports the dense encoder in CHECKPOINT (a directory with model.safetensors + config.json) to ONNX "
            "with a dynamic batch axis (input 'points' (batch, P, 4) float32, output 'embedding' (batch, D)), "
            "then checks parity with PyTorch on random batches and fails if the max abs difference exceeds --atol."
        ),
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="checkpoint directory (model.safetensors + config.json)")
    p.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17)")
    p.add_argument("--atol", type=float, default=1e-4, help="max allowed |torch - onnxruntime| (default 1e-4)")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime parity check")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clip2_core.encoders import load_encoder
    from clip2_core.runtime.export import export_onnx, onnx_parity

    if args.out.suffix != ".onnx":
        raise ValueError(f"--out should end in .onnx, got {args.out}")
    model, ckpt = load_encoder(args.checkpoint)
    out = export_onnx(model, ckpt.model_config, args.out, opset=args.opset, clip=ckpt.clip, vocabulary=ckpt.vocabulary,
                      extra=ckpt.extra)
    print(f"wrote {out} ({ckpt.model_config.name}, embed_dim {ckpt.model_config.embed_dim}, "
          f"points {ckpt.model_config.normalization.num_points}, opset {args.opset})")
    if args.no_verify:
        return 0
    diff = onnx_parity(model, ckpt.model_config, out, batch_sizes=(1, 3, 16))
    print(f"parity torch vs onnxruntime: max abs diff {diff:.3g} (atol {args.atol:g}) on batches 1, 3, 16")
    if not diff <= args.atol:
        print(f"clip2 export: error: parity check failed ({diff:.3g} > {args.atol:g})")
        return 1
    return 0
