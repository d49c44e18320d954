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
    from clip2_core.cli import setup_logging, user_error

    # clip2's own progress (INFO) by default, other libraries' chatter only with --verbose
    setup_logging(2 if args.verbose else 0, quiet_level=logging.INFO)
    from clip2_core.training.config import load_train_config
    from clip2_core.training.trainer import train

    try:
        cfg = load_train_config(args.config, args.overrides)
        summary = train(cfg, resume=args.resume, stop_at=args.stop_at)
    except Exception as exc:
        if not user_error(exc):
            raise
        print(f"train.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: a checkpoint was saved; rerun with --resume to continue", file=sys.stderr)
        return 130
    print(json.dumps({k: v for k, v in summary.items() if k != "vocabulary"}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
