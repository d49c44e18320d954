"""``clip2 bag``: rosbag2 tools for replay evaluation.

``clip2 bag from-nuscenes`` converts nuScenes (real or ``clip2 synth``) scenes into rosbag2
folders that ``ros2 bag play`` replays (clip2_ros.bag, written with ``rosbags``: no ROS install
needed); ``clip2 bag play`` publishes a bag with rclpy at its original timing (clip2_ros.player),
for machines without ``ros2 bag``. See docs/bags.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bag",
        help="rosbag2 tools: convert nuScenes scenes into bags that ros2 bag play replays",
        description="rosbag2 tools for replay evaluation. Run 'clip2 bag ACTION --help' for details. See docs/bags.md.",
    )
    actions = p.add_subparsers(dest="bag_action", metavar="ACTION")
    actions.required = True
    _register_from_nuscenes(actions)
    _register_play(actions)


def _register_play(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser(
        "play",
        help="publish a rosbag2 folder over ROS 2 at its original timing (for machines without ros2 bag)",
        description=(
            "Publishes every message of BAG as stored (CDR bytes) with its original timing, or scaled by --rate; "
            "--clock also publishes /clock for nodes with use_sim_time. Topics whose message type is not importable "
            "here are skipped and listed. Ctrl-C stops."
        ),
    )
    p.add_argument("bag", type=Path, help="rosbag2 folder (metadata.yaml + .mcap or .db3)")
    p.add_argument("--rate", type=float, default=1.0, help="speed factor (default 1 = real time)")
    p.add_argument("--loop", action="store_true", help="play again from the start at the end, until Ctrl-C")
    p.add_argument("--clock", action="store_true", help="publish /clock (rosgraph_msgs/Clock) with the bag time")
    p.add_argument("--topics", nargs="+", default=None, help="play only these topics")
    p.set_defaults(func=run_play)


def run_play(args: argparse.Namespace) -> int:
    import rclpy

    from clip2_ros.player import BagPlayer, PlayConfig, format_stats

    cfg = PlayConfig(bag=args.bag, rate=args.rate, loop=args.loop, clock=args.clock, topics=args.topics)
    cfg.check()
    from clip2_ros.dds import apply_large_data_profile

    apply_large_data_profile()  # clouds over 0.5 MB reach best-effort subscribers (docs/dds.md)
    rclpy.init()
    player = None
    try:
        player = BagPlayer(cfg)
        stats = player.play()
    except KeyboardInterrupt:
        stats = player.stats if player is not None else None
    finally:
        if player is not None:
            player.destroy_node()
        rclpy.try_shutdown()
    if stats is not None:
        print("\n".join(format_stats(stats)))
    return 0


def _register_from_nuscenes(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser(
        "from-nuscenes",
        help="nuScenes (real or clip2 synth) scenes -> one rosbag2 folder per scene",
        description=(
            "Write each scene as a rosbag2 bag (MCAP or sqlite3, CDR, standard ROS 2 types): every LIDAR_TOP "
            "sweep as sensor_msgs/PointCloud2 on /LIDAR_TOP, each camera as CompressedImage + CameraInfo, "
            "/tf_static (base_link -> sensors), /tf (map -> base_link), ground truth as MarkerArray on "
            "/gt/markers; beside each bag gt.json and a node parameter file. Output: OUT/<scene>/ plus "
            "OUT/summary.json, written into OUT.partial and renamed to OUT when complete. See docs/bags.md."
        ),
    )
    p.add_argument("--dataroot", type=Path, required=True, help="nuScenes-format dataroot (real or clip2 synth)")
    p.add_argument("--version", required=True, help="table folder (v1.0-mini, v1.0-trainval, v1.0-synth, ...)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--scene", nargs="+", metavar="NAME", help="scene name(s) to convert, e.g. scene-0061")
    which.add_argument("--all", action="store_true", help="convert every scene of the version")
    p.add_argument("--out", type=Path, required=True, help="output folder (one bag per scene inside)")
    p.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap", help="rosbag2 storage (default mcap)")
    p.add_argument("--sweeps", choices=["all", "keyframes"], default="all",
                   help="all: every sample_data (LiDAR at 20 Hz); keyframes: the 2 Hz keyframes only (default all)")
    p.add_argument("--cameras", default="all",
                   help="comma-separated camera channels to write, 'all' (default) or 'none' (LiDAR only)")
    p.add_argument("--class-map", default="long_tail",
                   help="ground-truth labels: 'detection', 'long_tail' (default) or a JSON file {category: class}")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier output of this command at --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_from_nuscenes)


def _cameras(arg: str):
    if arg == "all":
        return None
    if arg == "none":
        return ()
    cams = tuple(c.strip() for c in arg.split(",") if c.strip())
    if not cams:
        raise ValueError("--cameras: give channel names (CAM_FRONT,CAM_BACK), 'all' or 'none'")
    return cams


def run_from_nuscenes(args: argparse.Namespace) -> int:
    from clip2_ros.bag import BagConfig, convert, format_summary

    cfg = BagConfig(dataroot=args.dataroot, version=args.version, out=args.out,
                    scenes=None if args.all else args.scene, storage=args.storage, sweeps=args.sweeps,
                    cameras=_cameras(args.cameras), class_map=args.class_map, overwrite=args.overwrite)
    summary = convert(cfg, progress=not args.no_progress)
    print(format_summary(summary, cfg.out))
    return 0
