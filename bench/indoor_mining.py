"""Benchmark: indoor RGB-D mining quality (synthetic SUN RGB-D rooms), the indoor preset against its
variants and the LiDAR defaults.

    python bench/indoor_mining.py [--rooms 24] [--grow 0.15] [--json out.json]

Rooms ``make_room(100 ..)`` are written in the SUN RGB-D release layout and read back with the
reader; each visible object's 2D box (its visible pixels) grown by ``--grow`` per side is the
proposal. A proxy's points are scored by the box their pixel sees (the ray caster's owner map):
purity (share of the proxy's points on its object), recall (share of the object's points in the
proxy); objects against the back wall are reported apart. Results go into docs/mining.md and
BENCHMARKS.md (issue 16).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from clip2_core.datasets.sunrgbd import SunRGBDReader
from clip2_core.datasets.synth.indoor import detections_file, make_room, point_owners, write_room
from clip2_core.mining.detectors import DetectionsFile
from clip2_core.mining.miner import MineConfig, MineStats, mine_frame


def configs():
    def indoor(**frustum):
        c = MineConfig.indoor()
        c.frustum = dataclasses.replace(c.frustum, **frustum)
        return c

    return {
        "LiDAR defaults": MineConfig(),
        "indoor (default: planes 3, rule span)": MineConfig.indoor(),
        "indoor, no planes": indoor(planes=0),
        "indoor, rule largest": indoor(rule="largest"),
        "indoor, rule front": indoor(rule="front"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rooms", type=int, default=24)
    ap.add_argument("--grow", type=float, default=0.15, help="proposal box growth per side (fraction of its size)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="clip2-indoor-"))
    rooms = {f"synth/room/{s:04d}": make_room(s) for s in range(100, 100 + args.rooms)}
    for name, room in rooms.items():
        write_room(tmp / "SUNRGBD", name, room)
        for i, bb in enumerate(room.boxes_2d):
            if np.isfinite(bb).all():
                dx, dy = args.grow * (bb[2] - bb[0]), args.grow * (bb[3] - bb[1])
                room.boxes_2d[i] = np.array([max(0, bb[0] - dx), max(0, bb[1] - dy), bb[2] + dx, bb[3] + dy])
    det = DetectionsFile(detections_file(rooms, tmp / "dets.json"))
    reader = SunRGBDReader(tmp, load_images=True)
    frames = {n: reader.frame(n) for n in reader.names}
    truth = {n: point_owners(rooms[n], f.points, f.cameras["CAM0"]) for n, f in frames.items()}
    results = {}
    print(f"{args.rooms} rooms, proposals grown {args.grow:.0%} per side")
    print("| config | objects | missed | proxies >= 0.8 pure (against the wall) | purity mean | recall median | ms/frame |")
    print("|---|---|---|---|---|---|---|")
    for label, cfg in configs().items():
        rows, t0 = [], time.perf_counter()
        for n, f in frames.items():
            cam, room = f.cameras["CAM0"], rooms[n]
            proxies = mine_frame(f, det, cfg, None, MineStats())
            for j, bb in enumerate(room.boxes_2d):
                if not np.isfinite(bb).all():
                    continue
                p = next((p for p in proxies if p.box_2d is not None and np.allclose(p.box_2d, bb)), None)
                if p is None:
                    rows.append((j in room.against_wall, 0.0, 0.0, 1))
                    continue
                mine = point_owners(room, p.points, cam) == j
                rows.append((j in room.against_wall, mine.mean(), mine.sum() / max(1, (truth[n] == j).sum()), 0))
        ms = 1e3 * (time.perf_counter() - t0) / len(frames)
        a = np.array(rows, dtype=np.float64)
        wall = a[:, 0] == 1
        r = {"objects": len(a), "missed": int(a[:, 3].sum()), "pure_share": float((a[:, 1] >= 0.8).mean()),
             "pure_share_wall": float((a[wall, 1] >= 0.8).mean()), "purity_mean": float(a[:, 1].mean()),
             "recall_median": float(np.median(a[:, 2])), "ms_per_frame": ms}
        results[label] = r
        print(f"| {label} | {r['objects']} | {r['missed']} | {r['pure_share']:.2f} ({r['pure_share_wall']:.2f}) | "
              f"{r['purity_mean']:.2f} | {r['recall_median']:.2f} | {ms:.0f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"rooms": args.rooms, "grow": args.grow, "results": results}, indent=1))


if __name__ == "__main__":
    main()
