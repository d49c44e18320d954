#!/usr/bin/env python3
"""Train a CLIP2 point encoder on mined proxies.

    python training/train.py --config training/configs/synthetic_smoke.yaml [--set optim.lr=3e-4 ...] [--resume]
    torchrun --nproc_per_node 2 training/train.py --config ...     # DDP (gloo on CPU, NCCL on GPU)

The YAML is parsed once into clip2_core.training.config.TrainConfig; every --set key=value
overrides one dotted key (values parsed as YAML). --resume continues the run in
checkpoint.out exactly (model, optimiser, schedule, RNG, data position).
"""
import argparse
import json
import logging
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="training YAML (see training/configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set optim.steps=500 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in checkpoint.out")
    parser.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                        help="leave after this step with a checkpoint (time-boxed jobs); --resume continues")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from clip2_core.training.config import load_train_config
    from clip2_core.training.trainer import train

    try:
        cfg = load_train_config(args.config, args.overrides)
        summary = train(cfg, resume=args.resume, stop_at=args.stop_at)
    except (FileNotFoundError, ValueError) as exc:
        print(f"train.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: a checkpoint was saved; rerun with --resume to continue", file=sys.stderr)
        return 130
    print(json.dumps({k: v for k, v in summary.items() if k != "vocabulary"}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
