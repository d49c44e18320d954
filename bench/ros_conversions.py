"""Benchmark: PointCloud2 <-> numpy conversion (clip2_ros.conversions) vs a per-point struct loop.

    python bench/ros_conversions.py [--repeats 7] [--json out.json]

The sweep is the nuScenes-sized synthetic sweep (clip2_core.datasets.synth.sweep.make_sweep, ~35k
points) packed like a typical driver: x, y, z float32, 4 pad bytes, intensity float32,
ring uint16, 10 pad bytes (point_step 32). The peer is the straightforward per-point decoder
(struct.unpack_from for each field of each point) that a ROS 2 install without sensor_msgs_py's
numpy path would use. Results go into BENCHMARKS.md ("Issue 7").
"""
from __future__ import annotations

import argparse
import json
import statistics
import struct
import time
from pathlib import Path

import numpy as np


def _time(fn, repeats: int) -> float:
    fn()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(runs)


def driver_cloud(points: np.ndarray):
    from clip2_ros.conversions import structured_to_pointcloud2

    dt = np.dtype({"names": ["x", "y", "z", "intensity", "ring"], "formats": ["<f4", "<f4", "<f4", "<f4", "<u2"],
                   "offsets": [0, 4, 8, 16, 20], "itemsize": 32})
    rec = np.zeros(points.shape[0], dtype=dt)
    for i, name in enumerate(dt.names):
        rec[name] = points[:, i]
    return structured_to_pointcloud2(rec, frame_id="lidar")


def naive_decode(msg):
    fmt = {7: "f", 4: "H"}
    order = ">" if msg.is_bigendian else "<"
    fields = [(f.offset, order + fmt[f.datatype]) for f in msg.fields]
    data = bytes(msg.data)
    out = []
    for i in range(msg.width * msg.height):
        base = i * msg.point_step
        out.append([struct.unpack_from(f, data, base + o)[0] for o, f in fields])
    return np.asarray(out, dtype=np.float32)


def naive_encode(points: np.ndarray) -> bytes:
    buf = bytearray()
    for p in points.tolist():
        buf += struct.pack("<ffff", p[0], p[1], p[2], p[3])
    return bytes(buf)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from clip2_core.datasets.synth.sweep import make_sweep
    from clip2_ros.conversions import array_to_pointcloud2, pointcloud2_to_array

    pts = make_sweep(0).points
    msg = driver_cloud(pts)
    ours, _ = pointcloud2_to_array(msg)
    ref = naive_decode(msg)
    assert np.array_equal(ours, ref), "decoders disagree"
    rows = []
    t_ours = _time(lambda: pointcloud2_to_array(msg), args.repeats)
    t_peer = _time(lambda: naive_decode(msg), max(1, args.repeats // 3))
    rows.append({"op": "decode PointCloud2 -> (N,5) float32", "points": int(pts.shape[0]), "ours_ms": t_ours,
                 "peer": "per-point struct.unpack", "peer_ms": t_peer, "speedup": t_peer / t_ours})
    xyzi = pts[:, :4]
    t_ours = _time(lambda: array_to_pointcloud2(xyzi, ("x", "y", "z", "intensity"), frame_id="lidar"), args.repeats)
    t_peer = _time(lambda: naive_encode(xyzi), max(1, args.repeats // 3))
    rows.append({"op": "encode (N,4) float32 -> PointCloud2", "points": int(pts.shape[0]), "ours_ms": t_ours,
                 "peer": "per-point struct.pack", "peer_ms": t_peer, "speedup": t_peer / t_ours})
    print(f"{'op':<38} {'points':>7} {'ours ms':>8} {'peer':<24} {'peer ms':>8} {'speedup':>8}")
    for r in rows:
        print(f"{r['op']:<38} {r['points']:>7} {r['ours_ms']:>8.2f} {r['peer']:<24} {r['peer_ms']:>8.1f} {r['speedup']:>7.0f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"benchmark": "ros_conversions", "results": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
