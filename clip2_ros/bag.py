"""nuScenes (real or ``clip2 synth``) -> rosbag2 folders that ``ros2 bag play`` replays.

One bag per scene, written with ``rosbags`` (no rclpy, no ROS install): CDR-serialised standard
ROS 2 types from rosbags' Kilted typestore, each topic carrying its ``ros2msg`` definition and
RIHS01 type hash (metadata version 9), in MCAP (default) or sqlite3 storage.

Topics of a bag (bag time = header stamp = the dataset timestamp, microseconds -> nanoseconds):

=====================================  ====================================  =========================
topic                                  type                                  when
=====================================  ====================================  =========================
``/LIDAR_TOP``                         ``sensor_msgs/msg/PointCloud2``       every sweep (20 Hz) or keyframes
``/<CAM>/image_rect_compressed``       ``sensor_msgs/msg/CompressedImage``   every camera sample_data
``/<CAM>/camera_info``                 ``sensor_msgs/msg/CameraInfo``        with each image
``/tf_static``                         ``tf2_msgs/msg/TFMessage``            once, at the bag start (transient local)
``/tf``                                ``tf2_msgs/msg/TFMessage``            each ego pose of a written sample_data
``/LIDAR_TOP/pose``                    ``geometry_msgs/msg/PoseStamped``     with every sweep: LIDAR_TOP in ``map`` at its stamp
``/gt/markers``                        ``visualization_msgs/msg/MarkerArray`` each keyframe
=====================================  ====================================  =========================

The PointCloud2 fields are those of the ``.pcd.bin`` file, ``x, y, z, intensity, ring``, all
FLOAT32 (little-endian, point_step 20): the message data are the file's bytes unchanged.

Output layout (``--out DIR``), written into ``DIR.partial`` and renamed to ``DIR`` only when
every scene is finished, so an interrupted conversion never leaves a ``DIR`` that looks complete::

    DIR/summary.json                      what was written and skipped (SUMMARY_FORMAT)
    DIR/<scene>/metadata.yaml             the rosbag2 bag: ros2 bag play DIR/<scene>
    DIR/<scene>/<scene>.mcap | .db3
    DIR/<scene>/gt.json                   ground truth per keyframe (GT_FORMAT)
    DIR/<scene>/lidar_openvocab.param.yaml  node parameters for this log (no tf2 needed)

A missing or malformed sweep / image file is skipped and counted, never fatal. Errors in the
input (no dataroot, missing tables, unknown scenes) raise FileNotFoundError / ValueError with
a one-line message. See docs/bags.md.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from clip2_core.datasets.nuscenes import CAMERA_CHANNELS, pose_matrix
from clip2_core.fileio import is_plain_name
from clip2_core.geometry import invert_transform, yaw_to_quaternion

log = logging.getLogger("clip2.bag")

LIDAR_CHANNEL = "LIDAR_TOP"
LIDAR_TOPIC = "/LIDAR_TOP"
TF_TOPIC = "/tf"
LIDAR_POSE_TOPIC = "/LIDAR_TOP/pose"  # the sensor's pose in map per sweep: multi-sweep accumulation without tf2
TF_STATIC_TOPIC = "/tf_static"
GT_MARKERS_TOPIC = "/gt/markers"
MAP_FRAME = "map"  # nuScenes "global" frame
BASE_FRAME = "base_link"  # nuScenes ego frame
LIDAR_FIELDS = ("x", "y", "z", "intensity", "ring")  # FLOAT32 each, as in the .pcd.bin
LIDAR_POINT_STEP = 4 * len(LIDAR_FIELDS)
JPEG_MAGIC = b"\xff\xd8"  # start-of-image marker

GT_FILE_NAME = "gt.json"
PARAMS_FILE_NAME = "lidar_openvocab.param.yaml"
SUMMARY_FILE_NAME = "summary.json"
GT_FORMAT = "clip2.bag_gt/v1"
SUMMARY_FORMAT = "clip2.bag_summary/v1"
STORAGES = ("mcap", "sqlite3")
SWEEP_MODES = ("all", "keyframes")
# the 13 tables that nuscenes-devkit's NuScenes() loads
NUSCENES_TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose",
                   "log", "scene", "sample", "sample_data", "sample_annotation", "map")
# write order of messages that share a timestamp: transforms, images (each CameraInfo just before
# its CompressedImage), the sweep, then the ground truth of that sweep
_ORDER_TF, _ORDER_IMAGE, _ORDER_LIDAR, _ORDER_GT = range(4)


def image_topic(camera: str) -> str:
    return f"/{camera}/image_rect_compressed"


def camera_info_topic(camera: str) -> str:
    return f"/{camera}/camera_info"


# ---------------------------------------------------------------------------------------------- config
@dataclass
class BagConfig:
    """What ``clip2 bag from-nuscenes`` converts, and how."""

    dataroot: Path  # nuScenes-format dataroot (<version>/ tables, samples/, sweeps/)
    version: str  # table folder: v1.0-mini, v1.0-trainval, v1.0-synth, ...
    out: Path  # output folder: one bag per scene in out/<scene>/
    scenes: Optional[Sequence[str]] = None  # scene names; None = every scene of the version
    storage: str = "mcap"  # mcap | sqlite3
    sweeps: str = "all"  # all = every sample_data (LiDAR 20 Hz); keyframes = the 2 Hz keyframes only
    cameras: Optional[Sequence[str]] = None  # camera channels to write; None = all of the scene, () = none
    class_map: str = "long_tail"  # GT labels: a clip2_core.datasets.nuscenes class map name or JSON file
    overwrite: bool = False  # replace an earlier output of this command at ``out``

    def check(self) -> None:
        if self.storage not in STORAGES:
            raise ValueError(f"storage must be one of {list(STORAGES)}, got {self.storage!r}")
        if self.sweeps not in SWEEP_MODES:
            raise ValueError(f"sweeps must be one of {list(SWEEP_MODES)}, got {self.sweeps!r}")
        if self.scenes is not None and not list(self.scenes):
            raise ValueError("no scene named: give scene names or convert all scenes")


@dataclass
class SkippedFile:
    channel: str  # e.g. LIDAR_TOP, CAM_FRONT
    token: str  # sample_data token
    filename: str  # as in sample_data.filename (relative to the dataroot)
    reason: str  # "missing" or "bad: <what>"


@dataclass
class SceneResult:
    scene: str
    bag: str  # folder name under the output folder
    messages: Dict[str, int]  # topic -> messages written
    sweeps: int  # PointCloud2 messages written
    keyframes: int
    start_ns: int
    end_ns: int
    skipped: List[SkippedFile] = field(default_factory=list)
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------- dataset
def open_nuscenes(dataroot: Path, version: str):
    """nuscenes-devkit's ``NuScenes`` after checking the dataroot and its tables (one-line errors)."""
    dataroot = Path(dataroot)
    if not dataroot.is_dir():
        raise FileNotFoundError(f"dataroot {dataroot} does not exist (expected <dataroot>/{version}/*.json tables)")
    tables = dataroot / version
    if not tables.is_dir():
        found = sorted(p.name for p in dataroot.iterdir() if p.is_dir() and (p / "scene.json").is_file())
        raise FileNotFoundError(f"no table folder {version!r} in {dataroot} (table folders there: {found or 'none'})")
    missing = [t for t in NUSCENES_TABLES if not (tables / f"{t}.json").is_file()]
    if missing:
        raise FileNotFoundError(f"{tables} lacks nuScenes table(s) {', '.join(f'{t}.json' for t in missing)}")
    from nuscenes.nuscenes import NuScenes

    return NuScenes(version=version, dataroot=str(dataroot), verbose=False)


