"""``clip2 random-clip``: write a tiny open_clip model with RANDOM weights, for machines without CLIP weights.

It lets the whole loop (synth -> mine -> train -> eval -> export -> node) run offline, to check
the machinery. Its labels are NOT zero-shot results: every command refuses it unless given
``--allow-random-clip`` (the node: ``clip.allow_random: true``), and every output that used it
says ``random_clip: true``. The weights file is flagged as random in its safetensors metadata.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("random-clip", help="write a tiny RANDOM CLIP (offline checks of the loop; not zero-shot)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for <name>.json (architecture) and <name>.safetensors")
    p.add_argument("--seed", type=int, default=1, help="initialisation seed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from clip2_core.cli.demo_model import DEMO_CLIP_NAME, build_random_clip

    cfg_file, weights = build_random_clip(args.out, seed=args.seed)
    print(f"wrote a RANDOM CLIP ({DEMO_CLIP_NAME}): {cfg_file} and {weights}")
    print(f"use it with: --clip-model {DEMO_CLIP_NAME} --clip-weights {weights} --clip-config {cfg_file} --allow-random-clip")
    return 0
