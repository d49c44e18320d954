"""Benchmark: memory and time of a very large run-time vocabulary, and what trim_heap gives back.

    python bench/vocabulary_memory.py [--labels 10000] [--json out.json]

What the node's vocabulary thread does on ``ros2 param set ... vocabulary`` with ``--labels``
names: build the text bank (the demo CLIP, random weights, all default templates) on a worker
thread, go back to two labels, then :func:`clip2_core.sysmem.trim_heap` (which the node calls after
every rebuild). Prints the process RSS at each point. Results go into BENCHMARKS.md ("Issue 15").
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import threading
import time
from pathlib import Path


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def on_thread(fn) -> float:
    t0 = time.perf_counter()
    th = threading.Thread(target=fn)
    th.start()
    th.join()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", type=int, default=10000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from clip2_core.cli.demo_model import DEMO_CLIP_NAME, build_random_clip
    from clip2_core.sysmem import trim_heap
    from clip2_core.vlm import DEFAULT_TEMPLATES, FrozenCLIP, VLMConfig, build_text_bank

    with tempfile.TemporaryDirectory() as tmp:
        cfg_file, weights = build_random_clip(Path(tmp))
        clip = FrozenCLIP(VLMConfig(model=DEMO_CLIP_NAME, pretrained=str(weights), model_config_file=str(cfg_file)))
    small = ["car", "tree"]
    build_text_bank(clip, small)
    row = {"labels": args.labels, "templates": len(DEFAULT_TEMPLATES), "clip": DEMO_CLIP_NAME + " (random weights)",
           "rss_mb_start": rss_mb()}
    words = [f"thing number {i}" for i in range(args.labels)]
    row["build_s"] = on_thread(lambda: build_text_bank(clip, words))
    row["rss_mb_large"] = rss_mb()
    on_thread(lambda: build_text_bank(clip, small))
    row["rss_mb_back_to_two"] = rss_mb()
    row["trimmed"] = trim_heap()
    row["rss_mb_after_trim"] = rss_mb()
    row["rss_mb_peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
