"""Write synthetic worlds as a nuScenes dataroot (tables, LiDAR sweeps, camera JPEGs) plus a 2D detections file.

Layout of ``out`` (the *dataroot*)::

    <version>/*.json                 the 13 nuScenes tables the devkit loads
    <version>/synth_splits.json      {"train": [scene names], "val": [...]}
    <version>/synth_info.json        generator settings and timings
    <version>/detections_2d.json     simulated open-vocabulary 2D detections (docs/synthetic_world.md)
    samples/LIDAR_TOP/*.pcd.bin      keyframe sweeps, float32 (x, y, z, intensity, ring)
    sweeps/LIDAR_TOP/*.pcd.bin       the other 20 Hz sweeps
    samples/CAM_*/*.jpg              keyframe images (1600 x 900)
    maps/<token>.png                 a blank semantic-prior map (the devkit requires the file)
    synth_masks/CAM_*/*.png          with ``masks=True``: per-pixel object ids (uint16, render resolution)

Everything is a pure function of the config (seed, sizes): same seed -> byte-identical files,
whatever the number of worker processes.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from clip2_core.geometry import matrix_to_quaternion

from .detections import simulate_detections
from .sensors import (CAMERAS, CAMERA_NAMES, IMAGE_WH, LIDAR_HZ, LIDAR_ROTATION, LIDAR_TRANSLATION,
                      lidar_sweep, lidar_to_global, render_camera)
from .world import ATTRIBUTES, CATEGORY_DESCRIPTIONS, CATEGORY_OF_KIND, World, build_world

log = logging.getLogger(__name__)

KEYFRAME_EVERY = 10  # 20 Hz LiDAR, 2 Hz keyframes
VISIBILITY_LEVELS = (("1", "v0-40", 0.4), ("2", "v40-60", 0.6), ("3", "v60-80", 0.8), ("4", "v80-100", 1.01))
BASE_TIMESTAMP_US = 1_700_000_000_000_000


@dataclass
class SynthConfig:
    """What `clip2 synth` generates."""

    out: Path  # dataroot to write
    scenes: int = 1  # number of scenes
    seconds: float = 20.0  # scene length [s]; keyframes at 2 Hz from t=0
    seed: int = 0
    version: str = "v1.0-synth"
    cameras: Tuple[str, ...] = CAMERA_NAMES  # subset of the six nuScenes cameras to render
    render_scale: float = 0.25  # internal camera render resolution / 1600x900 (images are upsampled)
    jpeg_quality: int = 90
    masks: bool = False  # also write per-pixel object-id PNGs (for tests / evaluation)
    annotation_range: float = 60.0  # annotate objects within this xy distance of the ego [m]
    workers: int = 1  # processes (results do not depend on it)
    detections: bool = True  # write <version>/detections_2d.json
    overwrite: bool = False  # replace an earlier synthetic dataroot at `out`

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.cameras = tuple(self.cameras)
        unknown = [c for c in self.cameras if c not in CAMERA_NAMES]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; choose from {list(CAMERA_NAMES)}")
        if self.scenes < 1:
            raise ValueError("scenes must be >= 1")
        if self.seconds < 0.5:
            raise ValueError("seconds must be >= 0.5 (at least one keyframe interval)")
        if not 0.05 <= self.render_scale <= 1.0:
            raise ValueError("render_scale must be in [0.05, 1]")


def token(*parts) -> str:
    """Deterministic 32-hex token from its parts."""
    return hashlib.md5("/".join(str(p) for p in parts).encode()).hexdigest()


def rotation_to_quaternion(R: np.ndarray) -> List[float]:
    """(3, 3) rotation -> a nuScenes record's ``rotation``: [w, x, y, z], unit, w >= 0."""
    return [float(v) for v in matrix_to_quaternion(R, scalar_first=True)]


