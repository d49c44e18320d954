"""nuScenes (real or synthetic) keyframes as :class:`clip2_core.types.Frame`, through nuscenes-devkit.

Only the devkit's public API and the nuScenes schema are used, so the reader works on real
nuScenes unchanged and on the synthetic worlds of :mod:`clip2_core.datasets.synth`.

Frames (one per keyframe ``sample``):

- ``points``: the keyframe LIDAR_TOP sweep in the LiDAR frame (x right, y forward, z up), columns
  ``x, y, z, intensity, ring``; with ``nsweeps > 1`` the previous sweeps are moved into the
  keyframe's LiDAR frame (through each sweep's ego pose) and a 6th column ``time_lag`` [s]
  (keyframe time minus sweep time, >= 0) is added.
- ``cameras``: ``CameraView`` per camera with ``K`` and ``T_lidar_to_cam`` at the *camera's own*
  timestamp: lidar -> ego(t_lidar) -> global -> ego(t_cam) -> camera.
- ``gt_boxes``: annotations as ``Box3D`` in the LiDAR frame (size l, w, h from the devkit's w, l, h),
  ``label`` = detection class from a configurable category map (unmapped categories dropped),
  ``token`` = annotation token, ``attributes`` = category, instance token, num_lidar_pts,
  visibility, attribute names.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Union

import numpy as np

from clip2_core.accumulate import TIME_LAG_FIELD, AccumulateConfig, merge_sweeps
from clip2_core.geometry import invert_transform, make_transform, quaternion_to_matrix
from clip2_core.types import Box3D, CameraView, Frame, boxes_to_array

log = logging.getLogger(__name__)

CAMERA_CHANNELS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT")

# nuScenes category -> detection class, as in the nuScenes detection benchmark
DETECTION_CLASS_MAP: Dict[str, str] = {
    "movable_object.barrier": "barrier",
    "vehicle.bicycle": "bicycle",
    "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus",
    "vehicle.car": "car",
    "vehicle.construction": "construction_vehicle",
    "vehicle.motorcycle": "motorcycle",
    "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian",
    "human.pedestrian.police_officer": "pedestrian",
    "movable_object.trafficcone": "traffic_cone",
    "vehicle.trailer": "trailer",
    "vehicle.truck": "truck",
}
DETECTION_CLASSES = ("car", "truck", "bus", "trailer", "construction_vehicle", "pedestrian", "motorcycle", "bicycle",
                     "traffic_cone", "barrier")
# the detection map plus long-tail categories kept for open-vocabulary evaluation (tire and
# traffic_sign exist only in the synthetic worlds; the others are nuScenes categories)
LONG_TAIL_CLASS_MAP: Dict[str, str] = {
    **DETECTION_CLASS_MAP,
    "human.pedestrian.stroller": "stroller",
    "human.pedestrian.wheelchair": "wheelchair",
    "human.pedestrian.personal_mobility": "personal_mobility",
    "movable_object.debris": "debris",
    "movable_object.pushable_pullable": "trash_can",
    "movable_object.tire": "tire",
    "static_object.bicycle_rack": "bicycle_rack",
    "static_object.traffic_sign": "traffic_sign",
    "vehicle.emergency.ambulance": "ambulance",
    "vehicle.emergency.police": "police_car",
    "animal": "animal",
}
CLASS_MAPS: Dict[str, Dict[str, str]] = {"detection": DETECTION_CLASS_MAP, "long_tail": LONG_TAIL_CLASS_MAP}

ClassMapLike = Union[None, str, Path, Mapping[str, Optional[str]]]


NUSCENES_INTENSITY_MAX = 255.0  # LIDAR_TOP intensity full scale (also clip2 synth's)


def load_class_map(class_map: ClassMapLike = None) -> Dict[str, str]:
    """A category -> class dict from None (detection map), a name in ``CLASS_MAPS``, a JSON file path or a dict.

    Values that are ``None`` drop the category.
    """
    if class_map is None:
        return dict(DETECTION_CLASS_MAP)
    if isinstance(class_map, Mapping):
        out = dict(class_map)
    elif str(class_map) in CLASS_MAPS:
        return dict(CLASS_MAPS[str(class_map)])
    else:
        from clip2_core.fileio import read_json_object

        if not Path(class_map).is_file():
            raise FileNotFoundError(f"class map {class_map!r} is neither one of {sorted(CLASS_MAPS)} nor a JSON file")
        out = read_json_object(class_map, "class map file")  # category -> class
    bad = [k for k, v in out.items() if not isinstance(k, str) or not (v is None or isinstance(v, str))]
    if bad:
        raise ValueError(f"class map entries must be str -> str or null, bad keys: {bad[:5]}")
    return {k: v for k, v in out.items() if v is not None}


def pose_matrix(record: Mapping) -> np.ndarray:
    """4x4 transform from a calibrated_sensor / ego_pose record (rotation [w, x, y, z], translation)."""
    return make_transform(quaternion_to_matrix(record["rotation"], scalar_first=True), record["translation"])


def split_scene_names(nusc, split: str, dataroot: Union[str, Path, None] = None, version: Optional[str] = None) -> List[str]:
    """Scene names of a split.

    Synthetic dataroots carry ``<version>/synth_splits.json``; otherwise the devkit's official splits
    (``nuscenes.utils.splits.create_splits_scenes``) are used.
    """
    dataroot = Path(dataroot if dataroot is not None else nusc.dataroot)
    version = version or nusc.version
    synth = dataroot / version / "synth_splits.json"
    if synth.is_file():
        splits = json.loads(synth.read_text())
    else:
        from nuscenes.utils.splits import create_splits_scenes

        splits = create_splits_scenes()
    if split not in splits:
        raise ValueError(f"unknown split {split!r}; available: {sorted(splits)}")
    return list(splits[split])


class NuScenesReader:
    """Keyframes of a nuScenes dataroot as :class:`Frame` objects.

    Args:
        dataroot: folder holding ``<version>/`` tables, ``samples/`` and ``sweeps/``.
        version: table folder, e.g. ``v1.0-mini``, ``v1.0-trainval`` or ``v1.0-synth``.
        split: optional split name (``train``, ``val``, ``mini_train``, ... or the synthetic splits).
        scenes: optional scene names to keep (intersected with ``split`` when both are given).
        class_map: see :func:`load_class_map`.
        cameras: camera channels to attach (default all six); ``()`` for none.
        load_images: decode JPEGs into ``CameraView.image`` (else only ``image_path`` is set).
        nsweeps: LiDAR sweeps to accumulate per frame (1 = the keyframe sweep only); the earlier ones are
            moved into the keyframe's sensor frame and get a ``time_lag`` column (clip2_core.accumulate).
        sweep_min_range: earlier sweeps' returns this close to their own sensor (BEV) are dropped (the ego body).
        nusc: an already loaded ``NuScenes`` object to reuse.
    """

    def __init__(
        self,
        dataroot: Union[str, Path],
        version: str = "v1.0-trainval",
        split: Optional[str] = None,
        scenes: Optional[Sequence[str]] = None,
        class_map: ClassMapLike = None,
        cameras: Optional[Sequence[str]] = None,
        load_images: bool = True,
        nsweeps: int = 1,
        nusc=None,
        sweep_min_range: float = AccumulateConfig.min_range,
    ):
        self.dataroot = Path(dataroot)
        self.version = version
        if not (self.dataroot / version).is_dir():
            raise FileNotFoundError(f"no nuScenes tables at {self.dataroot / version}")
        if nsweeps < 1:
            raise ValueError("nsweeps must be >= 1")
        self.class_map = load_class_map(class_map)
        self.cameras = tuple(CAMERA_CHANNELS if cameras is None else cameras)
        self.load_images = load_images
        self.nsweeps = int(nsweeps)
        self.sweep_min_range = float(sweep_min_range)
        if nusc is None:
            from nuscenes.nuscenes import NuScenes

            nusc = NuScenes(version=version, dataroot=str(self.dataroot), verbose=False)
        self.nusc = nusc
        keep = None
        if split is not None:
            keep = set(split_scene_names(nusc, split, self.dataroot, version))
        if scenes is not None:
            names = set(scenes)
            known = {s["name"] for s in nusc.scene}
            missing = sorted(names - known)
            if missing:
                raise ValueError(f"scenes not in {version}: {missing[:5]}")
            keep = names if keep is None else keep & names
        self.scene_records = [s for s in nusc.scene if keep is None or s["name"] in keep]
        self.sample_tokens: List[str] = []
        self._scene_of: Dict[str, str] = {}
        for scene in self.scene_records:
            tok = scene["first_sample_token"]
            while tok:
                self.sample_tokens.append(tok)
                self._scene_of[tok] = scene["name"]
                tok = nusc.get("sample", tok)["next"]

    # ------------------------------------------------------------------ iteration
    def scene_sample_tokens(self, scene_name: str) -> List[str]:
        """Keyframe sample tokens of one selected scene, in time order."""
        toks = [t for t in self.sample_tokens if self._scene_of[t] == scene_name]
        if not toks:
            raise ValueError(f"scene {scene_name!r} is not among the reader's scenes")
        return toks

    def __len__(self) -> int:
        return len(self.sample_tokens)

    def __iter__(self) -> Iterator[Frame]:
        for tok in self.sample_tokens:
            yield self.frame(tok)

    def __getitem__(self, i: int) -> Frame:
        return self.frame(self.sample_tokens[i])

    # ------------------------------------------------------------------ transforms
    def sensor_to_global(self, sd_token: str) -> np.ndarray:
        """4x4 sensor -> global at the sample_data's own timestamp."""
        sd = self.nusc.get("sample_data", sd_token)
        cs = self.nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        pose = self.nusc.get("ego_pose", sd["ego_pose_token"])
        return pose_matrix(pose) @ pose_matrix(cs)

    def load_points(self, sd_token: str) -> np.ndarray:
        """(N, 5) float32 x, y, z, intensity, ring of one LiDAR sample_data, sensor frame."""
        sd = self.nusc.get("sample_data", sd_token)
        path = self.dataroot / sd["filename"]
        raw = np.fromfile(path, dtype=np.float32)
        if raw.size % 5:
            raise ValueError(f"{path}: size {raw.size} floats is not a multiple of 5 (x, y, z, intensity, ring)")
        return raw.reshape(-1, 5)

    # ------------------------------------------------------------------ frames
    def frame(self, sample_token: str) -> Frame:
        nusc = self.nusc
        sample = nusc.get("sample", sample_token)
        if "LIDAR_TOP" not in sample["data"]:
            raise ValueError(f"sample {sample_token} has no LIDAR_TOP")
        lidar_tok = sample["data"]["LIDAR_TOP"]
        lidar_sd = nusc.get("sample_data", lidar_tok)
        T_lidar_glob = self.sensor_to_global(lidar_tok)
        T_glob_lidar = invert_transform(T_lidar_glob)
        points = self.load_points(lidar_tok)
        fields = ("x", "y", "z", "intensity", "ring")
        if self.nsweeps > 1:  # earlier sweeps moved into this one's frame (clip2_core.accumulate, as the node does)
            past = []
            tok = lidar_sd["prev"]
            t_ref = lidar_sd["timestamp"]
            for _ in range(self.nsweeps - 1):
                if not tok:
                    break
                sd = nusc.get("sample_data", tok)
                past.append((self.load_points(tok), T_glob_lidar @ self.sensor_to_global(tok), (t_ref - sd["timestamp"]) * 1e-6))
                tok = sd["prev"]
            points = merge_sweeps(points, past, self.sweep_min_range)
            fields = fields + (TIME_LAG_FIELD,)
        cameras: Dict[str, CameraView] = {}
        for ch in self.cameras:
            if ch not in sample["data"]:
                continue
            sd = nusc.get("sample_data", sample["data"][ch])
            cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            T_cam_glob = self.sensor_to_global(sd["token"])
            path = self.dataroot / sd["filename"]
            image = None
            if self.load_images:
                from PIL import Image

                with Image.open(path) as im:
                    image = np.asarray(im.convert("RGB"))
            cameras[ch] = CameraView(
                name=ch, K=np.asarray(cs["camera_intrinsic"], dtype=np.float64),
                T_lidar_to_cam=invert_transform(T_cam_glob) @ T_lidar_glob, size_wh=(sd["width"], sd["height"]), image=image,
                stamp=sd["timestamp"] * 1e-6, image_path=str(path), token=sd["token"],
            )
        return Frame(
            points=points, point_fields=fields, cameras=cameras, stamp=lidar_sd["timestamp"] * 1e-6,
            frame_id="LIDAR_TOP", token=sample_token, scene=self._scene_of.get(sample_token),
            gt_boxes=self.gt_boxes(lidar_tok), intensity_max=NUSCENES_INTENSITY_MAX,
        )

    def gt_boxes(self, lidar_sd_token: str) -> List[Box3D]:
        """Annotated boxes of a keyframe LiDAR sample_data in its sensor frame, mapped classes only."""
        nusc = self.nusc
        _, boxes, _ = nusc.get_sample_data(lidar_sd_token)
        out = []
        for b in boxes:
            label = self.class_map.get(b.name)
            if label is None:
                continue
            ann = nusc.get("sample_annotation", b.token)
            R = b.rotation_matrix
            vis = nusc.get("visibility", ann["visibility_token"])["level"] if ann.get("visibility_token") else None
            out.append(Box3D(
                center=np.asarray(b.center, dtype=np.float64), size=(b.wlh[1], b.wlh[0], b.wlh[2]),
                yaw=float(np.arctan2(R[1, 0], R[0, 0])), label=label, token=b.token,
                attributes={
                    "category": b.name, "instance_token": ann["instance_token"],
                    "num_lidar_pts": int(ann["num_lidar_pts"]), "visibility": vis,
                    "attributes": [nusc.get("attribute", a)["name"] for a in ann["attribute_tokens"]],
                },
            ))
        return out


@dataclass
class GTCrop:
    """The LiDAR points of one annotated object (recognition protocol input)."""

    points: np.ndarray  # (K, C) float32, the frame's columns, LiDAR frame
    label: str  # detection / open-vocabulary class
    box: Box3D  # the annotation, LiDAR frame


def box_point_masks(frame: Frame) -> np.ndarray:
    """(N, M) bool: which points of the frame lie in which GT box (faces inclusive)."""
    from clip2_core.geometry import points_in_boxes

    return points_in_boxes(frame.xyz.astype(np.float64), boxes_to_array(frame.gt_boxes))


def gt_object_crops(frame: Frame, min_points: int = 5, labels: Optional[Sequence[str]] = None) -> List[GTCrop]:
    """Points inside each GT box with at least ``min_points`` points, optionally only some labels."""
    if not frame.gt_boxes:
        return []
    masks = box_point_masks(frame)
    out = []
    for j, box in enumerate(frame.gt_boxes):
        if labels is not None and box.label not in labels:
            continue
        m = masks[:, j]
        if int(m.sum()) >= min_points:
            out.append(GTCrop(points=frame.points[m], label=str(box.label), box=box))
    return out
