"""``clip2 bench node``: the node as its own process, fed sweeps at sensor rate from this one.

    clip2 bench node [--seconds 60 | --soak 600] [--rate 20] [--sweeps 20] [--outputs json|all]
                     [--checkpoint DIR ...] [--set NAME=VALUE ...] [--json out.json]

A publisher here sends nuScenes-sized synthetic sweeps (``make_sweep``, ~32k points, 0.6 MB) at
``--rate`` Hz through DDS (localhost, a private domain, the shipped large-data Fast DDS profile on
both sides) to ``lidar_openvocab_node`` started as a child process with the default parameter
file (plus ``--set``). Every published sweep gets a fresh stamp; every JSON document the node
publishes is matched to its sweep by stamp. The node's CPU and RSS are sampled from ``/proc``.
``--outputs all`` also subscribes (raw, undecoded) to the markers and the labelled cloud, as rviz
does, so the node builds and sends those too; the default subscribes to the JSON document only.

Reported: sweeps sent, results, dropped (sent - results: replaced in the node's keep-latest input
queue while it was busy, or lost), end-to-end latency (publish here -> JSON received here) and the
node's own time (``timings_ms.total``) as p50/p99 overall and **per minute** (drift shows as a
trend), per-stage medians, node CPU (cores in use) and RSS per minute, RSS growth after the first
minute (warm-up). ``--soak 600`` is the 10-minute soak of issue 14; the node must stay up.

Without ``--checkpoint`` the encoder is ``--encoder`` with random weights (the compute of a trained
one) and CLIP a tiny random open_clip model: timings are real, labels are not.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

TINY_CLIP = "clip2-bench-tiny"
TINY_CLIP_CFG = {
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def random_timing_model(root: Path, encoder: str) -> Dict[str, Any]:
    """Node parameters (dotted) for ``encoder`` with random weights and a tiny random CLIP written
    under ``root``: the compute of a trained model, labels meaningless (benchmarks only)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from clip2_core.checkpoint import save_checkpoint
    from clip2_core.encoders import create_point_encoder
    from clip2_core.vlm import FrozenCLIP, VLMConfig

    enc = create_point_encoder(encoder).eval()
    cfg_file = root / f"{TINY_CLIP}.json"
    cfg_file.write_text(json.dumps(dict(TINY_CLIP_CFG, embed_dim=enc.config.embed_dim)))
    open_clip.add_model_config(cfg_file)
    torch.manual_seed(0)
    weights = root / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in open_clip.create_model(TINY_CLIP).state_dict().items()}, str(weights))
    clip = FrozenCLIP(VLMConfig(model=TINY_CLIP, pretrained=str(weights), model_config_file=str(cfg_file)))
    ckpt = save_checkpoint(root / "encoder", enc, enc.config, clip=clip.identity)
    return {"model.checkpoint": str(ckpt), "clip.model": TINY_CLIP, "clip.weights": str(weights),
            "clip.model_config_file": str(cfg_file), "clip.allow_random": True}