class NuScenesSource:
    """The devkit's tables of one dataroot, indexed for per-scene, per-channel sample_data chains.

    A sample_data belongs to a scene when its ``sample_token`` is one of the scene's samples
    (keyframes and the sweeps the dataset associates with them).
    """

    def __init__(self, nusc, dataroot: Path, version: str):
        self.nusc = nusc
        self.dataroot = Path(dataroot)
        self.version = version
        sensors = {s["token"]: s for s in nusc.sensor}
        # calibrated_sensor token -> (channel, modality)
        self._channel_of_cs: Dict[str, Tuple[str, str]] = {
            cs["token"]: (sensors[cs["sensor_token"]]["channel"], sensors[cs["sensor_token"]]["modality"])
            for cs in nusc.calibrated_sensor
        }
        self._by_sample: Dict[str, List[dict]] = {}
        for sd in nusc.sample_data:
            self._by_sample.setdefault(sd["sample_token"], []).append(sd)
        self.scenes: Dict[str, dict] = {s["name"]: s for s in nusc.scene}

    @classmethod
    def open(cls, dataroot: Path, version: str) -> "NuScenesSource":
        return cls(open_nuscenes(dataroot, version), dataroot, version)

    def check_scenes(self, names: Optional[Sequence[str]]) -> List[str]:
        """The names to convert (all, in table order, for None); ValueError naming unknown ones."""
        if names is None:
            if not self.scenes:
                raise ValueError(f"{self.version} has no scenes")
            return list(self.scenes)
        unknown = [n for n in names if n not in self.scenes]
        if unknown:
            known = list(self.scenes)
            shown = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
            raise ValueError(f"unknown scene(s) {unknown} in {self.version} ({len(known)} scenes: {shown})")
        return list(dict.fromkeys(names))

    def samples(self, scene_name: str) -> List[dict]:
        """The scene's keyframe samples in time order."""
        out, tok = [], self.scenes[scene_name]["first_sample_token"]
        while tok:
            s = self.nusc.get("sample", tok)
            out.append(s)
            tok = s["next"]
        return out

    def channel(self, sd: Mapping) -> Tuple[str, str]:
        """(channel, modality) of a sample_data record."""
        return self._channel_of_cs[sd["calibrated_sensor_token"]]

    def scene_sample_data(self, samples: Sequence[Mapping]) -> Dict[str, List[dict]]:
        """channel -> the scene's sample_data of that channel, by timestamp."""
        out: Dict[str, List[dict]] = {}
        for s in samples:
            for sd in self._by_sample.get(s["token"], ()):
                out.setdefault(self.channel(sd)[0], []).append(sd)
        for v in out.values():
            v.sort(key=lambda r: (r["timestamp"], r["token"]))
        return out

    def calibration(self, sd_token: str) -> dict:
        return self.nusc.get("calibrated_sensor", self.nusc.get("sample_data", sd_token)["calibrated_sensor_token"])


