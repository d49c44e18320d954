"""The replay evaluation's report: report.json, report.md and pictures (see docs/replay.md).

PNGs: ``bev_<scene>.png`` (the keyframe with the most annotated objects: its sweep, ground truth
dashed, the node's detections labelled), ``confusion.png`` (ground-truth class x predicted label
on matched objects) and ``latency.png`` (per result, the node's time and end to end, over the run).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np


def _fmt(v: Any, pct: bool = False, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if pct:
        return f"{100 * float(v):.1f}%"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def headline(report: Mapping[str, Any]) -> Dict[str, Any]:
    """The short table: mAP, NDS, recall, false-alarm rate, label accuracy, p50/p99 latency, frames."""
    ov = report["open_vocab"]
    dk = report["devkit"]
    return {
        "mAP (devkit)": dk.get("mean_ap"), "NDS (devkit)": dk.get("nd_score"),
        "recall@1m": ov["at"]["1m"]["recall"], "recall@2m": ov["at"]["2m"]["recall"],
        "false-alarm rate@1m": ov["at"]["1m"]["false_alarm_rate"], "label accuracy": ov["label_accuracy"],
        "latency p50 [ms]": report["latency_node_ms"]["p50"], "latency p99 [ms]": report["latency_node_ms"]["p99"],
        "end-to-end p50 [ms]": report["latency_end_to_end_ms"]["p50"],
        "end-to-end p99 [ms]": report["latency_end_to_end_ms"]["p99"],
        "sweeps processed": f"{report['transport']['processed']}/{report['transport']['played']}",
    }


_PERCENT_ROWS = {"recall@1m", "recall@2m", "false-alarm rate@1m", "label accuracy"}


def headline_text(report: Mapping[str, Any]) -> Dict[str, str]:
    """:func:`headline` with each value formatted (percentages, ms to 0.1, the rest to 0.001)."""
    return {k: v if isinstance(v, str) else _fmt(v, pct=k in _PERCENT_ROWS, digits=1 if "ms" in k else 3)
            for k, v in headline(report).items()}


def headline_lines(report: Mapping[str, Any]) -> List[str]:
    rows = headline_text(report)
    width = max(len(k) for k in rows)
    return [f"  {k:<{width}}  {v}" for k, v in rows.items()]


def markdown(report: Mapping[str, Any], pictures: Mapping[str, str]) -> str:
    ov, dk, tr = report["open_vocab"], report["devkit"], report["transport"]
    ident = report.get("identity", {})
    lines = [f"# Replay evaluation: {', '.join(report['scenes'])} ({report['dataset_version']})", ""]
    if ident.get("random_clip"):
        lines += ["> **CLIP weights are RANDOM: labels only reflect what the encoder was trained on; these are not "
                  "zero-shot results.**", ""]
    lines += [f"Bag `{report['bag']}` played at rate {report['rate']} through the live node "
              f"(encoder {ident.get('encoder', '?')} on {ident.get('backend', '?')}; "
              f"CLIP {(ident.get('clip') or {}).get('model', '?')}). Vocabulary: {report.get('vocabulary')}.", ""]
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in headline_text(report).items()]
    lines += ["", "## Sweeps", "",
              f"played {tr['played']}, received by the node {tr['received']}, processed {tr['processed']}, "
              f"lost in transport {tr['lost_in_transport']}, replaced while the node was busy {tr['skipped_while_busy']} "
              f"(the node keeps only the newest sweep). Keyframes with results: {ov['keyframes_processed']}/{ov['keyframes']}; "
              "a keyframe without results is scored as no detections.", ""]
    lines += ["## Open-vocabulary metrics", "",
              f"Objects with >= {ov['min_points']} LiDAR points; one-to-one matching by bird's-eye centre distance "
              "(docs/replay.md).", "",
              "| threshold | objects | found | recall | detections | false alarms | duplicates | false-alarm rate |",
              "|---|---|---|---|---|---|---|---|"]
    for d, m in ov["at"].items():
        lines.append(f"| {d} | {m['objects']} | {m['found']} | {_fmt(m['recall'], True)} | {m['detections']} | "
                     f"{m['false_alarms']} | {m['duplicates']} | {_fmt(m['false_alarm_rate'], True)} |")
    curve = ov.get("score_curve") or []
    if curve:
        op = ov.get("operating_point_10pct")
        lines += ["", "Recall against false alarms at 1 m if the node dropped detections scoring below a threshold "
                  "(`score_threshold`; the node ran with its configured one): "
                  + ", ".join(f"{p['threshold']:.2f}: {_fmt(p['recall'], True)} / {_fmt(p['false_alarm_rate'], True)}"
                              for p in curve[::2]) + ". "
                  + (f"Best recall at <= 10% false alarms: {_fmt(op['recall'], True)} (threshold {op['threshold']:.2f})."
                     if op else "No threshold reaches <= 10% false alarms.")]
    lines += ["", f"Label accuracy (matched at {ov['label_threshold_m']:g} m): {_fmt(ov['label_accuracy'], True)} of "
              f"{ov['labelled_objects']}; `unknown` detections: {ov['unknown']['detections']} "
              f"({ov['unknown']['on_objects']} on objects, {ov['unknown']['on_long_tail_objects']} on long-tail objects).", "",
              "| class | objects | recall@1m | label accuracy |", "|---|---|---|---|"]
    for c, m in ov["per_class"].items():
        lines.append(f"| {c} | {m['objects']} | {_fmt(m['recall'], True)} | {_fmt(m['label_accuracy'], True)} |")
    if ov.get("by_range"):
        lines += ["", "Recall@1m by range from the sensor: " + ", ".join(
            f"{k} {_fmt(v['recall'], True)} ({v['found']}/{v['objects']})" for k, v in ov["by_range"].items()) + "."]
    lines += ["", "## nuScenes detection metrics (nuscenes-devkit DetectionEval)", ""]
    if "skipped" in dk:
        lines.append(f"Skipped: {dk['skipped']}")
    elif "empty" in dk:
        lines.append(dk["empty"] + ".")
    else:
        lines += [f"Config `{dk.get('eval_config')}`; submission `{dk.get('submission')}`. mAP {_fmt(dk['mean_ap'])}, "
                  f"NDS {_fmt(dk['nd_score'])}. Velocity and attributes are not estimated (velocity 0, each class's "
                  "default attribute), so mAVE and mAAE are those of a static guess.", "",
                  "| class | AP@0.5 | AP@1 | AP@2 | AP@4 | AP |", "|---|---|---|---|---|---|"]
        for c, aps in dk["label_aps"].items():
            vals = [aps.get(k, aps.get(float(k))) for k in ("0.5", "1.0", "2.0", "4.0")]
            lines.append(f"| {c} | " + " | ".join(_fmt(v) for v in vals) + f" | {_fmt(dk['mean_dist_aps'][c])} |")
        lines += ["", "TP errors: " + ", ".join(f"{k} {_fmt(v)}" for k, v in dk["tp_errors"].items())]
    lat, e2e = report["latency_node_ms"], report["latency_end_to_end_ms"]
    lines += ["", "## Latency and resources", "",
              "| | n | p50 | p95 | p99 | max |", "|---|---|---|---|---|---|",
              f"| node: sweep taken -> outputs published [ms] | {lat['n']} | {_fmt(lat['p50'], digits=1)} | "
              f"{_fmt(lat['p95'], digits=1)} | {_fmt(lat['p99'], digits=1)} | {_fmt(lat['max'], digits=1)} |",
              f"| end to end: player publish -> result received [ms] | {e2e['n']} | {_fmt(e2e['p50'], digits=1)} | "
              f"{_fmt(e2e['p95'], digits=1)} | {_fmt(e2e['p99'], digits=1)} | {_fmt(e2e['max'], digits=1)} |", "",
              "Stage medians [ms]: " + ", ".join(f"{k} {v:.1f}" for k, v in report["stage_median_ms"].items()), ""]
    lines += ["| scene | played | processed | CPU cores (mean) | RSS peak [MiB] | node start [s] |", "|---|---|---|---|---|---|"]
    for s, p in report["per_scene"].items():
        r = p["resources"]
        lines.append(f"| {s} | {p['transport']['played']} | {p['transport']['processed']} | "
                     f"{_fmt(r.get('cpu_cores_mean'), digits=2)} | {_fmt(r.get('rss_mb_peak'), digits=0)} | {p['startup_seconds']} |")
    if "offline_check" in report:
        oc = report["offline_check"]
        lines += ["", f"Online == offline: {oc['frames_identical']}/{oc['frames_checked']} frames give the same detections "
                  "through the node and through `Pipeline` directly."]
    if pictures:
        lines += ["", "## Pictures", ""] + [f"![{k}]({Path(v).name})" for k, v in pictures.items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- pictures
def _sweep_points(bag: Path, topic: str, stamp_ns: int) -> Optional[np.ndarray]:
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader
    from sensor_msgs.msg import PointCloud2

    from clip2_ros.conversions import pointcloud2_to_array

    with Reader(bag) as r:
        conns = [c for c in r.connections if c.topic == topic]
        for _, t, raw in r.messages(connections=conns, start=stamp_ns, stop=stamp_ns + 1):
            pts, _ = pointcloud2_to_array(deserialize_message(bytes(raw), PointCloud2))
            return pts
    return None


def bev_picture(path: Path, scene, frames, ident: Mapping[str, Any]) -> Optional[Path]:
    from clip2_core.viz import save_bev_png

    processed = [(i, f) for i, f in enumerate(frames) if f.processed]
    if not processed:
        return None
    i, f = max(processed, key=lambda it: int((it[1].gt_points >= 10).sum()))
    kf = scene.gt["keyframes"][i]
    pts = _sweep_points(scene.bag, scene.params["lidar"]["topic"], int(kf["stamp_ns"]))
    if pts is None:
        return None
    rnd = " (RANDOM CLIP)" if ident.get("random_clip") else ""
    return save_bev_png(path, pts, boxes=f.det_boxes, box_labels=[f"{l} {s:.2f}" for l, s in zip(f.det_labels, f.det_scores)],
                        gt_boxes=f.gt_boxes[f.gt_points >= 1], extent=50.0,
                        title=f"{scene.scene} keyframe {i}: {len(f.det_boxes)} detections, dashed = GT{rnd}")


def latency_picture(path: Path, records) -> Optional[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from clip2_ros.replay import latencies

    fig, ax = plt.subplots(figsize=(8, 3.2))
    any_data = False
    offset = 0.0
    for r in records:
        lat = latencies(r)
        if not lat["t_s"]:
            continue
        t = np.asarray(lat["t_s"]) + offset
        ax.plot(t, lat["end_to_end_ms"], ".", ms=3, label=f"{r.scene} end to end")
        ax.plot(t, lat["node_ms"], ".", ms=3, label=f"{r.scene} node")
        offset = float(t.max()) + 1.0
        any_data = True
    if not any_data:
        plt.close(fig)
        return None
    ax.axhline(50.0, color="grey", lw=0.8, ls="--")
    ax.text(0, 51, "LiDAR period (50 ms)", fontsize=7, color="grey")
    ax.set_xlabel("time in the replay [s]")
    ax.set_ylabel("latency [ms]")
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title("latency per result")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def score_curve_picture(path: Path, curve) -> Optional[Path]:
    """Recall@1m against the false-alarm rate over score thresholds (the precision/recall trade)."""
    if not curve:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fa = [100 * p["false_alarm_rate"] for p in curve]
    rec = [100 * p["recall"] for p in curve]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(fa, rec, "o-", ms=3)
    for p, x, y in zip(curve, fa, rec):
        if round(p["threshold"] * 20) % 4 == 0:
            ax.annotate(f"{p['threshold']:.1f}", (x, y), fontsize=7, textcoords="offset points", xytext=(3, 3))
    ax.axvline(10.0, color="grey", lw=0.8, ls="--")
    ax.axhline(85.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("false-alarm rate [%] (published, matching no object at 1 m)")
    ax.set_ylabel("recall@1m [%] (objects >= min points)")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_title("score threshold sweep (labels: threshold)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def write_report(report: Dict[str, Any], out: Path, scenes, records, frames) -> Dict[str, str]:
    """report.json, report.md and the PNGs in ``out``; returns {name: path} of the pictures."""
    from clip2_core.eval.detection import confusion_matrix
    from clip2_core.viz import save_confusion_png

    out = Path(out)
    pictures: Dict[str, str] = {}
    k = 0
    for s in scenes:
        n = len(s.gt["keyframes"])
        p = bev_picture(out / f"bev_{s.scene}.png", s, frames[k:k + n], report.get("identity", {}))
        k += n
        if p is not None:
            pictures[f"bird's-eye view {s.scene}"] = str(p)
    conf = report["open_vocab"]["confusion"]
    if conf:
        m, rows, cols = confusion_matrix(conf)
        pictures["confusion"] = str(save_confusion_png(out / "confusion.png", m, rows, "matched objects", cols=cols))
    p = score_curve_picture(out / "score_curve.png", report["open_vocab"].get("score_curve") or [])
    if p is not None:
        pictures["recall vs false alarms"] = str(p)
    p = latency_picture(out / "latency.png", records)
    if p is not None:
        pictures["latency"] = str(p)
    report["pictures"] = pictures
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    (out / "report.md").write_text(markdown(report, pictures))
    return pictures