def per_minute(t_s: List[float], values: List[float], minute: float = 60.0) -> List[Dict[str, float]]:
    """p50 / p99 / n of ``values`` in consecutive windows of ``minute`` seconds of ``t_s``."""
    from clip2_core.eval.detection import latency_stats

    out = []
    if not t_s:
        return out
    n_win = int(max(t_s) // minute) + 1
    t = np.asarray(t_s)
    v = np.asarray(values, dtype=np.float64)
    for k in range(n_win):
        sel = (t >= k * minute) & (t < (k + 1) * minute)
        s = latency_stats(v[sel].tolist())
        out.append({"minute": k + 1, "n": s["n"], "p50": round(s["p50"], 2), "p99": round(s["p99"], 2)})
    return out


def run(args: argparse.Namespace) -> int:
    """``clip2 bench node`` (its arguments: :mod:`clip2_core.cli.bench`)."""
    from clip2_ros.replay import parse_override

    try:
        overrides = dict(parse_override(o) for o in args.overrides)
    except ValueError as exc:
        print(f"clip2 bench node: error: {exc}")
        return 2
    seconds = float(args.soak if args.soak is not None else args.seconds)
    if not seconds > 0 or not args.rate > 0 or args.sweeps < 1:
        print("clip2 bench node: error: --seconds/--soak and --rate must be > 0, --sweeps >= 1")
        return 2
    report = bench_node(seconds=seconds, rate=args.rate, n_sweeps=args.sweeps, encoder=args.encoder,
                        checkpoint=args.checkpoint, overrides=overrides, domain_id=args.domain_id,
                        progress=not args.no_progress, outputs=args.outputs)
    print(json.dumps({k: v for k, v in report.items() if k not in ("minutes",)}, indent=1))
    print("per minute:")
    for m in report["minutes"]:
        print(f"  {m['minute']:>3}: results {m['results']:>5}  dropped {m['dropped_pct']:5.1f}%  "
              f"e2e p50 {m['e2e_p50']:7.1f} p99 {m['e2e_p99']:7.1f} ms  node p99 {m['node_p99']:7.1f} ms  "
              f"cpu {m['cpu_cores']:.2f}  rss {m['rss_mb']:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0 if report["node_alive"] else 1


def bench_node(seconds: float, rate: float = 20.0, n_sweeps: int = 20, encoder: str = "pointnet2-xs-v1",
               checkpoint: Optional[str] = None, overrides: Optional[Dict[str, Any]] = None,
               domain_id: Optional[int] = None, progress: bool = True, outputs: str = "json") -> Dict[str, Any]:
    import subprocess

    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import String

    from clip2_core.datasets.synth.sweep import make_sweep
    from clip2_core.eval.detection import latency_stats
    from clip2_ros import params as P
    from clip2_ros.conversions import array_to_pointcloud2, seconds_to_stamp
    from clip2_ros.dds import apply_large_data_profile
    from clip2_ros.replay import ProcessMonitor, _stop_process, node_command, node_env, write_params

    tmp = tempfile.TemporaryDirectory(prefix="clip2-bench-node-")
    root = Path(tmp.name)
    domain_id = domain_id if domain_id is not None else random.Random(os.getpid()).randint(120, 200)
    topic = "/clip2_bench/points"
    flat = P.flatten(P.load_param_file(P.default_param_file()))
    flat.update({"lidar.topic": topic, "cameras.enabled": False, "warn_throttle_s": 60.0})
    flat.update({"model.checkpoint": checkpoint} if checkpoint else random_timing_model(root, encoder))
    flat.update(overrides or {})
    params_file = write_params(P.unflatten(flat), root / "params.yaml")
    node_name = f"clip2_bench_node_{os.getpid()}"
    log_file = root / "node.log"
    with open(log_file, "w") as logf:
        proc = subprocess.Popen(node_command(params_file, node_name, log_level="info"), env=node_env(domain_id),
                                stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    monitor = ProcessMonitor(proc.pid, period=1.0).start()

    msgs = []
    for seed in range(n_sweeps):
        sc = make_sweep(seed)
        msgs.append(array_to_pointcloud2(sc.points, ("x", "y", "z", "intensity", "ring"), frame_id="lidar",
                                         dtypes={"ring": np.uint16}))
    apply_large_data_profile()
    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    node = rclpy.create_node(f"clip2_bench_publisher_{os.getpid()}", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    pub = node.create_publisher(PointCloud2, topic, QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE))
    lock = threading.Lock()
    sent: Dict[int, float] = {}  # stamp [us] -> monotonic publish time
    got: List[tuple] = []  # (t_recv, t_sent, node_ms, timings)

    def on_json(msg):
        t = time.monotonic()
        d = json.loads(msg.data)
        key = int(round(d["stamp"] * 1e6))
        with lock:
            t_pub = sent.get(key)
        if t_pub is not None:
            got.append((t, t_pub, float(d.get("timings_ms", {}).get("total", float("nan"))), d.get("timings_ms", {})))

    node.create_subscription(String, f"/{node_name}/detections/json", on_json, QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE))
    if outputs == "all":  # what rviz subscribes to: the node then builds markers and the labelled cloud too
        from visualization_msgs.msg import MarkerArray

        for rel, cls in (("detections/markers", MarkerArray), ("detections/points", PointCloud2)):
            node.create_subscription(cls, f"/{node_name}/{rel}", lambda _raw: None, QoSProfile(
                history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                durability=DurabilityPolicy.VOLATILE), raw=True)
    spin = threading.Thread(target=ex.spin, daemon=True)
    spin.start()
    alive = True
    t_start = None
    try:
        deadline = time.monotonic() + 180
        while pub.get_subscription_count() == 0 or node.count_publishers(f"/{node_name}/detections/json") == 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the node did not start; its log:\n{log_file.read_text()[-3000:]}")
            time.sleep(0.05)
        time.sleep(1.0)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=int(seconds), desc="bench node", unit="s", leave=False)
        period = 1.0 / rate
        t_start = time.monotonic()
        k = 0
        while True:
            t_due = t_start + k * period
            now = time.monotonic()
            if t_due - t_start >= seconds:
                break
            if t_due > now:
                time.sleep(t_due - now)
            msg = msgs[k % len(msgs)]
            stamp = 1000.0 + k * period
            msg.header.stamp = seconds_to_stamp(stamp)
            with lock:
                sent[int(round(stamp * 1e6))] = time.monotonic()
            pub.publish(msg)
            k += 1
            if bar is not None and k % int(rate) == 0:
                bar.update(1)
                bar.set_postfix(results=len(got), refresh=False)
            if proc.poll() is not None:
                alive = False
                break
        if bar is not None:
            bar.close()
        time.sleep(2.0)  # the last results
        alive = alive and proc.poll() is None
    finally:
        samples = list(monitor.samples)
        monitor.stop()
        _stop_process(proc)
        ex.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    t0 = t_start or 0.0
    e2e = [(r[0] - r[1]) * 1e3 for r in got]
    t_rel = [r[1] - t0 for r in got]
    node_ms = [r[2] for r in got]
    stages: Dict[str, List[float]] = {}
    for r in got:
        for kk, v in r[3].items():
            stages.setdefault(kk, []).append(float(v))
    n_sent = len(sent)
    minutes = []
    sent_t = np.asarray(sorted(sent.values())) - t0
    e2e_m, node_m = per_minute(t_rel, e2e), per_minute(t_rel, node_ms)
    for i, (em, nm) in enumerate(zip(e2e_m, node_m)):
        lo, hi = i * 60.0, (i + 1) * 60.0
        n_s = int(((sent_t >= lo) & (sent_t < hi)).sum())
        win = [s for s in samples if lo <= s[0] - t0 < hi]
        cpu = (win[-1][1] - win[0][1]) / (win[-1][0] - win[0][0]) if len(win) > 1 else float("nan")
        minutes.append({"minute": i + 1, "sent": n_s, "results": em["n"],
                        "dropped_pct": round(100.0 * (n_s - em["n"]) / max(1, n_s), 2),
                        "e2e_p50": em["p50"], "e2e_p99": em["p99"], "node_p50": nm["p50"], "node_p99": nm["p99"],
                        "cpu_cores": round(cpu, 2), "rss_mb": round(win[-1][2], 1) if win else float("nan")})
    rss_after_warmup = minutes[0]["rss_mb"] if minutes else float("nan")
    rss_end = samples[-1][2] if samples else float("nan")
    e2e_s, node_s = latency_stats(e2e), latency_stats(node_ms)
    report = {
        "seconds": seconds, "rate_hz": rate, "outputs_subscribed": outputs, "encoder": encoder if not checkpoint else checkpoint,
        "backend": flat.get("model.backend"), "random_weights": checkpoint is None,
        "sweeps_sent": n_sent, "results": len(got), "dropped": n_sent - len(got),
        "dropped_pct": round(100.0 * (n_sent - len(got)) / max(1, n_sent), 2),
        "e2e_ms": {k: round(v, 2) for k, v in e2e_s.items()}, "node_ms": {k: round(v, 2) for k, v in node_s.items()},
        "stage_median_ms": {kk: round(float(np.median(v)), 2) for kk, v in stages.items()},
        "rss_mb_after_first_minute": rss_after_warmup, "rss_mb_end": round(rss_end, 1),
        "rss_growth_after_warmup_pct": round(100.0 * (rss_end - rss_after_warmup) / rss_after_warmup, 2)
        if minutes and rss_after_warmup == rss_after_warmup else float("nan"),
        "node_alive": alive, "node_exit_code": proc.returncode, "minutes": minutes,
    }
    tmp.cleanup()
    return report
