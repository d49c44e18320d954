"""Benchmark: per-frame latency of the running lidar_openvocab_node vs the bare Pipeline, and a BEV PNG.

    python bench/ros_node.py [--frames 10] [--encoder pointnet2-xs-v1] [--camera]
                             [--checkpoint DIR --clip-model NAME --clip-weights FILE]
                             [--png docs/img/ros_bev.png] [--json out.json]

The node runs in this process on real rclpy (DDS on localhost). A probe node publishes
nuScenes-sized synthetic sweeps (clip2_core.datasets.synth.sweep.make_sweep, ~32k points) one at a
time and waits for each frame's JSON document: "end-to-end" is publish -> JSON received
(PointCloud2 transport, decoding, the pipeline, building and publishing every output). The peer is
``Pipeline.process`` on the same frames, called directly (the offline evaluator's path),
interleaved frame by frame with the node's. The adapter's own cost is also read from the node's
per-stage timings of the same frames (decode + cameras + publish), which is robust to machine load.

Without --checkpoint, the encoder is ``--encoder`` with random weights (the same compute as a
trained one) and CLIP is a tiny random open_clip model: timings are real, labels are not.
The PNG is drawn with clip2_core.viz.save_bev_png from the MarkerArray the node published.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

VOCAB = ["car", "truck", "pedestrian", "bicycle", "traffic cone", "pole"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--encoder", default="pointnet2-xs-v1", help="bundled encoder config (random weights)")
    ap.add_argument("--checkpoint", default=None, help="a trained clip2 checkpoint instead")
    ap.add_argument("--clip-model", default="", help="with --checkpoint: CLIP architecture ('' = the checkpoint's)")
    ap.add_argument("--clip-weights", default="", help="with --checkpoint: CLIP weights ('' = the checkpoint's)")
    ap.add_argument("--clip-config", default="", help="with --checkpoint: extra open_clip architecture JSON")
    ap.add_argument("--title", default=None, help="PNG title (default: says which model drew it)")
    ap.add_argument("--backend", default="auto", choices=["auto", "tensorrt", "onnxruntime", "torch"])
    ap.add_argument("--camera", action="store_true", help="add a synthetic front camera (ensemble on)")
    ap.add_argument("--png", type=Path, default=None, help="write a BEV PNG of the last frame's MarkerArray")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from clip2_ros.soak import random_timing_model


    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 100 + 1))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from std_msgs.msg import String
    from visualization_msgs.msg import MarkerArray

    from clip2_core.datasets.synth.sweep import make_sweep
    from clip2_core.pipeline import Pipeline, PipelineConfig
    from clip2_core.types import CameraView, Frame
    from clip2_ros import params as P
    from clip2_ros.conversions import (
        array_to_pointcloud2,
        make_camera_info,
        pointcloud2_to_structured,
        rgb_to_image,
        seconds_to_stamp,
    )
    from clip2_ros.markers import markers_to_boxes
    from clip2_ros.node import LidarOpenVocabNode, sensor_qos

    tmp = Path(tempfile.mkdtemp(prefix="clip2_bench_ros_"))
    model = {"model.checkpoint": args.checkpoint, "clip.model": args.clip_model, "clip.weights": args.clip_weights,
             "clip.model_config_file": args.clip_config} if args.checkpoint else random_timing_model(tmp, args.encoder)
    model["model.backend"] = args.backend
    K = np.array([[400.0, 0, 320], [0, 400.0, 180], [0, 0, 1]])
    T = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)  # x forward -> optical
    overrides = {**model, "lidar.topic": "/bench/points", "vocabulary": VOCAB, "unknown_threshold": 0.0,
                 "cameras.enabled": bool(args.camera), "ensemble": bool(args.camera),
                 "cameras.names": ["CAM_FRONT"], "cameras.CAM_FRONT.image_topic": "/bench/image",
                 "cameras.CAM_FRONT.compressed": False, "cameras.CAM_FRONT.camera_info_topic": "/bench/info",
                 "cameras.CAM_FRONT.T_lidar_to_cam": T.reshape(-1).tolist()}

    rgb = np.zeros((360, 640, 3), dtype=np.uint8)
    rgb[:180] = (120, 160, 220)
    rgb[180:] = (70, 70, 70)
    rclpy.init()
    node = LidarOpenVocabNode(parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
    probe = Node("clip2_bench_probe")
    pub = probe.create_publisher(PointCloud2, "/bench/points", 1)
    pub_img = probe.create_publisher(Image, "/bench/image", 2)
    pub_info = probe.create_publisher(CameraInfo, "/bench/info", 2)
    got = {}
    markers = {}
    lock = threading.Lock()

    def on_json(msg):
        d = json.loads(msg.data)
        with lock:
            got[round(d["stamp"], 6)] = (time.perf_counter(), d)

    def on_markers(msg):
        s = msg.markers[0].header.stamp
        with lock:
            markers[round(s.sec + 1e-9 * s.nanosec, 6)] = msg

    probe.create_subscription(String, "/lidar_openvocab_node/detections/json", on_json, 20)
    probe.create_subscription(MarkerArray, "/lidar_openvocab_node/detections/markers", on_markers, 20)
    clouds = {}

    def on_points(msg):
        s = msg.header.stamp
        with lock:
            clouds[round(s.sec + 1e-9 * s.nanosec, 6)] = pointcloud2_to_structured(msg).copy()

    probe.create_subscription(PointCloud2, "/lidar_openvocab_node/detections/points", on_points, sensor_qos(2))
    ex = MultiThreadedExecutor(num_threads=4)
    ex.add_node(node)
    ex.add_node(probe)
    th = threading.Thread(target=ex.spin, daemon=True)
    th.start()

    # the peer: Pipeline.process on the same frames without ROS, interleaved with the node's
    # frames so that load on the machine affects both alike
    pipe = Pipeline(PipelineConfig.from_dict(P.pipeline_dict(P.unflatten({
        **P.flatten(P.load_param_file(P.default_param_file())), **overrides}))))
    scenes = [make_sweep(seed) for seed in range(args.frames + 1)]
    e2e, node_total, direct, stages = [], [], [], []
    for i, scene in enumerate(scenes):
        stamp = 1000.0 + i
        frame = Frame(points=scene.points[:, :4], point_fields=("x", "y", "z", "intensity"), stamp=stamp)
        if args.camera:
            frame.cameras = {"CAM_FRONT": CameraView("CAM_FRONT", K, T, (640, 360), image=rgb, stamp=stamp)}
        t0 = time.perf_counter()
        pipe.process(frame)
        t_direct = (time.perf_counter() - t0) * 1e3
        msg = array_to_pointcloud2(scene.points, ("x", "y", "z", "intensity", "ring"), "lidar",
                                   seconds_to_stamp(stamp), dtypes={"ring": np.uint16})
        key = round(stamp, 6)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if args.camera:
                pub_info.publish(make_camera_info(K, (640, 360), "cam", seconds_to_stamp(stamp)))
                pub_img.publish(rgb_to_image(rgb, "rgb8", "cam", seconds_to_stamp(stamp)))
            t_pub = time.perf_counter()
            pub.publish(msg)
            sent = time.monotonic()
            while key not in got and time.monotonic() - sent < 10:
                time.sleep(0.002)
            if key in got:
                break
        t_recv, doc = got[key]
        if i > 0:  # frame 0 warms up (first allocations, DDS matching)
            e2e.append((t_recv - t_pub) * 1e3)
            node_total.append(doc["timings_ms"]["total"])
            stages.append(doc["timings_ms"])
            direct.append(t_direct)

    last = scenes[-1]
    last_key = round(1000.0 + len(scenes) - 1, 6)
    deadline = time.monotonic() + 10  # markers and points come on their own topics, maybe after the JSON
    while time.monotonic() < deadline and (last_key not in markers or last_key not in clouds):
        time.sleep(0.01)
    with lock:
        last_doc = got[round(1000.0 + len(scenes) - 1, 6)][1]
        last_markers = markers.get(round(1000.0 + len(scenes) - 1, 6))
        last_cloud = clouds.get(round(1000.0 + len(scenes) - 1, 6))
    row = {
        "frames": len(e2e), "points": int(np.median([s.points.shape[0] for s in scenes])),
        "encoder": args.checkpoint or f"{args.encoder} (random weights)", "camera": bool(args.camera),
        "node_end_to_end_ms": statistics.median(e2e), "node_reported_total_ms": statistics.median(node_total),
        "pipeline_direct_ms": statistics.median(direct),
        "detections_last_frame": len(last_doc["detections"]),
        # medians over frames of the node's own per-stage timings (one frame, one clock)
        "node_stage_ms": {k: statistics.median(st[k] for st in stages) for k in stages[0]},
        "adapter_ms": statistics.median(st["decode"] + st["cameras"] + st["publish"] for st in stages),
        "cpu_threads": os.cpu_count(),
    }
    row["adapter_share_of_node_total"] = row["adapter_ms"] / row["node_reported_total_ms"]
    row["ratio_end_to_end_vs_direct"] = row["node_end_to_end_ms"] / row["pipeline_direct_ms"]
    print(json.dumps(row, indent=1))
    if args.png and last_markers is not None:
        from clip2_core.viz import save_bev_png

        boxes, labels, scores = markers_to_boxes(last_markers)
        title = args.title or "lidar_openvocab_node: ~/detections/markers (boxes, colour per label), GT dashed"
        if not args.checkpoint and args.title is None:
            title += "\n(random-weight encoder: labels are placeholders)"
        pts, cl = last.points[:, :3], np.full(last.points.shape[0], -1)
        if last_cloud is not None and last_cloud.shape[0]:  # ~/detections/points: colour by cluster
            det = np.stack([last_cloud["x"], last_cloud["y"], last_cloud["z"]], axis=1)
            pts, cl = np.vstack([pts, det]), np.concatenate([cl, last_cloud["cluster_id"]])
        save_bev_png(args.png, pts, boxes=boxes, box_labels=labels,
                     gt_boxes=last.boxes, cluster_labels=cl, extent=40.0, title=title)
        print(f"wrote {args.png}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"benchmark": "ros_node", "results": [row]}, indent=1))
    ex.shutdown(timeout_sec=5)
    node.destroy_node()
    probe.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
