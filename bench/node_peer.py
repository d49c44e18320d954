"""Benchmark: the node's per-sweep work against a peer built from off-the-shelf parts.

    python bench/node_peer.py [--sweeps 20] [--encoder pointnet2-xs-v1] [--repeats 3] [--json out.json]

Both sides take the same nuScenes-sized synthetic sweeps (``make_sweep``, ~32k points) and end
with what the node publishes for rviz and consumers: a MarkerArray, the labelled PointCloud2 and
the JSON document. Same encoder weights (``--encoder`` with random weights, tiny random CLIP:
timings are real, labels are not), same threads (2), one process, no DDS.

* **ours**: ``Pipeline.process`` (ground removal + clustering kernels, vectorised crop
  normalisation, the encoder on ``backend: auto`` = ONNX Runtime here) + the node's output
  builders (``detections_to_markers``, ``labelled_cloud``, ``detections_to_json``).
* **peer**: scikit-learn ``RANSACRegressor`` ground plane, scikit-learn ``DBSCAN`` (our cluster
  tolerance, min/max points), per-object Python crop sampling and centring, the PyTorch eager
  encoder, cosine against the same text bank, and per-object Python message building (a CUBE
  and a TEXT marker per object, a per-object dict for JSON, the labelled cloud stacked per object).

Reports per-sweep medians (ms) of each side and of their stages, and the ratio peer / ours; the
peer encodes more clusters (it has no background or shape filters), so a second ratio scales its
encoder time to our cluster count.
Results go into BENCHMARKS.md ("Issue 14: against an off-the-shelf peer").
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

VOCAB = ["car", "truck", "pedestrian", "bicycle", "traffic cone", "pole"]


class Peer:
    """sklearn RANSAC ground + sklearn DBSCAN + per-object Python + PyTorch eager."""

    def __init__(self, encoder, text_bank: np.ndarray, seg_cfg, num_points: int):
        self.encoder = encoder
        self.bank = text_bank
        self.tol = float(seg_cfg.cluster.tolerance)
        self.min_points = int(seg_cfg.cluster.min_points)
        self.max_points = int(seg_cfg.cluster.max_points)
        self.max_range = float(seg_cfg.cluster.max_range)
        self.num_points = num_points
        self.rng = np.random.default_rng(0)

    def process(self, pts: np.ndarray, stamp):
        import torch
        from sklearn.cluster import DBSCAN
        from sklearn.linear_model import RANSACRegressor

        t = {}
        t0 = time.perf_counter()
        r = np.hypot(pts[:, 0], pts[:, 1])
        pts = pts[r < self.max_range]
        near = pts[np.hypot(pts[:, 0], pts[:, 1]) < 40.0]
        ransac = RANSACRegressor(residual_threshold=0.2, max_trials=100, random_state=0).fit(near[:, :2], near[:, 2])
        above = pts[:, 2] - ransac.predict(pts[:, :2]) > 0.2
        obj = pts[above]
        t["ground"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        labels = DBSCAN(eps=self.tol, min_samples=1).fit_predict(obj[:, :3])
        clusters = []
        for k in np.unique(labels):
            members = obj[labels == k]
            if self.min_points <= len(members) <= self.max_points:
                clusters.append(members)
        t["cluster"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        batch = []
        for c in clusters:  # per-object sampling and centring, as a plain script does it
            idx = self.rng.choice(len(c), self.num_points, replace=len(c) < self.num_points)
            s = c[idx].copy()
            centre = (s[:, :3].max(0) + s[:, :3].min(0)) / 2
            s[:, :3] -= centre
            s[:, 3] = s[:, 3] / 255.0
            batch.append(s[:, :4])
        t["normalise"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if batch:
            with torch.no_grad():
                emb = self.encoder(torch.from_numpy(np.stack(batch).astype(np.float32))).numpy()
        else:
            emb = np.zeros((0, self.bank.shape[1]), np.float32)
        t["encoder"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        emb /= np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-12)
        logits = emb @ self.bank.T * 100.0
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        dets = [{"label": VOCAB[int(i)], "score": float(pr[i]), "min": c[:, :3].min(0), "max": c[:, :3].max(0)}
                for c, pr, i in zip(clusters, p, p.argmax(1) if len(p) else [])]
        t["classify"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.messages(dets, clusters, stamp)
        t["publish"] = time.perf_counter() - t0
        return dets, t

    @staticmethod
    def messages(dets, clusters, stamp):
        from geometry_msgs.msg import Point
        from visualization_msgs.msg import Marker, MarkerArray

        from clip2_ros.conversions import array_to_pointcloud2

        arr = MarkerArray()
        for i, d in enumerate(dets):
            centre, size = (d["max"] + d["min"]) / 2, d["max"] - d["min"]
            box = Marker(type=Marker.CUBE, action=Marker.ADD, id=2 * i, ns="clip2")
            box.header.frame_id, box.header.stamp = "lidar", stamp
            box.pose.position = Point(x=float(centre[0]), y=float(centre[1]), z=float(centre[2]))
            box.scale.x, box.scale.y, box.scale.z = (float(v) for v in np.maximum(size, 0.05))
            box.color.r, box.color.a = 1.0, 0.5
            text = Marker(type=Marker.TEXT_VIEW_FACING, action=Marker.ADD, id=2 * i + 1, ns="clip2", text=d["label"])
            text.header = box.header
            text.pose.position = Point(x=float(centre[0]), y=float(centre[1]), z=float(d["max"][2] + 0.5))
            text.scale.z, text.color.a = 0.6, 1.0
            arr.markers += [box, text]
        doc = json.dumps({"detections": [{"label": d["label"], "score": d["score"],
                                          "box": {"center": ((d["max"] + d["min"]) / 2).tolist(),
                                                  "size": (d["max"] - d["min"]).tolist()}} for d in dets]})
        rows = [np.column_stack([c[:, :4], np.full(len(c), i, np.float32)]) for i, c in enumerate(clusters)]
        cloud = array_to_pointcloud2(np.concatenate(rows) if rows else np.zeros((0, 5), np.float32),
                                     ("x", "y", "z", "intensity", "label"), frame_id="lidar", stamp=stamp)
        return arr, doc, cloud


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweeps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3, help="passes over the sweeps (the first is warm-up)")
    ap.add_argument("--encoder", default="pointnet2-xs-v1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch

    from clip2_core.datasets.synth.sweep import make_sweep
    from clip2_core.encoders import load_encoder
    from clip2_core.frames import frame_from_arrays
    from clip2_core.pipeline import Pipeline, PipelineConfig
    from clip2_ros import params as P
    from clip2_ros.conversions import seconds_to_stamp
    from clip2_ros.markers import detections_to_json, detections_to_markers, labelled_cloud
    from clip2_ros.soak import random_timing_model

    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    flat = random_timing_model(Path(tmp.name), args.encoder)
    flat.update({"vocabulary": VOCAB, "model.backend": "auto", "model.num_threads": args.threads})
    pipe = Pipeline(PipelineConfig.from_dict(P.unflatten(flat)))
    pipe.warm_up()
    model, _ = load_encoder(flat["model.checkpoint"])
    bank = np.asarray(pipe.recognizer.state.bank.embeddings[: len(VOCAB)], np.float32)
    peer = Peer(model, bank, pipe.config.segmentation, model.config.normalization.num_points)
    sweeps = [make_sweep(seed) for seed in range(args.sweeps)]

    ours_ms, peer_ms, peer_adj_ms, ours_st, peer_st, n_ours, n_peer = [], [], [], {}, {}, [], []
    for rep in range(args.repeats):
        for i, sc in enumerate(sweeps):
            stamp = seconds_to_stamp(100.0 + i)
            t0 = time.perf_counter()
            frame, _ = frame_from_arrays(sc.points, ("x", "y", "z", "intensity", "ring"), stamp=100.0 + i)
            res = pipe.process(frame)
            t1 = time.perf_counter()
            detections_to_markers(res.detections, frame.frame_id, stamp)
            labelled_cloud(frame.points, res.segmentation.labels, res.detections, res.vocabulary, frame.frame_id, stamp)
            detections_to_json(res.detections, frame.stamp, frame.frame_id, res.vocabulary, res.timings_ms)
            t2 = time.perf_counter()
            dets, st = peer.process(sc.points[:, :4].astype(np.float32), stamp)
            t3 = time.perf_counter()
            if rep == 0:
                continue
            ours_ms.append((t2 - t0) * 1e3)
            peer_ms.append((t3 - t2) * 1e3)
            n_ours.append(len(res.detections) + len(res.background))
            n_peer.append(len(dets))
            # the peer finds more clusters (no background / shape filters): its encoder time scaled to our count
            scale = n_ours[-1] / max(1, n_peer[-1])
            peer_adj_ms.append(peer_ms[-1] - st["encoder"] * 1e3 * (1 - scale))
            for k, v in res.timings_ms.items():
                ours_st.setdefault(k, []).append(float(v))
            ours_st.setdefault("publish", []).append((t2 - t1) * 1e3)
            for k, v in st.items():
                peer_st.setdefault(k, []).append(v * 1e3)
    med = lambda xs: round(statistics.median(xs), 2)  # noqa: E731
    row = {
        "encoder": args.encoder, "threads": args.threads, "sweeps": args.sweeps, "passes_timed": args.repeats - 1,
        "points_per_sweep": int(np.median([len(s.points) for s in sweeps])),
        "ours_backend": pipe.embedder.name, "peer_backend": "torch eager",
        "ours_ms_p50": med(ours_ms), "peer_ms_p50": med(peer_ms),
        "ours_ms_p99": round(float(np.percentile(ours_ms, 99)), 2), "peer_ms_p99": round(float(np.percentile(peer_ms, 99)), 2),
        "ratio_peer_over_ours": round(statistics.median(peer_ms) / statistics.median(ours_ms), 2),
        "ratio_same_cluster_count": round(statistics.median(peer_adj_ms) / statistics.median(ours_ms), 2),
        "clusters_encoded_ours_p50": statistics.median(n_ours), "clusters_encoded_peer_p50": statistics.median(n_peer),
        "ours_stage_ms_p50": {k: med(v) for k, v in ours_st.items()},
        "peer_stage_ms_p50": {k: med(v) for k, v in peer_st.items()},
    }
    print(json.dumps(row, indent=1))
    if args.json:
        args.json.write_text(json.dumps(row, indent=1))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
