"""``clip2 demo``: the main job on built-in sample data (what ``make demo`` runs).

1. Ground removal + clustering on the real KITTI sample frame and on a synthetic 32-beam sweep:
   a table per sweep and bird's-eye PNGs.
2. Recognition: the full pipeline (clusters -> point encoder -> CLIP text bank -> labels) on a
   held-out synthetic sweep, with an encoder that clip2's own trainer trains here in about a
   minute on other synthetic sweeps (cached in ``--out``/model). No CLIP weights ship with clip2,
   so the CLIP is a tiny RANDOM one: the labels come from that training, not from zero-shot CLIP.
   Pass ``--checkpoint`` (and CLIP weights recorded in it) to run a real model instead.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path



def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the main job on built-in sample data and write pictures", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder (PNGs, JSON)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic sweep")
    p.add_argument("--no-recognition", action="store_true", help="only the clustering part")
    p.add_argument("--checkpoint", type=Path, default=None, help="a trained clip2 checkpoint to use instead of the demo model")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from clip2_core.data import sample_frame_dir
    from clip2_core.datasets.synth.sweep import make_sweep
    from clip2_core.geometry import points_in_boxes
    from clip2_core.segmentation import Segmenter
    from clip2_core.viz import save_bev_png

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    seg = Segmenter()
    sweeps = []
    sample = sample_frame_dir("kitti_000008")  # package data: works from an installed package
    gt = json.loads((sample / "gt.json").read_text())["boxes_3d"]
    gt_boxes = np.array([g["center"] + g["size_lwh"] + [g["yaw"]] for g in gt])
    sweeps.append(("kitti_000008", np.load(sample / "points.npy"), gt_boxes, None))
    scene = make_sweep(args.seed)
    seen = points_in_boxes(scene.points, scene.boxes).sum(axis=0) >= 20
    sweeps.append((f"synthetic_seed{args.seed}", scene.points, scene.boxes[seen], 50.0))
    summary = {}
    for name, points, gt_boxes, extent in sweeps:
        res = seg.segment(points)
        centres = np.array([c.box.center for c in res.clusters]).reshape(-1, 3)
        hits = 0
        for b in gt_boxes:
            if len(centres) and np.min(np.linalg.norm(centres[:, :2] - b[:2], axis=1)) <= 1.0:
                hits += 1
        recall = hits / max(len(gt_boxes), 1)
        png = save_bev_png(
            out / f"{name}_bev.png",
            points,
            boxes=np.array([c.box.as_array() for c in res.clusters]).reshape(-1, 7),
            box_labels=[f"#{c.cluster_id}" for c in res.clusters],
            gt_boxes=gt_boxes,
            ground_mask=res.ground_mask,
            cluster_labels=res.labels,
            extent=extent,
            title=f"{name}: {len(res.clusters)} clusters, GT recall@1m {hits}/{len(gt_boxes)} (dashed = GT)",
        )
        t = res.timings_ms
        print(
            f"{name:<20} {points.shape[0]:>6} points  {int(res.ground_mask.sum()):>6} ground  {len(res.clusters):>3} clusters  "
            f"GT recall@1m {hits}/{len(gt_boxes)}  ground {t['ground']:.1f} ms  cluster {t['cluster']:.1f} ms  -> {png}"
        )
        summary[name] = {"points": int(points.shape[0]), "clusters": len(res.clusters), "gt_recall_1m": recall, "timings_ms": t}
    if not args.no_recognition:
        summary["recognition"] = _recognition(out, scene, args)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {out / 'summary.json'}")
    return 0


def _recognition(out: Path, scene, args) -> dict:
    import numpy as np

    from clip2_core.geometry import points_in_boxes
    from clip2_core.pipeline import Pipeline, PipelineConfig
    from clip2_core.types import Frame
    from clip2_core.viz import save_bev_png

    if args.checkpoint is not None:
        cfg = {"model": {"checkpoint": str(args.checkpoint)}}
        note = f"model {args.checkpoint}"
    else:
        from clip2_core.cli.demo_model import DEMO_CLIP_NAME, build_random_clip, train_sweep_model

        mdir = out / "model"
        cfg_file, weights = build_random_clip(mdir / "clip")
        last = mdir / "run" / "last.json"
        if last.is_file() and (mdir / "run" / json.loads(last.read_text())["checkpoint"] / "model.safetensors").is_file():
            ckpt = mdir / "run" / json.loads(last.read_text())["checkpoint"]
            print(f"recognition: reusing the demo model in {ckpt}")
        else:
            print("recognition: training a small demo encoder on synthetic sweeps (about a minute; cached for next time) ...")
            ckpt = Path(train_sweep_model(mdir, DEMO_CLIP_NAME, weights, cfg_file, encoder="pointnet2-xs-v1", steps=300,
                                          templates=["{}"], progress=True)["checkpoint"])
        cfg = {"model": {"checkpoint": str(ckpt), "backend": "auto"},
               "clip": {"model": DEMO_CLIP_NAME, "weights": str(weights), "model_config_file": str(cfg_file),
                        "allow_random": True}}  # the demo's own random CLIP, said on every line below
        note = "demo encoder trained here on synthetic sweeps; CLIP has RANDOM weights (labels are not zero-shot results)"
    from clip2_core.checkpoint import read_checkpoint_config

    vocab = read_checkpoint_config(cfg["model"]["checkpoint"]).get("vocabulary")
    if vocab:
        cfg["vocabulary"] = vocab
    pipe = Pipeline(PipelineConfig.from_dict(cfg))
    frame = Frame(points=scene.points, point_fields=("x", "y", "z", "intensity", "ring"))
    res = pipe.process(frame)
    dets = res.detections
    seen = points_in_boxes(scene.points, scene.boxes).sum(axis=0) >= 20
    centres = np.array([d.box.center for d in dets]).reshape(-1, 3)
    hits, correct = 0, 0
    for j in np.flatnonzero(seen):
        if len(centres):
            d = np.linalg.norm(centres[:, :2] - scene.boxes[j, :2], axis=1)
            k = int(np.argmin(d))
            if d[k] <= 1.0:
                hits += 1
                correct += dets[k].label == scene.names[j].replace("_", " ")
    print(f"recognition on a held-out synthetic sweep ({note}):")
    print(f"  {len(dets)} detections in {res.timings_ms['total']:.0f} ms "
          f"(encoder {res.timings_ms.get('encoder', 0):.0f} ms on {pipe.embedder.name}); "
          f"{hits}/{int(seen.sum())} GT objects found, {correct}/{hits} labelled right")
    for d in sorted(dets, key=lambda d: float(np.hypot(*d.box.center[:2])))[:12]:
        print(f"  {d.label:<14} {d.score:5.2f}  {d.num_points:5d} pts  at {np.hypot(*d.box.center[:2]):5.1f} m")
    png = save_bev_png(out / "recognition_bev.png", scene.points, boxes=np.array([d.box.as_array() for d in dets]).reshape(-1, 7),
                       box_labels=[f"{d.label} {d.score:.2f}" for d in dets], gt_boxes=scene.boxes[seen],
                       ground_mask=res.segmentation.ground_mask, extent=45.0,
                       title=f"recognition: {correct}/{hits} right (dashed = GT). {note[:60]}")
    print(f"  -> {png}")
    return {"detections": len(dets), "gt_found": hits, "gt_visible": int(seen.sum()), "labelled_right": correct,
            "note": note, "timings_ms": res.timings_ms}
