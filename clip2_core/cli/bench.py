"""``clip2 bench``: measured speed of the stack's stages against named peers (results: BENCHMARKS.md)."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path



def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks (median times and ratios against peers)", description=__doc__)
    bsub = p.add_subparsers(dest="bench", metavar="BENCH")
    bsub.required = True
    c = bsub.add_parser(
        "clustering",
        help="ground removal + clustering vs sklearn DBSCAN and open3d cluster_dbscan",
        description=(
            "Times our ground removal + exact Euclidean clustering on a nuScenes-sized synthetic 32-beam sweep "
            "and on the KITTI sample frame, against sklearn DBSCAN and open3d cluster_dbscan (where installed) "
            "with eps = tolerance, min_samples = 1 (the same partition). Reports medians, ratio ours/peer and ARI."
        ),
    )
    c.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    c.add_argument("--repeats", type=int, default=7, help="timed runs per measurement (median reported)")
    c.add_argument("--kitti", type=Path, default=None, help="folder with a KITTI points.npy (default: the shipped sample frame)")
    c.add_argument("--seed", type=int, default=0, help="seed of the synthetic sweep")
    c.set_defaults(func=run_clustering)
    n = bsub.add_parser(
        "node", help="the node process at sensor rate through DDS: latency, drops, CPU, RSS per minute (--soak)",
        description="Starts lidar_openvocab_node as its own process and publishes nuScenes-sized synthetic sweeps "
                    "to it at --rate Hz from this one (see clip2_ros/soak.py); --soak 600 is the 10-minute soak.",
    )
    n.add_argument("--seconds", type=float, default=60.0, help="how long to publish (default 60)")
    n.add_argument("--soak", type=float, default=None, metavar="SECONDS", help="a soak of this length (e.g. 600)")
    n.add_argument("--rate", type=float, default=20.0, help="sweeps per second (default 20, the nuScenes LiDAR)")
    n.add_argument("--sweeps", type=int, default=20, help="distinct synthetic sweeps, published in turn")
    n.add_argument("--encoder", default="pointnet2-xs-v1", help="bundled encoder config, random weights (default: the default encoder)")
    n.add_argument("--checkpoint", default=None, help="a trained clip2 checkpoint instead (its CLIP must be available)")
    n.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="a node parameter (repeatable), e.g. --set model.backend=torch")
    n.add_argument("--outputs", choices=["json", "all"], default="json",
                   help="outputs subscribed here: the JSON document only, or also markers + labelled cloud (as rviz)")
    n.add_argument("--domain-id", type=int, default=None, help="ROS domain (default: a private random one)")
    n.add_argument("--json", type=Path, default=None, help="write the report (with the per-minute rows) here")
    n.add_argument("--no-progress", action="store_true")
    n.set_defaults(func=run_node)
    try:  # issue 4's encoder benchmark registers itself when present
        from clip2_core.cli.bench_encoder import add_encoder_bench
    except ImportError:
        pass
    else:
        add_encoder_bench(bsub)


def run_node(args: argparse.Namespace) -> int:
    from clip2_ros.soak import run  # needs rclpy: imported only for this command

    return run(args)


def run_clustering(args: argparse.Namespace) -> int:
    from clip2_core.cli.bench_clustering import run_clustering_bench

    from clip2_core.data import sample_frame_dir

    rows = run_clustering_bench(args.kitti or sample_frame_dir("kitti_000008"), repeats=args.repeats, seed=args.seed)
    print(f"cpu threads available: {os.cpu_count()}")
    print(f"{'sweep':<26} {'points':>7} {'ours ms':>8} {'peer':<22} {'peer ms':>8} {'ratio':>6} {'ARI':>6}")
    for r in rows:
        print(f"{r['sweep']:<26} {r['points']:>7} {r['ours_ms']:>8.2f} {r['peer']:<22} {r['peer_ms']:>8.2f} {r['ratio']:>6.2f} {r['ari']:>6.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"benchmark": "clustering", "results": rows}, indent=1))
        print(f"wrote {args.json}")
    return 0