# ---------------------------------------------------------------------------------------------- plan
@dataclass
class _Item:
    t_us: int  # dataset timestamp [us]
    order: int  # _ORDER_*
    kind: str  # lidar | image | tf | gt
    record: dict  # sample_data / ego_pose / sample
    channel: str = ""


@dataclass
class ScenePlan:
    """Everything one scene's bag will hold, in write order (files are read while writing)."""

    scene: str
    samples: List[dict]  # keyframes in time order
    cameras: List[str]  # camera channels written
    items: List[_Item]  # sorted by (time, order)
    skipped: List[SkippedFile]

    @property
    def n_messages(self) -> int:
        # an image item writes CameraInfo + CompressedImage; + 1 for /tf_static
        return 1 + sum(2 if it.kind == "image" else 1 for it in self.items)


def _precheck(path: Path, kind: str) -> Optional[str]:
    """Why a file cannot be written (None when it looks fine): missing, empty, not whole points, not a JPEG.

    Checked while planning, so a skipped file leaves no trace in the bag (no /tf for its ego pose either).
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"bad: {exc.strerror or exc}"
    if size == 0:
        return "bad: empty file"
    if kind == "lidar" and size % LIDAR_POINT_STEP:
        return f"bad: {size} bytes is not a multiple of {LIDAR_POINT_STEP} (x, y, z, intensity, ring float32)"
    if kind == "image":
        try:
            with open(path, "rb") as f:
                head = f.read(2)
        except OSError as exc:
            return f"bad: {exc.strerror or exc}"
        if head != JPEG_MAGIC:
            return "bad: not a JPEG file"
    return None


def plan_scene(source: NuScenesSource, scene_name: str, sweeps: str = "all",
               cameras: Optional[Sequence[str]] = None) -> ScenePlan:
    """The messages of one scene's bag, in time order, with missing / malformed files set aside."""
    if not is_plain_name(scene_name):  # it names the scene's bag folder: never a path out of --out
        raise ValueError(f"scene name {scene_name!r} cannot name a folder (a path separator, or hidden)")
    samples = source.samples(scene_name)
    if not samples:
        raise ValueError(f"scene {scene_name!r} has no samples")
    by_channel = source.scene_sample_data(samples)
    if LIDAR_CHANNEL not in by_channel:
        raise ValueError(f"scene {scene_name!r} has no {LIDAR_CHANNEL} sample_data")
    scene_cams = [ch for ch, sds in by_channel.items() if source.channel(sds[0])[1] == "camera"]
    scene_cams.sort(key=lambda c: (CAMERA_CHANNELS.index(c) if c in CAMERA_CHANNELS else len(CAMERA_CHANNELS), c))
    if cameras is None:
        cams = scene_cams
    else:
        unknown = [c for c in cameras if c not in scene_cams]
        if unknown:
            raise ValueError(f"camera(s) {unknown} not in scene {scene_name!r} (its cameras: {scene_cams})")
        cams = list(dict.fromkeys(cameras))
    items: List[_Item] = []
    skipped: List[SkippedFile] = []
    ego_tokens: Dict[str, None] = {}
    for ch in [LIDAR_CHANNEL, *cams]:
        kind = "lidar" if ch == LIDAR_CHANNEL else "image"
        for sd in by_channel[ch]:
            if sweeps == "keyframes" and not sd["is_key_frame"]:
                continue
            why = _precheck(source.dataroot / sd["filename"], kind)
            if why is not None:
                skipped.append(SkippedFile(ch, sd["token"], sd["filename"], why))
                continue
            items.append(_Item(int(sd["timestamp"]), _ORDER_LIDAR if kind == "lidar" else _ORDER_IMAGE, kind, sd, ch))
            ego_tokens.setdefault(sd["ego_pose_token"], None)
    seen_t = set()
    for tok in ego_tokens:  # one /tf per ego pose; tf2 refuses two transforms at one stamp
        pose = source.nusc.get("ego_pose", tok)
        if int(pose["timestamp"]) in seen_t:
            continue
        seen_t.add(int(pose["timestamp"]))
        items.append(_Item(int(pose["timestamp"]), _ORDER_TF, "tf", pose))
    for s in samples:
        if LIDAR_CHANNEL in s["data"]:
            sd = source.nusc.get("sample_data", s["data"][LIDAR_CHANNEL])
            items.append(_Item(int(sd["timestamp"]), _ORDER_GT, "gt", s, LIDAR_CHANNEL))
    items.sort(key=lambda it: (it.t_us, it.order, it.channel))
    return ScenePlan(scene_name, samples, cams, items, skipped)


