"""Benchmark: training throughput (proxies/s), one process vs two DDP processes (gloo, CPU).

    python bench/training.py [--encoder pointnet2-xs-v1] [--steps 40] [--json out.json]

Proxies: non-ground points of ground-truth boxes of synthetic sweeps (clip2_core.datasets.synth.sweep),
with random stand-in image embeddings so both loss terms run. CLIP: a tiny random open_clip
(embed dim 512 to match the encoder), built here. Throughput is the trainer's own figure
(median over logging windows, all processes together). Results: BENCHMARKS.md ("Issue 6").
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="pointnet2-xs-v1")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=32, help="per process")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    import open_clip
    import torch
    from safetensors.torch import save_file

    from clip2_core.datasets.synth.sweep import write_sweep_proxies

    tmp = Path(tempfile.mkdtemp(prefix="clip2-bench-train-"))
    cfg = {"embed_dim": 512, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}
    (tmp / "bench-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp / "bench-clip.json")
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in open_clip.create_model("bench-clip").state_dict().items()},
              str(tmp / "bench-clip.safetensors"))
    proxies = write_sweep_proxies(tmp / "proxies", range(40), emb_dim=512)
    base = [str(ROOT / "training" / "train.py"), "--config", str(ROOT / "training" / "configs" / "synthetic_smoke.yaml"),
            "--set", f"data.train=[{proxies}]", "--set", "data.val=[]", "--set", f"data.batch_size={args.batch_size}",
            "--set", f"model.name={args.encoder}", "--set", "clip.model=bench-clip",
            "--set", f"clip.weights={tmp / 'bench-clip.safetensors'}", "--set", f"clip.model_config_file={tmp / 'bench-clip.json'}",
            "--set", f"optim.steps={args.steps}", "--set", "log.every=5", "--set", "log.tensorboard=false",
            "--set", f"checkpoint.every={args.steps}"]
    results = {"encoder": args.encoder, "batch_per_process": args.batch_size, "steps": args.steps, "threads": os.cpu_count()}
    for world in (1, 2):
        out = tmp / f"run{world}"
        if world == 1:
            cmd = [sys.executable, *base, "--set", f"checkpoint.out={out}"]
            env = dict(os.environ)
        else:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            cmd = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                   "--master_port", str(port), *base, "--set", f"checkpoint.out={out}"]
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        summary = json.loads((out / "summary.json").read_text())
        results[f"proxies_per_s_{world}proc"] = round(summary["proxies_per_s_median"], 1)
    results["ratio_2proc_over_1proc"] = round(results["proxies_per_s_2proc"] / results["proxies_per_s_1proc"], 3)
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
