"""The ``clip2`` command line: one entry point, one module per subcommand.

Each subcommand module exposes ``register(subparsers)`` which adds its parser and sets
``func`` to a callable taking the parsed namespace and returning an exit code. Modules are
imported when the parser is built, so they must keep heavy imports inside their ``run``.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import List, Optional

from clip2_core.sysmem import HOLD_HEAP_ENV, hold_heap

# (module under clip2_core.cli) in the order shown by --help
SUBCOMMAND_MODULES = (
    "demo",
    "cluster",
    "bench",
    "synth",
    "mine",
    "export",
    "eval",
    "bag",
    "random_clip",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clip2",
        description="clip2: open-vocabulary LiDAR perception (CLIP2). Run 'clip2 COMMAND --help' for details.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"clip2_core.cli.{name}").register(sub)  # random_clip -> "random-clip"
    return parser


class _QuietThirdParty(logging.Filter):
    """Default (not --verbose) logging: clip2's own warnings and everyone's errors, nothing else.

    open_clip, transformers and friends log INFO lines (and a "randomly initialised" warning of
    their own) through the root logger; clip2 says what matters itself (progress bars, summary
    lines, and its own loud warning for random CLIP weights).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or record.name.startswith("clip2")


def setup_logging(verbose: int = 0, quiet_level: int = logging.WARNING) -> None:
    """Quiet by default (clip2's own records from ``quiet_level`` up, others' errors only);
    ``-v``: INFO from everyone; ``-vv``: DEBUG."""
    level = {0: quiet_level, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    if verbose == 0:
        for h in logging.getLogger().handlers:
            h.addFilter(_QuietThirdParty())
    import warnings

    if verbose == 0:  # library deprecation chatter is not the user's business
        warnings.filterwarnings("ignore", category=UserWarning, module=r"(open_clip|torch|transformers)\b")
        warnings.filterwarnings("ignore", category=FutureWarning)


def user_error(exc: BaseException) -> bool:
    """Errors that end a command with a one-line message (exit 2) instead of a traceback."""
    from clip2_core.vlm import WeightsUnavailableError

    return isinstance(exc, (FileNotFoundError, ValueError, WeightsUnavailableError)) or bool(getattr(exc, "user_error", False))


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if os.environ.get(HOLD_HEAP_ENV, "1") != "0":  # sweeps allocate MBs per frame: keep them (clip2_core.sysmem)
        hold_heap()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if not user_error(exc):
            raise
        print(f"clip2 {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