def points_in_box_global(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(N,) bool: points (N, 3) inside an upright box [x, y, z, l, w, h, yaw] (faces inclusive)."""
    c, s = np.cos(box[6]), np.sin(box[6])
    d = points - box[:3]
    lx = d[:, 0] * c + d[:, 1] * s
    ly = -d[:, 0] * s + d[:, 1] * c
    return (np.abs(lx) <= box[3] / 2) & (np.abs(ly) <= box[4] / 2) & (np.abs(d[:, 2]) <= box[5] / 2)


# ---------------------------------------------------------------------------------------------
# one scene's work units (run inline or in worker processes)
_W: Dict = {}


def _init_worker(world: World, cfg: SynthConfig, scene_idx: int) -> None:
    _W["world"], _W["cfg"], _W["scene"] = world, cfg, scene_idx


def _sweep_task(task: Tuple[int, float, str, bool, List[Tuple[str, float]], Dict[str, str]]) -> Dict:
    """Render sweep k (and, on keyframes, the cameras); write the files; return metadata."""
    k, t, lidar_file, is_key, cam_jobs, cam_files = task
    world: World = _W["world"]
    cfg: SynthConfig = _W["cfg"]
    from PIL import Image

    rng = np.random.default_rng([cfg.seed, _W["scene"], 1, k])
    pts = lidar_sweep(world, t, rng)
    path = cfg.out / lidar_file
    path.parent.mkdir(parents=True, exist_ok=True)
    pts.astype(np.float32).tofile(path)
    out: Dict = {"k": k, "n_points": int(pts.shape[0])}
    if not is_key:
        return out
    # ground truth at the LiDAR time: boxes, point counts
    boxes = world.object_boxes(t)
    R, tr = lidar_to_global(world, t)
    ego_xy = world.ego_pose(t)[1][:2]
    near = np.nonzero(np.linalg.norm(boxes[:, :2] - ego_xy[None], axis=1) < cfg.annotation_range)[0]
    pg = pts[:, :3].astype(np.float64) @ R.T + tr
    counts = {}
    for i in near:
        b = boxes[i]
        cand = np.nonzero(np.abs(pg[:, 0] - b[0]) + np.abs(pg[:, 1] - b[1]) < b[3] + b[4])[0]
        counts[int(i)] = int(points_in_box_global(pg[cand], b).sum())
    out["near"] = [int(i) for i in near]
    out["boxes"] = boxes[near]
    out["counts"] = counts
    cams = {}
    for name, tc in cam_jobs:
        spec = next(c for c in CAMERAS if c.name == name)
        crng = np.random.default_rng([cfg.seed, _W["scene"], 2, k, CAMERA_NAMES.index(name)])
        r = render_camera(world, spec, tc, cfg.render_scale, crng)
        img = Image.fromarray(r["rgb"])
        if img.size != IMAGE_WH:
            img = img.resize(IMAGE_WH, Image.BILINEAR)
        jpath = cfg.out / cam_files[name]
        jpath.parent.mkdir(parents=True, exist_ok=True)
        img.save(jpath, format="JPEG", quality=cfg.jpeg_quality)
        owner = r["owner"]
        sx = IMAGE_WH[0] / owner.shape[1]
        sy = IMAGE_WH[1] / owner.shape[0]
        bbox = {oid: [float(c0 * sx), float(r0 * sy), float(c1 * sx), float(r1 * sy)] for oid, (c0, r0, c1, r1) in r["boxes"].items()}
        if cfg.masks:
            mpath = cfg.out / "synth_masks" / name / (Path(jpath.name).stem + ".png")
            mpath.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((owner + 1).astype(np.uint16)).save(mpath)
        cams[name] = {"visible": r["visible"], "silhouette": r["silhouette"], "bbox": bbox}
    out["cams"] = cams
    return out


# ---------------------------------------------------------------------------------------------
def generate(cfg: SynthConfig, progress: bool = True) -> Dict:
    """Generate ``cfg.scenes`` scenes into ``cfg.out``; returns a summary with timings."""
    from PIL import Image
    from tqdm import tqdm

    out = cfg.out
    vdir = out / cfg.version
    _prepare_out(cfg)
    vdir.mkdir(parents=True, exist_ok=True)
    seed = cfg.seed
    T: Dict[str, List[Dict]] = {n: [] for n in (
        "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
        "scene", "sample", "sample_data", "sample_annotation", "map")}
    cat_tok = {name: token(seed, "category", name) for name in CATEGORY_OF_KIND.values()}
    for name in sorted(cat_tok):
        T["category"].append({"token": cat_tok[name], "name": name, "description": CATEGORY_DESCRIPTIONS[name]})
    att_tok = {a: token(seed, "attribute", a) for a in ATTRIBUTES}
    for a in ATTRIBUTES:
        T["attribute"].append({"token": att_tok[a], "name": a, "description": a.replace(".", " ").replace("_", " ")})
    for tok, level, _ in VISIBILITY_LEVELS:
        T["visibility"].append({"token": tok, "level": level, "description": f"visibility of whole object is {level[1:]} %"})
    channels = ("LIDAR_TOP",) + tuple(c for c in CAMERA_NAMES if c in cfg.cameras)
    sensor_tok = {ch: token(seed, "sensor", ch) for ch in channels}
    for ch in channels:
        T["sensor"].append({"token": sensor_tok[ch], "channel": ch, "modality": "lidar" if ch == "LIDAR_TOP" else "camera"})
    map_token = token(seed, "map")
    map_file = f"maps/{map_token}.png"
    (out / "maps").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(out / map_file)

    det_images: Dict[str, Dict] = {}
    mask_ids: Dict[str, int] = {}
    mask_pixels: Dict[str, Dict[str, List[int]]] = {}
    timings = []
    scene_names = []
    for si in range(cfg.scenes):
        t_scene = time.perf_counter()
        scene_seed = int(np.random.SeedSequence([seed, si]).generate_state(1)[0])
        world = build_world(scene_seed, cfg.seconds)
        name = f"scene-{si + 1:04d}"
        scene_names.append(name)
        logname = f"synth-{seed}-{si:04d}"
        log_token = token(seed, si, "log")
        T["log"].append({"token": log_token, "logfile": logname, "vehicle": "synth-ego", "date_captured": "2026-01-01",
                         "location": "synth-town"})
        cs_tok = {ch: token(seed, si, "calibrated_sensor", ch) for ch in channels}
        T["calibrated_sensor"].append({"token": cs_tok["LIDAR_TOP"], "sensor_token": sensor_tok["LIDAR_TOP"],
                                       "translation": [float(v) for v in LIDAR_TRANSLATION],
                                       "rotation": rotation_to_quaternion(LIDAR_ROTATION), "camera_intrinsic": []})
        for spec in CAMERAS:
            if spec.name in cfg.cameras:
                T["calibrated_sensor"].append({"token": cs_tok[spec.name], "sensor_token": sensor_tok[spec.name],
                                               "translation": [float(v) for v in spec.translation],
                                               "rotation": rotation_to_quaternion(spec.rotation),
                                               "camera_intrinsic": spec.K.tolist()})
        n_keys = max(1, int(np.floor(cfg.seconds * 2 + 1e-9)))
        n_sweeps = (n_keys - 1) * KEYFRAME_EVERY + 1
        t0_us = BASE_TIMESTAMP_US + (seed % 1000) * 10_000_000_000 + si * 100_000_000
        jit = np.random.default_rng([seed, si, 3])
        sweep_us = [t0_us + int(round(k * 1e6 / LIDAR_HZ)) + (int(jit.integers(-300, 300)) if k else 0) for k in range(n_sweeps)]
        sample_tok = [token(seed, si, "sample", j) for j in range(n_keys)]
        tasks = []
        for k in range(n_sweeps):
            is_key = k % KEYFRAME_EVERY == 0
            folder = "samples" if is_key else "sweeps"
            lidar_file = f"{folder}/LIDAR_TOP/{logname}__LIDAR_TOP__{sweep_us[k]}.pcd.bin"
            cam_jobs, cam_files = [], {}
            if is_key:
                for spec in CAMERAS:
                    if spec.name in cfg.cameras:
                        tc_us = sweep_us[k] + int(round(spec.delay_ms * 1000)) + int(jit.integers(-1500, 1500))
                        cam_jobs.append((spec.name, (tc_us - t0_us) / 1e6))
                        cam_files[spec.name] = f"samples/{spec.name}/{logname}__{spec.name}__{tc_us}.jpg"
            tasks.append((k, (sweep_us[k] - t0_us) / 1e6, lidar_file, is_key, cam_jobs, cam_files))
        results: List[Dict] = [None] * n_sweeps  # type: ignore[list-item]
        bar = tqdm(total=n_sweeps, desc=f"{name} ({si + 1}/{cfg.scenes})", unit="sweep", disable=not progress)
        if cfg.workers > 1:
            ctx = mp.get_context("fork")
            with ctx.Pool(cfg.workers, initializer=_init_worker, initargs=(world, cfg, si)) as pool:
                for r in pool.imap_unordered(_sweep_task, tasks, chunksize=1):
                    results[r["k"]] = r
                    bar.update(1)
        else:
            _init_worker(world, cfg, si)
            for task in tasks:
                r = _sweep_task(task)
                results[r["k"]] = r
                bar.update(1)
        bar.close()

        # ---- tables for this scene
        scene_token = token(seed, si, "scene")
        for j in range(n_keys):
            T["sample"].append({"token": sample_tok[j], "timestamp": sweep_us[j * KEYFRAME_EVERY], "scene_token": scene_token,
                                "prev": sample_tok[j - 1] if j > 0 else "", "next": sample_tok[j + 1] if j + 1 < n_keys else ""})
        T["scene"].append({"token": scene_token, "log_token": log_token, "nbr_samples": n_keys,
                           "first_sample_token": sample_tok[0], "last_sample_token": sample_tok[-1], "name": name,
                           "description": f"synthetic street, seed {seed}, {cfg.seconds:g} s, {len(world.objects)} objects"})
        chains: Dict[str, List[Dict]] = {ch: [] for ch in channels}
        for k, task in enumerate(tasks):
            j = (k + KEYFRAME_EVERY - 1) // KEYFRAME_EVERY  # the keyframe at or after this sweep
            sd_tok = token(seed, si, "sample_data", "LIDAR_TOP", k)
            t = task[1]
            R, tr = world.ego_pose(t)
            T["ego_pose"].append({"token": sd_tok, "timestamp": sweep_us[k], "rotation": rotation_to_quaternion(R),
                                  "translation": [float(v) for v in tr]})
            chains["LIDAR_TOP"].append({"token": sd_tok, "sample_token": sample_tok[j], "ego_pose_token": sd_tok,
                                        "calibrated_sensor_token": cs_tok["LIDAR_TOP"], "timestamp": sweep_us[k],
                                        "fileformat": "pcd", "is_key_frame": task[3], "height": 0, "width": 0,
                                        "filename": task[2]})
            for name_c, tc in task[4]:
                cd_tok = token(seed, si, "sample_data", name_c, k)
                tc_us = t0_us + int(round(tc * 1e6))
                Rc, trc = world.ego_pose(tc)
                T["ego_pose"].append({"token": cd_tok, "timestamp": tc_us, "rotation": rotation_to_quaternion(Rc),
                                      "translation": [float(v) for v in trc]})
                chains[name_c].append({"token": cd_tok, "sample_token": sample_tok[j], "ego_pose_token": cd_tok,
                                       "calibrated_sensor_token": cs_tok[name_c], "timestamp": tc_us, "fileformat": "jpg",
                                       "is_key_frame": True, "height": IMAGE_WH[1], "width": IMAGE_WH[0],
                                       "filename": task[5][name_c]})
        for ch, rows in chains.items():
            for i, row in enumerate(rows):
                row["prev"] = rows[i - 1]["token"] if i > 0 else ""
                row["next"] = rows[i + 1]["token"] if i + 1 < len(rows) else ""
            T["sample_data"].extend(rows)
        cam_sd = {(row["sample_token"], ch): row for ch, rows in chains.items() if ch != "LIDAR_TOP" for row in rows}

        # ---- annotations and instances
        ann_by_obj: Dict[int, List[Dict]] = {}
        for j in range(n_keys):
            r = results[j * KEYFRAME_EVERY]
            for bi, oi in enumerate(r["near"]):
                vis_px = sum(c["visible"].get(oi, 0) for c in r["cams"].values())
                sil_px = sum(c["silhouette"].get(oi, 0) for c in r["cams"].values())
                n_pts = r["counts"][oi]
                if n_pts == 0 and vis_px == 0:
                    continue  # not observable: not annotated
                frac = vis_px / sil_px if sil_px else 0.0
                vis_tok = next(tok for tok, _, hi in VISIBILITY_LEVELS if frac < hi)
                b = r["boxes"][bi]
                obj = world.objects[oi]
                atoks = [att_tok[obj.attribute]] if obj.attribute else []
                if obj.attribute == "vehicle.moving" and not obj.moving:
                    atoks = [att_tok["vehicle.stopped"]]
                ann = {"token": token(seed, si, "ann", oi, j), "sample_token": sample_tok[j],
                       "instance_token": token(seed, si, "instance", oi), "visibility_token": vis_tok,
                       "attribute_tokens": atoks, "translation": [float(v) for v in b[:3]],
                       "size": [float(b[4]), float(b[3]), float(b[5])],
                       "rotation": [float(np.cos(b[6] / 2)), 0.0, 0.0, float(np.sin(b[6] / 2))],
                       "num_lidar_pts": n_pts, "num_radar_pts": 0}
                ann_by_obj.setdefault(oi, []).append(ann)
        for oi in sorted(ann_by_obj):
            anns = ann_by_obj[oi]
            mask_ids[anns[0]["instance_token"]] = oi + 1
            for i, a in enumerate(anns):
                a["prev"] = anns[i - 1]["token"] if i > 0 else ""
                a["next"] = anns[i + 1]["token"] if i + 1 < len(anns) else ""
            T["sample_annotation"].extend(anns)
            T["instance"].append({"token": anns[0]["instance_token"], "category_token": cat_tok[world.objects[oi].category],
                                  "nbr_annotations": len(anns), "first_annotation_token": anns[0]["token"],
                                  "last_annotation_token": anns[-1]["token"]})
        if cfg.masks:
            for j in range(n_keys):
                for name_c, cam in results[j * KEYFRAME_EVERY]["cams"].items():
                    sd = cam_sd[(sample_tok[j], name_c)]
                    mask_pixels[sd["token"]] = {
                        token(seed, si, "instance", oi): [int(cam["visible"].get(oi, 0)), int(px)]
                        for oi, px in sorted(cam["silhouette"].items()) if oi in ann_by_obj}
        # ---- 2D detections (simulated open-vocabulary detector)
        if cfg.detections:
            ann_index = {(a["sample_token"], oi): a for oi, anns in ann_by_obj.items() for a in anns}
            for j in range(n_keys):
                r = results[j * KEYFRAME_EVERY]
                for name_c, cam in r["cams"].items():
                    sd = cam_sd[(sample_tok[j], name_c)]
                    objs = []
                    for oi, bbox in cam["bbox"].items():
                        a = ann_index.get((sample_tok[j], oi))
                        objs.append({"kind": world.objects[oi].kind, "bbox": bbox, "visible_px": cam["visible"][oi],
                                     "silhouette_px": cam["silhouette"].get(oi, cam["visible"][oi]),
                                     "instance_token": token(seed, si, "instance", oi) if a else None,
                                     "annotation_token": a["token"] if a else None,
                                     "category": world.objects[oi].category})
                    drng = np.random.default_rng([seed, si, 4, j, CAMERA_NAMES.index(name_c)])
                    det_images[sd["token"]] = {"sample_data_token": sd["token"], "sample_token": sample_tok[j],
                                               "filename": sd["filename"], "camera": name_c, "scene": name,
                                               "width": IMAGE_WH[0], "height": IMAGE_WH[1],
                                               "detections": simulate_detections(objs, drng, cfg.render_scale)}
        dt = time.perf_counter() - t_scene
        timings.append(dt)
        log.info("%s: %d sweeps, %d keyframes, %d objects, %d annotations in %.1f s", name, n_sweeps, n_keys,
                 len(world.objects), sum(len(v) for v in ann_by_obj.values()), dt)

    T["map"].append({"token": map_token, "log_tokens": [row["token"] for row in T["log"]], "category": "semantic_prior",
                     "filename": map_file})
    for name_t, rows in T.items():
        _write_json(vdir / f"{name_t}.json", rows)
    val = [n for i, n in enumerate(scene_names) if (i % 5 == 4) or (len(scene_names) in (2, 3, 4) and i == len(scene_names) - 1)]
    _write_json(vdir / "synth_splits.json", {"train": [n for n in scene_names if n not in val], "val": val})
    if cfg.detections:
        _write_json(vdir / "detections_2d.json", {
            "format": "clip2.detections_2d/v1", "version": cfg.version,
            "detector": "synthetic open-vocabulary detector (rendered object masks + detector noise)",
            "images": det_images,
            "by_filename": {v["filename"]: k for k, v in det_images.items()},
        })
    if cfg.masks:
        _write_json(out / "synth_masks" / "instances.json", {
            "description": "synth_masks/<camera>/<image stem>.png hold uint16 object ids (0 = none) at the render "
                           "resolution; this maps annotated instance tokens to their id",
            "render_scale": cfg.render_scale, "instances": mask_ids,
            "pixels": {"description": "per camera sample_data token: instance token -> [visible pixels, pixels "
                                      "without occlusion] at the render resolution", "images": mask_pixels}})
    info = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k not in ("out", "workers")}
    _write_json(vdir / "synth_info.json", {"generator": "clip2.datasets.synth", "config": info,
                                           "scene_names": scene_names})
    return {"dataroot": str(out), "version": cfg.version, "scenes": scene_names, "seconds_per_scene": timings,
            "annotations": len(T["sample_annotation"]), "samples": len(T["sample"]),
            "sample_data": len(T["sample_data"])}


def _prepare_out(cfg: SynthConfig) -> None:
    """Refuse to write over existing data unless it is an earlier synthetic dataroot and ``overwrite`` is set."""
    import shutil

    out = cfg.out
    if not out.exists() or not any(out.iterdir()):
        return
    ours = (out / cfg.version / "synth_info.json").is_file()
    if not ours:
        raise FileExistsError(f"{out} is not empty and holds no synthetic {cfg.version}; choose an empty or new folder")
    if not cfg.overwrite:
        raise FileExistsError(f"{out} already holds a synthetic {cfg.version}; pass overwrite (--overwrite) to replace it")
    for sub in (cfg.version, "samples", "sweeps", "maps", "synth_masks"):
        if (out / sub).is_dir():
            shutil.rmtree(out / sub)
    for f in out.glob("preview_*.png"):
        f.unlink()


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=False))
