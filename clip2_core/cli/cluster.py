"""``clip2 cluster``: ground removal + Euclidean clustering of one sweep file."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cluster",
        help="cluster one LiDAR sweep (.bin/.pcd.bin/.npy/.pcd) and print the objects",
        description=(
            "Remove the ground, cluster the remaining points (exact Euclidean clustering) and fit an "
            "oriented box to each cluster. Prints one row per cluster; optionally writes a bird's-eye PNG "
            "and a JSON file. Boxes: centre x,y,z, size l,w,h (l along the heading), yaw about +z CCW from +x."
        ),
    )
    p.add_argument("sweep", type=Path, help="point cloud file: KITTI .bin (4 floats), nuScenes .pcd.bin (5 floats), .npy or .pcd")
    p.add_argument("--columns", type=int, default=None, help="float32 values per point for .bin files")
    p.add_argument("--config", type=Path, default=None, help="YAML/JSON file with 'ground' and 'cluster' sections")
    p.add_argument("--tolerance", type=float, default=None, help="clustering link distance [m] (default 0.6)")
    p.add_argument("--min-points", type=int, default=None, help="smallest cluster kept (default 5)")
    p.add_argument("--ground-threshold", type=float, default=None, help="height above ground still ground [m] (default 0.25)")
    p.add_argument("--png", type=Path, default=None, help="write a bird's-eye view PNG here")
    p.add_argument("--json", type=Path, default=None, help="write the clusters as JSON here")
    p.set_defaults(func=run)


def load_segmentation_config(path, overrides: dict):
    """SegmentationConfig from an optional YAML/JSON file plus flat ``section.key`` overrides."""
    from clip2_core.segmentation import SegmentationConfig

    data: dict = {}
    if path is not None:
        text = Path(path).read_text()
        if str(path).endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping with 'ground' and 'cluster' sections")
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, key = dotted.split(".")
        data.setdefault(section, {})[key] = value
    return SegmentationConfig.from_dict(data)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from clip2_core.pointcloud_io import load_point_cloud
    from clip2_core.segmentation import Segmenter

    points, fields = load_point_cloud(args.sweep, columns=args.columns)
    cfg = load_segmentation_config(
        args.config,
        {
            "cluster.tolerance": args.tolerance,
            "cluster.min_points": args.min_points,
            "ground.height_threshold": args.ground_threshold,
        },
    )
    result = Segmenter(cfg).segment(points)
    n_bad = int((~np.isfinite(points[:, :3]).all(axis=1)).sum())
    print(
        f"{args.sweep.name}: {points.shape[0]} points ({n_bad} non-finite), {int(result.ground_mask.sum())} ground, "
        f"{len(result.clusters)} clusters  [ground {result.timings_ms['ground']:.1f} ms, "
        f"cluster {result.timings_ms['cluster']:.1f} ms, boxes {result.timings_ms['boxes']:.1f} ms]"
    )
    header = f"{'id':>4} {'points':>7} {'x':>8} {'y':>8} {'z':>7} {'l':>6} {'w':>6} {'h':>6} {'yaw':>6} {'range':>7}"
    print(header)
    rows = []
    for c in result.clusters:
        x, y, z, l, w, h, yaw = c.box.as_array()
        print(f"{c.cluster_id:>4} {c.num_points:>7} {x:8.2f} {y:8.2f} {z:7.2f} {l:6.2f} {w:6.2f} {h:6.2f} {yaw:6.2f} {np.hypot(x, y):7.2f}")
        rows.append({"id": c.cluster_id, "num_points": c.num_points, "box": [round(float(v), 4) for v in c.box.as_array()]})
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"sweep": str(args.sweep.name), "config": cfg.to_dict(), "clusters": rows}, indent=1))
        print(f"wrote {args.json}")
    if args.png:
        from clip2_core.viz import save_bev_png

        boxes = np.array([c.box.as_array() for c in result.clusters]).reshape(-1, 7)
        save_bev_png(
            args.png,
            points,
            boxes=boxes,
            box_labels=[f"#{c.cluster_id} ({c.num_points})" for c in result.clusters],
            ground_mask=result.ground_mask,
            cluster_labels=result.labels,
            title=f"{args.sweep.name}: {len(result.clusters)} clusters",
        )
        print(f"wrote {args.png}")
    return 0