# ---------------------------------------------------------------------------------------------- messages
class _Messages:
    """ROS 2 messages as rosbags typestore objects (Kilted definitions)."""

    def __init__(self):
        from rosbags.typesys import Stores, get_typestore

        self.store = get_typestore(Stores.ROS2_KILTED)
        self.T = self.store.types

    def serialize(self, msg) -> memoryview:
        return self.store.serialize_cdr(msg, msg.__msgtype__)

    def header(self, t_ns: int, frame_id: str):
        T = self.T
        stamp = T["builtin_interfaces/msg/Time"](sec=int(t_ns // 1_000_000_000), nanosec=int(t_ns % 1_000_000_000))
        return T["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

    def pointcloud(self, raw: bytes, t_ns: int, frame_id: str):
        """PointCloud2 over the .pcd.bin bytes: x, y, z, intensity, ring FLOAT32, point_step 20."""
        T = self.T
        n = len(raw) // LIDAR_POINT_STEP
        PF = T["sensor_msgs/msg/PointField"]
        fields = [PF(name=name, offset=4 * i, datatype=PF.FLOAT32, count=1) for i, name in enumerate(LIDAR_FIELDS)]
        data = np.frombuffer(raw, dtype=np.uint8)
        xyz = data.view("<f4").reshape(n, len(LIDAR_FIELDS))[:, :3]
        return T["sensor_msgs/msg/PointCloud2"](
            header=self.header(t_ns, frame_id), height=1, width=n, fields=fields, is_bigendian=False,
            point_step=LIDAR_POINT_STEP, row_step=LIDAR_POINT_STEP * n, data=data, is_dense=bool(np.isfinite(xyz).all()),
        )

    def compressed_image(self, jpeg: bytes, t_ns: int, frame_id: str):
        return self.T["sensor_msgs/msg/CompressedImage"](
            header=self.header(t_ns, frame_id), format="jpeg", data=np.frombuffer(jpeg, dtype=np.uint8))

    def camera_info(self, K: np.ndarray, width: int, height: int, t_ns: int, frame_id: str):
        """Pinhole CameraInfo of a rectified image (nuScenes images are undistorted): D = 0, R = I, P = [K | 0]."""
        T = self.T
        K = np.asarray(K, dtype=np.float64).reshape(3, 3)
        P = np.zeros((3, 4))
        P[:, :3] = K
        roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return T["sensor_msgs/msg/CameraInfo"](
            header=self.header(t_ns, frame_id), height=int(height), width=int(width), distortion_model="plumb_bob",
            d=np.zeros(5), k=K.reshape(-1).copy(), r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0, binning_y=0,
            roi=roi,
        )

    def transform(self, record: Mapping, t_ns: int, parent: str, child: str):
        """TransformStamped parent -> child from a nuScenes pose record (rotation w, x, y, z)."""
        T = self.T
        w, x, y, z = (float(v) for v in record["rotation"])
        norm = float(np.sqrt(w * w + x * x + y * y + z * z)) or 1.0
        tx, ty, tz = (float(v) for v in record["translation"])
        tf = T["geometry_msgs/msg/Transform"](
            translation=T["geometry_msgs/msg/Vector3"](x=tx, y=ty, z=tz),
            rotation=T["geometry_msgs/msg/Quaternion"](x=x / norm, y=y / norm, z=z / norm, w=w / norm),
        )
        return T["geometry_msgs/msg/TransformStamped"](header=self.header(t_ns, parent), child_frame_id=child, transform=tf)

    def pose_stamped(self, T: np.ndarray, t_ns: int, frame_id: str):
        """PoseStamped of a 4x4 pose ``T`` (frame_id <- the posed frame)."""
        from scipy.spatial.transform import Rotation

        P = self.T
        qx, qy, qz, qw = (float(v) for v in Rotation.from_matrix(np.asarray(T)[:3, :3]).as_quat())
        pose = P["geometry_msgs/msg/Pose"](
            position=P["geometry_msgs/msg/Point"](x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
            orientation=P["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw))
        return P["geometry_msgs/msg/PoseStamped"](header=self.header(t_ns, frame_id), pose=pose)

    def tf_message(self, transforms: List):
        return self.T["tf2_msgs/msg/TFMessage"](transforms=transforms)

    def _marker(self, t_ns: int, frame_id: str, ns: str, mid: int, mtype: int, action: int, pose=None,
                scale=(1.0, 1.0, 1.0), color=(1.0, 1.0, 1.0, 1.0), text: str = ""):
        T = self.T
        if pose is None:
            pose = T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                                               orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))
        return T["visualization_msgs/msg/Marker"](
            header=self.header(t_ns, frame_id), ns=ns, id=int(mid), type=int(mtype), action=int(action), pose=pose,
            scale=T["geometry_msgs/msg/Vector3"](x=float(scale[0]), y=float(scale[1]), z=float(scale[2])),
            color=T["std_msgs/msg/ColorRGBA"](r=float(color[0]), g=float(color[1]), b=float(color[2]), a=float(color[3])),
            lifetime=T["builtin_interfaces/msg/Duration"](sec=0, nanosec=0), frame_locked=False, points=[], colors=[],
            texture_resource="",
            texture=T["sensor_msgs/msg/CompressedImage"](header=self.header(0, ""), format="", data=np.zeros(0, np.uint8)),
            uv_coordinates=[], text=text, mesh_resource="",
            mesh_file=T["visualization_msgs/msg/MeshFile"](filename="", data=np.zeros(0, np.uint8)),
            mesh_use_embedded_materials=False,
        )

    def gt_markers(self, boxes: Sequence, t_ns: int, frame_id: str, box_alpha: float = 0.35, text_height: float = 0.7):
        """MarkerArray: DELETEALL, then per box a CUBE (ns "gt") and a TEXT_VIEW_FACING label (ns "gt_labels")."""
        from clip2_core.viz import label_color

        T = self.T
        M = T["visualization_msgs/msg/Marker"]
        markers = [self._marker(t_ns, frame_id, "", 0, M.CUBE, M.DELETEALL)]
        for i, b in enumerate(boxes):
            cx, cy, cz = (float(v) for v in b.center)
            l, w, h = (float(v) for v in b.size)
            qx, qy, qz, qw = (float(v) for v in yaw_to_quaternion(float(b.yaw), scalar_first=False))
            rgb = label_color(str(b.label))
            pose = T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=cx, y=cy, z=cz),
                                               orientation=T["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw))
            markers.append(self._marker(t_ns, frame_id, "gt", i, M.CUBE, M.ADD, pose, (l, w, h), (*rgb, box_alpha)))
            label_pose = T["geometry_msgs/msg/Pose"](
                position=T["geometry_msgs/msg/Point"](x=cx, y=cy, z=cz + 0.5 * h + 0.5 * text_height),
                orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))
            markers.append(self._marker(t_ns, frame_id, "gt_labels", i, M.TEXT_VIEW_FACING, M.ADD, label_pose,
                                        (0.0, 0.0, text_height), (*rgb, 1.0), text=str(b.label)))
        return T["visualization_msgs/msg/MarkerArray"](markers=markers)


def _qos(depth: int, transient_local: bool = False):
    """A rosbag2 offered QoS profile: reliable, keep-last ``depth``, volatile or transient local."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(sec=0, nsec=0)  # "unspecified" = the rmw default (infinite)
    return Qos(history=QosHistory.KEEP_LAST, depth=depth, reliability=QosReliability.RELIABLE,
               durability=QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
               deadline=zero, lifespan=zero, liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=zero,
               avoid_ros_namespace_conventions=False)


# ---------------------------------------------------------------------------------------------- writing
def _us_to_ns(t_us: int) -> int:
    return int(t_us) * 1000


def write_scene_bag(source: NuScenesSource, plan: ScenePlan, path: Path, storage: str, gt_by_sample: Mapping[str, list],
                    on_message: Optional[Callable[[str], None]] = None) -> SceneResult:
    """Write one scene's bag into the new folder ``path`` (which must not exist).

    ``gt_by_sample``: sample token -> Box3D list in the LIDAR_TOP frame. ``on_message(topic)``
    runs after every message written (progress; an exception there aborts the bag).
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    t0 = time.perf_counter()
    msgs = _Messages()
    store = msgs.store
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    counts: Dict[str, int] = {}
    skipped = list(plan.skipped)
    nusc = source.nusc
    writer = Writer(path, version=9, storage_plugin=plugin)
    writer.set_custom_data("clip2.scene", plan.scene)
    writer.set_custom_data("clip2.dataset_version", source.version)
    start_us = min(it.t_us for it in plan.items)
    end_us = start_us
    with writer:
        conns = {}

        def connect(topic: str, msgtype: str, depth: int = 10, transient_local: bool = False) -> None:
            conns[topic] = writer.add_connection(topic, msgtype, typestore=store,
                                                 offered_qos_profiles=[_qos(depth, transient_local)])
            counts[topic] = 0

        connect(TF_STATIC_TOPIC, "tf2_msgs/msg/TFMessage", depth=1, transient_local=True)
        connect(TF_TOPIC, "tf2_msgs/msg/TFMessage", depth=100)
        connect(LIDAR_TOPIC, "sensor_msgs/msg/PointCloud2")
        connect(LIDAR_POSE_TOPIC, "geometry_msgs/msg/PoseStamped", depth=20)
        for cam in plan.cameras:
            connect(image_topic(cam), "sensor_msgs/msg/CompressedImage")
            connect(camera_info_topic(cam), "sensor_msgs/msg/CameraInfo")
        connect(GT_MARKERS_TOPIC, "visualization_msgs/msg/MarkerArray")

        def put(topic: str, t_us: int, msg) -> None:
            nonlocal end_us
            writer.write(conns[topic], _us_to_ns(t_us), msgs.serialize(msg))
            counts[topic] += 1
            end_us = max(end_us, t_us)
            if on_message is not None:
                on_message(topic)

        # /tf_static: base_link -> every sensor of the first keyframe, from calibrated_sensor
        statics = []
        for ch, sd_tok in sorted(plan.samples[0]["data"].items()):
            statics.append(msgs.transform(source.calibration(sd_tok), _us_to_ns(start_us), BASE_FRAME, ch))
        put(TF_STATIC_TOPIC, start_us, msgs.tf_message(statics))

        for it in plan.items:
            t_ns = _us_to_ns(it.t_us)
            if it.kind == "tf":
                put(TF_TOPIC, it.t_us, msgs.tf_message([msgs.transform(it.record, t_ns, MAP_FRAME, BASE_FRAME)]))
            elif it.kind == "gt":
                put(GT_MARKERS_TOPIC, it.t_us, msgs.gt_markers(gt_by_sample.get(it.record["token"], []), t_ns,
                                                               LIDAR_CHANNEL))
            else:
                sd = it.record
                try:
                    raw = (source.dataroot / sd["filename"]).read_bytes()
                except OSError as exc:  # vanished or unreadable since planning (then its /tf is already written)
                    skipped.append(SkippedFile(it.channel, sd["token"], sd["filename"],
                                               "missing" if isinstance(exc, FileNotFoundError) else f"bad: {exc}"))
                    log.warning("skipping %s: %s", sd["filename"], exc)
                    continue
                if it.kind == "lidar":
                    if not raw or len(raw) % LIDAR_POINT_STEP:
                        skipped.append(SkippedFile(it.channel, sd["token"], sd["filename"],
                                                   f"bad: {len(raw)} bytes is not a multiple of {LIDAR_POINT_STEP}"))
                        continue
                    T_map_lidar = pose_matrix(nusc.get("ego_pose", sd["ego_pose_token"])) @ pose_matrix(
                        nusc.get("calibrated_sensor", sd["calibrated_sensor_token"]))
                    put(LIDAR_POSE_TOPIC, it.t_us, msgs.pose_stamped(T_map_lidar, t_ns, MAP_FRAME))
                    put(LIDAR_TOPIC, it.t_us, msgs.pointcloud(raw, t_ns, it.channel))
                else:
                    if raw[:2] != JPEG_MAGIC:
                        skipped.append(SkippedFile(it.channel, sd["token"], sd["filename"], "bad: not a JPEG file"))
                        continue
                    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
                    width, height = int(sd.get("width") or 0), int(sd.get("height") or 0)
                    if width <= 0 or height <= 0:
                        width, height = _jpeg_size(raw)
                    put(camera_info_topic(it.channel), it.t_us,
                        msgs.camera_info(cs["camera_intrinsic"], width, height, t_ns, it.channel))
                    put(image_topic(it.channel), it.t_us, msgs.compressed_image(raw, t_ns, it.channel))
    return SceneResult(scene=plan.scene, bag=path.name, messages=counts, sweeps=counts[LIDAR_TOPIC],
                       keyframes=len(plan.samples), start_ns=_us_to_ns(start_us), end_ns=_us_to_ns(end_us),
                       skipped=skipped, seconds=time.perf_counter() - t0)


def _jpeg_size(data: bytes) -> Tuple[int, int]:
    """(width, height) of a JPEG, for sample_data rows without a size."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return int(im.width), int(im.height)


# ---------------------------------------------------------------------------------------------- side files
def gt_document(source: NuScenesSource, plan: ScenePlan, gt_by_sample: Mapping[str, list], class_map: str) -> dict:
    """The scene's ground truth per keyframe, boxes in LIDAR_TOP with the clip2 box convention."""
    nusc = source.nusc
    keyframes = []
    for s in plan.samples:
        if LIDAR_CHANNEL not in s["data"]:
            continue
        sd = nusc.get("sample_data", s["data"][LIDAR_CHANNEL])
        boxes = gt_by_sample.get(s["token"], [])
        keyframes.append({
            "sample_token": s["token"],
            "lidar_token": sd["token"],
            "stamp_ns": _us_to_ns(sd["timestamp"]),
            "stamp": sd["timestamp"] * 1e-6,
            "boxes": [[*(float(v) for v in b.center), *(float(v) for v in b.size), float(b.yaw)] for b in boxes],
            "labels": [str(b.label) for b in boxes],
            "num_lidar_pts": [int(b.attributes.get("num_lidar_pts", -1)) for b in boxes],
            "categories": [str(b.attributes.get("category", "")) for b in boxes],
            "annotation_tokens": [str(b.token) for b in boxes],
            "instance_tokens": [str(b.attributes.get("instance_token", "")) for b in boxes],
        })
    return {
        "format": GT_FORMAT,
        "scene": plan.scene,
        "dataset_version": source.version,
        "frame_id": LIDAR_CHANNEL,
        "box_convention": "[x, y, z, l, w, h, yaw]: geometric centre [m], size with l along the heading [m], "
                          "yaw about +z counter-clockwise from +x [rad], in frame_id",
        "class_map": class_map,
        "keyframes": keyframes,
    }


def lidar_to_camera(source: NuScenesSource, sample: Mapping, camera: str) -> np.ndarray:
    """(4, 4) LIDAR_TOP -> camera optical frame through the ego frame (calibrated_sensor only, no ego motion)."""
    T_ego_lidar = pose_matrix(source.calibration(sample["data"][LIDAR_CHANNEL]))
    T_ego_cam = pose_matrix(source.calibration(sample["data"][camera]))
    return invert_transform(T_ego_cam) @ T_ego_lidar


def scene_parameters(source: NuScenesSource, plan: ScenePlan) -> Dict[str, Any]:
    """Node parameters (nested ``ros__parameters``) for a bag: config/lidar_openvocab.param.yaml's
    defaults with the bag's LiDAR topic, cameras (T_lidar_to_cam at the scene's first keyframe) and
    ``tf_fixed_frame: map`` (the bag's /tf holds map -> base_link)."""
    import copy

    from clip2_ros.params import default_param_file, load_param_file

    nested = copy.deepcopy(load_param_file(default_param_file()))
    nested["lidar"]["topic"] = LIDAR_TOPIC
    nested["lidar"]["intensity_max"] = 255.0
    nested["tf_fixed_frame"] = MAP_FRAME  # the bag's /tf is map -> base_link (the nuScenes ego poses)
    nested["accumulate"]["pose_topic"] = LIDAR_POSE_TOPIC  # for accumulate.sweeps > 1 without tf2
    first = next((s for s in plan.samples if LIDAR_CHANNEL in s["data"]), plan.samples[0])
    cams = [c for c in plan.cameras if c in first["data"]]
    if cams:
        cameras: Dict[str, Any] = {"enabled": True, "names": cams}
        for cam in cams:
            T = lidar_to_camera(source, first, cam)
            cameras[cam] = {"image_topic": image_topic(cam), "compressed": True, "camera_info_topic": camera_info_topic(cam),
                            "frame_id": cam, "T_lidar_to_cam": [round(float(v), 9) + 0.0 for v in T.reshape(-1)]}
        nested["cameras"] = cameras
    else:  # LiDAR-only bag: keep the default camera group, switched off
        nested["cameras"]["enabled"] = False
    for key in ("checkpoint", "onnx"):
        nested["model"][key] = ""
    return nested


def param_yaml(nested: Mapping[str, Any], scene: str, version: str) -> str:
    """A ROS 2 parameter file (``/**: ros__parameters: ...``) for the node: groups as blocks, lists inline."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    _Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))
    head = (f"# Parameters of lidar_openvocab_node for the bag of {scene} ({version}), written by clip2 bag from-nuscenes.\n"
            "# Defaults of config/lidar_openvocab.param.yaml except lidar.topic and the cameras; set model.checkpoint or\n"
            "# model.onnx. T_lidar_to_cam: LIDAR_TOP -> camera optical frame via the ego frame (calibrated_sensor),\n"
            "# used when tf2 is not available.\n")
    body = yaml.dump({"/**": {"ros__parameters": dict(nested)}}, Dumper=_Dumper, sort_keys=False,
                     default_flow_style=False, width=120)
    return head + body


# ---------------------------------------------------------------------------------------------- driver
def _is_our_output(path: Path) -> bool:
    try:
        return json.loads((path / SUMMARY_FILE_NAME).read_text()).get("format") == SUMMARY_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _check_out(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    if not any(out.iterdir()):
        return
    if not _is_our_output(out):
        raise ValueError(f"{out} exists and is not an output of clip2 bag from-nuscenes: choose another --out")
    if not overwrite:
        raise ValueError(f"{out} already holds converted bags: pass --overwrite to replace them, or choose another --out")


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def convert(cfg: BagConfig, progress: bool = True, on_message: Optional[Callable[[str], None]] = None) -> dict:
    """Convert the selected scenes into ``cfg.out`` (see the module docstring); returns the summary dict.

    ``on_message(topic)`` runs after every message written. On any exception (KeyboardInterrupt
    included) the partial output is removed and the exception propagates; ``cfg.out`` is only
    created, by one rename, once everything is written.
    """
    from tqdm import tqdm

    from clip2_core.datasets.nuscenes import NuScenesReader
    from clip2_ros.params import validate

    cfg.check()
    out = Path(cfg.out)
    _check_out(out, cfg.overwrite)
    t0 = time.perf_counter()
    source = NuScenesSource.open(Path(cfg.dataroot), cfg.version)
    names = source.check_scenes(cfg.scenes)
    plans = [plan_scene(source, n, cfg.sweeps, cfg.cameras) for n in names]
    reader = NuScenesReader(source.dataroot, cfg.version, scenes=names, class_map=cfg.class_map, cameras=(),
                            load_images=False, nusc=source.nusc)
    staging = partial_path(out)
    if staging.exists():
        log.warning("removing %s left by an interrupted conversion", staging)
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    results: List[SceneResult] = []
    bar = tqdm(total=sum(p.n_messages for p in plans), desc="bag", unit="msg", disable=not progress)
    sweeps_done = 0

    def tick(topic: str) -> None:
        nonlocal sweeps_done
        bar.update(1)
        if topic == LIDAR_TOPIC:
            sweeps_done += 1
            bar.set_postfix(sweeps=sweeps_done, refresh=False)
        if on_message is not None:
            on_message(topic)

    try:
        for plan in plans:
            bar.set_description(plan.scene)
            gt = {s["token"]: reader.gt_boxes(s["data"][LIDAR_CHANNEL]) for s in plan.samples if LIDAR_CHANNEL in s["data"]}
            bag_dir = staging / plan.scene
            result = write_scene_bag(source, plan, bag_dir, cfg.storage, gt, on_message=tick)
            (bag_dir / GT_FILE_NAME).write_text(json.dumps(gt_document(source, plan, gt, cfg.class_map)))
            nested = scene_parameters(source, plan)
            validate(nested, require_model=False)
            (bag_dir / PARAMS_FILE_NAME).write_text(param_yaml(nested, plan.scene, cfg.version))
            results.append(result)
        bar.close()
        seconds = time.perf_counter() - t0
        summary = _summary(cfg, results, seconds)
        (staging / SUMMARY_FILE_NAME).write_text(json.dumps(summary, indent=1))
        _publish(staging, out)
    except BaseException:
        bar.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary


def _publish(staging: Path, out: Path) -> None:
    """Move the finished output into place with renames only (an earlier output is replaced whole)."""
    old = out.with_name(out.name + ".replaced")
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        if any(out.iterdir()):
            os.replace(out, old)  # checked by _check_out: our own earlier output, --overwrite given
        else:
            out.rmdir()
    os.replace(staging, out)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def _summary(cfg: BagConfig, results: List[SceneResult], seconds: float) -> dict:
    skipped = [s for r in results for s in r.skipped]
    by_reason: Dict[str, int] = {}
    for s in skipped:
        key = "missing" if s.reason == "missing" else "bad"
        by_reason[key] = by_reason.get(key, 0) + 1
    sweeps = sum(r.sweeps for r in results)
    messages = sum(sum(r.messages.values()) for r in results)
    writing = sum(r.seconds for r in results)
    return {
        "format": SUMMARY_FORMAT,
        "dataroot": str(Path(cfg.dataroot).resolve()),  # where the tables are (clip2 eval replay scores against them)
        "dataset_version": cfg.version,
        "storage": cfg.storage,
        "sweeps_mode": cfg.sweeps,
        "class_map": cfg.class_map,
        "scenes": [asdict(r) for r in results],
        "totals": {"scenes": len(results), "messages": messages, "sweeps": sweeps,
                   "skipped_missing": by_reason.get("missing", 0), "skipped_bad": by_reason.get("bad", 0)},
        "seconds": round(seconds, 3),  # everything: devkit import and table loading, planning, writing
        "sweeps_per_second": round(sweeps / seconds, 2) if seconds > 0 else None,
        "writing_sweeps_per_second": round(sweeps / writing, 2) if writing > 0 else None,  # bag writing only
    }


def format_summary(summary: Mapping[str, Any], out: Path) -> str:
    """Lines the CLI prints at the end."""
    tot = summary["totals"]
    lines = [f"wrote {tot['scenes']} bag(s) ({summary['storage']}, sweeps: {summary['sweeps_mode']}) to {out}: "
             f"{tot['messages']} messages, {tot['sweeps']} sweeps in {summary['seconds']:.1f} s "
             f"({summary['sweeps_per_second']} sweeps/s; writing alone {summary['writing_sweeps_per_second']} sweeps/s)"]
    for r in summary["scenes"]:
        m = r["messages"]
        images = sum(n for t, n in m.items() if t.endswith("/image_rect_compressed"))
        cams = sum(1 for t in m if t.endswith("/image_rect_compressed"))
        lines.append(f"  {r['bag']}: {m[LIDAR_TOPIC]} sweeps, {images} images ({cams} camera(s)), {m[TF_TOPIC]} /tf, "
                     f"{m[GT_MARKERS_TOPIC]} keyframes of GT, {len(r['skipped'])} files skipped")
    lines.append(f"skipped files: {tot['skipped_missing']} missing, {tot['skipped_bad']} bad"
                 + (f" (listed in {out / SUMMARY_FILE_NAME})" if tot["skipped_missing"] + tot["skipped_bad"] else ""))
    lines.append(f"play one: ros2 bag play {out / summary['scenes'][0]['bag']}" if summary["scenes"] else "")
    return "\n".join(x for x in lines if x)
