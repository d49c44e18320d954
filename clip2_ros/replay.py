"""``clip2 eval replay``: a logged drive through the live node, scored like a driving team would.

For each scene bag (``clip2 bag from-nuscenes`` output, or any rosbag2 with its ``gt.json``):

1. start ``lidar_openvocab_node`` as its own process with the scene's parameters (a private ROS
   domain and localhost discovery unless told otherwise, so nothing else on the network feeds it);
2. play the bag through DDS from this process (:class:`clip2_ros.player.BagPlayer`, original timing
   or ``rate``), recording everything the node publishes into ``out/outputs/<scene>`` (a rosbag2
   folder, MCAP) and noting when each sweep was published and each result arrived;
3. sample the node's CPU time and memory from ``/proc`` while it runs; stop it; collect its counters
   (``~/debug/stats``).

Then score (pure functions of :mod:`clip2_core.eval`): the keyframes' detections become a nuScenes
submission that nuscenes-devkit's ``DetectionEval`` scores on the dataset's tables
(:mod:`clip2_core.eval.devkit`), open-vocabulary metrics against ``gt.json``
(:func:`clip2_core.eval.detection.open_vocab_metrics`), latency percentiles, transport counts
(played / received / processed / lost / skipped while busy). With ``check_offline`` the same
sweeps also go through :class:`clip2_core.pipeline.Pipeline` directly and each frame's detections
are compared with the node's. The report is written by :mod:`clip2_ros.replay_report`.
"""
from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

log = logging.getLogger("clip2.replay")

GT_FILE = "gt.json"
PARAMS_FILE = "lidar_openvocab.param.yaml"
REPORT_FORMAT = "clip2.replay_report/v1"
OUTPUT_TOPICS = {  # node output (relative to the node name) -> message type
    "detections/json": "std_msgs/msg/String",
    "detections/markers": "visualization_msgs/msg/MarkerArray",
    "debug/processing_time_ms": "std_msgs/msg/Float64",
    "debug/stage_times_ms": "std_msgs/msg/String",
    "debug/stats": "std_msgs/msg/String",
}


class ReplayError(RuntimeError):
    """The node could not be started or stopped, or nothing could be replayed (a one-line CLI error)."""

    user_error = True


@dataclass
class ReplayConfig:
    bag: Path  # one scene's bag folder, or a folder of them (clip2 bag from-nuscenes --out)
    out: Path  # report folder
    params: Optional[Path] = None  # node parameter file (default: each scene's lidar_openvocab.param.yaml)
    overrides: Mapping[str, Any] = field(default_factory=dict)  # dotted parameter name -> value (--set)
    rate: float = 1.0  # playback speed factor
    scenes: Optional[Sequence[str]] = None  # only these scene bags
    dataroot: Optional[Path] = None  # nuScenes dataroot for the devkit (default: recorded by the converter)
    label_map: Optional[Path] = None  # JSON {vocabulary word: nuScenes class or null}
    min_points: int = 10  # objects with fewer LiDAR points do not count for recall
    check_offline: bool = False  # also run Pipeline directly on the processed sweeps and compare
    domain_id: Optional[int] = None  # ROS domain of the replay (default: a private random one)
    startup_timeout: float = 180.0  # [s] for the node to load its model and subscribe
    drain_timeout: float = 30.0  # [s] after the last sweep, waiting for the node's last results
    lockstep: bool = False  # publish each sweep only once the node answered the previous one
    lockstep_timeout: float = 20.0  # [s] the most a lockstep replay waits for one answer
    progress: bool = True

    def check(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"--rate must be > 0, got {self.rate}")
        if not self.lockstep_timeout > 0:
            raise ValueError(f"lockstep_timeout must be > 0, got {self.lockstep_timeout}")
        if self.params is not None and not Path(self.params).is_file():
            raise FileNotFoundError(f"parameter file {self.params} does not exist")
        if not Path(self.bag).exists():
            raise FileNotFoundError(f"bag {self.bag} does not exist")


# ---------------------------------------------------------------------------------------------- inputs
@dataclass
class SceneInput:
    scene: str
    bag: Path
    gt: dict  # gt.json
    params: Dict[str, Any]  # nested node parameters (ros__parameters)
    params_source: Path


def scene_bags(bag: Path, scenes: Optional[Sequence[str]] = None) -> List[Path]:
    """The bag folders under ``bag`` (itself when it holds metadata.yaml), filtered by scene name."""
    bag = Path(bag)
    if (bag / "metadata.yaml").is_file():
        found = [bag]
    else:
        found = sorted(p.parent for p in bag.glob("*/metadata.yaml"))
    if not found:
        raise FileNotFoundError(f"{bag} holds no rosbag2 folder (no metadata.yaml in it or its sub-folders)")
    if scenes:
        names = {p.name: p for p in found}
        missing = sorted(set(scenes) - set(names))
        if missing:
            raise ValueError(f"scene bag(s) {missing} not in {bag}; there are {sorted(names)}")
        found = [names[s] for s in scenes]
    return found


def _set_dotted(nested: Dict[str, Any], name: str, value: Any) -> None:
    node = nested
    parts = name.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ValueError(f"--set {name}: {p} is not a parameter group")
    node[parts[-1]] = value


def parse_override(text: str) -> Tuple[str, Any]:
    """``name=value`` with the value parsed as YAML (``model.onnx=m.onnx``, ``ensemble=false``)."""
    import yaml

    if "=" not in text:
        raise ValueError(f"--set wants NAME=VALUE, got {text!r}")
    name, raw = text.split("=", 1)
    return name.strip(), yaml.safe_load(raw) if raw.strip() else ""


def bag_topics(bag: Path) -> Dict[str, str]:
    """topic -> message type of a rosbag2 folder."""
    from rosbags.rosbag2 import Reader

    with Reader(bag) as r:
        return {c.topic: c.msgtype for c in r.connections}


def load_scene(bag: Path, cfg: ReplayConfig) -> SceneInput:
    """The bag, its ground truth and the node parameters for it, checked against each other."""
    import copy

    from clip2_ros import params as P

    gt_file = bag / GT_FILE
    if not gt_file.is_file():
        raise FileNotFoundError(f"{bag} has no {GT_FILE} (ground truth; written by clip2 bag from-nuscenes)")
    gt = json.loads(gt_file.read_text())
    src = Path(cfg.params) if cfg.params is not None else bag / PARAMS_FILE
    if not src.is_file():
        raise FileNotFoundError(f"no node parameter file: give --params (no {PARAMS_FILE} in {bag})")
    nested = copy.deepcopy(P.load_param_file(src))
    for name, value in dict(cfg.overrides).items():
        _set_dotted(nested, name, value)
    try:
        P.validate(nested)
    except P.ParameterError as exc:
        raise ValueError(f"{src}: {exc}") from None
    topics = bag_topics(bag)
    lidar = nested["lidar"]["topic"]
    if lidar not in topics:
        raise ValueError(f"{bag.name}: the bag has no LiDAR topic {lidar} (lidar.topic); its topics: {sorted(topics)}")
    cams = nested.get("cameras", {})
    if cams.get("enabled", True):
        for name in cams.get("names", []) or []:
            group = cams.get(name, {})
            for key in ("image_topic", "camera_info_topic"):
                topic = group.get(key)
                if topic not in topics:
                    raise ValueError(f"{src}: camera {name}'s {key} {topic} is not in the bag {bag.name} "
                                     f"(set cameras.enabled: false for a LiDAR-only replay)")
    return SceneInput(scene=bag.name, bag=bag, gt=gt, params=nested, params_source=src)


def write_params(nested: Mapping[str, Any], path: Path) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": dict(nested)}}, sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------------- node process
class ProcessMonitor:
    """CPU time and memory of a process from /proc, sampled in a thread (Linux)."""

    def __init__(self, pid: int, period: float = 0.5):
        self.pid = pid
        self.period = period
        self.samples: List[Tuple[float, float, float]] = []  # (monotonic, cpu seconds, rss MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clip2-monitor", daemon=True)
        self._tick = os.sysconf("SC_CLK_TCK")

    def read(self) -> Optional[Tuple[float, float, float]]:
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            cpu = (int(fields[11]) + int(fields[12])) / self._tick  # utime + stime
            rss = 0.0
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024.0
            return time.monotonic(), cpu, rss
        except (OSError, ValueError, IndexError):
            return None

    def peak_rss_mb(self) -> Optional[float]:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
        except OSError:
            return None
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            s = self.read()
            if s is not None:
                self.samples.append(s)
            self._stop.wait(self.period)

    def start(self) -> "ProcessMonitor":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)

    def summary(self, t0: float, t1: float) -> Dict[str, Optional[float]]:
        """CPU cores used on average between monotonic ``t0`` and ``t1``; RSS then."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        out: Dict[str, Optional[float]] = {"cpu_cores_mean": None, "rss_mb_start": None, "rss_mb_end": None,
                                           "rss_mb_max": None}
        if len(inside) >= 2:
            (a, ca, ra), (b, cb, rb) = inside[0], inside[-1]
            out.update(cpu_cores_mean=(cb - ca) / (b - a) if b > a else None, rss_mb_start=ra, rss_mb_end=rb,
                       rss_mb_max=max(s[2] for s in inside))
        return out


def node_command(params_file: Path, node_name: str, log_level: str = "warn") -> List[str]:
    return [sys.executable, "-m", "clip2_ros.node", "--ros-args", "--params-file", str(params_file),
            "-r", f"__node:={node_name}", "--log-level", log_level]


def node_env(domain_id: int) -> Dict[str, str]:
    """The node's environment: ours, with the replay's domain, localhost discovery and the large-data DDS profile."""
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("PYTHONUNBUFFERED", "1")
    try:
        from clip2_ros.dds import large_data_env

        env = large_data_env(env)
    except FileNotFoundError:  # no shipped profile (warned about by run_replay)
        pass
    return env


# ---------------------------------------------------------------------------------------------- recording
@dataclass
class SceneRecord:
    scene: str
    node_name: str
    docs: List[dict] = field(default_factory=list)  # the node's per-frame JSON documents
    recv: List[float] = field(default_factory=list)  # monotonic receipt time of each doc
    published: Dict[int, float] = field(default_factory=dict)  # LiDAR stamp [us] -> monotonic publish time
    played: Dict[str, int] = field(default_factory=dict)  # topic -> messages published by the player
    node_stats: Dict[str, int] = field(default_factory=dict)
    resources: Dict[str, Optional[float]] = field(default_factory=dict)
    play_seconds: float = 0.0
    bag_seconds: float = 0.0
    startup_seconds: float = 0.0
    lockstep_waits: int = 0  # sweeps held back until the node answered the previous one
    lockstep_timeouts: int = 0  # of those, how many waited the whole lockstep_timeout in vain
    lockstep_held_seconds: float = 0.0
    node_log: str = ""
    outputs_bag: Optional[str] = None


class _Recorder:
    """Subscribes raw to the node's outputs; keeps the documents and writes everything into a rosbag2."""

    def __init__(self, node, node_name: str, bag_path: Path, rec: SceneRecord, bag_time):
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from rclpy.serialization import deserialize_message
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        from clip2_ros.player import message_class

        self.rec = rec
        self._lock = threading.Lock()
        self._deserialize = deserialize_message
        self._bag_time = bag_time
        self._writer = Writer(bag_path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        store = get_typestore(Stores.ROS2_KILTED)
        self._conns = {}
        self.subs = []
        for rel, msgtype in OUTPUT_TOPICS.items():
            topic = f"/{node_name}/{rel}"
            cls = message_class(msgtype)
            self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=store)
            latched = rel == "debug/stats"
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1 if latched else 200,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
            self.subs.append(node.create_subscription(cls, topic, self._callback(topic, rel, cls), qos, raw=True))
        self.json_topic = f"/{node_name}/detections/json"

    def _callback(self, topic: str, rel: str, cls):
        from std_msgs.msg import String

        def cb(raw: bytes) -> None:
            t = time.monotonic()
            with self._lock:
                self._writer.write(self._conns[topic], self._bag_time(t), bytes(raw))
                if rel == "detections/json":
                    self.rec.docs.append(json.loads(self._deserialize(raw, String).data))
                    self.rec.recv.append(t)
                elif rel == "debug/stats":
                    self.rec.node_stats = json.loads(self._deserialize(raw, String).data)

        return cb

    def close(self) -> None:
        with self._lock:
            self._writer.close()


def _wait(cond, timeout: float, proc: Optional[subprocess.Popen] = None, step: float = 0.05) -> bool:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if cond():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(step)
    return bool(cond())


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def replay_scene(scene: SceneInput, cfg: ReplayConfig, domain_id: int, work: Path) -> SceneRecord:
    """Start the node for one scene, play its bag, record, stop the node."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    from clip2_ros.player import BagPlayer, PlayConfig

    node_name = f"clip2_replay_{os.getpid()}_{scene.scene.replace('-', '_')}"
    rec = SceneRecord(scene=scene.scene, node_name=node_name)
    params_file = write_params(scene.params, work / "params" / f"{scene.scene}.param.yaml")
    log_file = work / "logs" / f"node_{scene.scene}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    rec.node_log = str(log_file)
    outputs = work / "outputs" / scene.scene
    if outputs.exists():
        import shutil

        shutil.rmtree(outputs)
    outputs.parent.mkdir(parents=True, exist_ok=True)

    t_start = time.monotonic()
    with open(log_file, "w") as logf:
        proc = subprocess.Popen(node_command(params_file, node_name), env=node_env(domain_id), stdout=logf,
                                stderr=subprocess.STDOUT, start_new_session=True)
    monitor = ProcessMonitor(proc.pid).start()
    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    executor = SingleThreadedExecutor(context=ctx)
    recorder_node = rclpy.create_node(f"clip2_replay_recorder_{os.getpid()}", context=ctx)
    player = None
    spin = None
    lidar_topic = scene.params["lidar"]["topic"]
    first_ns = [None]
    t_play0 = [None]

    def bag_time(t_mono: float) -> int:  # a receipt time on the bag's timeline
        if first_ns[0] is None or t_play0[0] is None:
            return 0
        return int(first_ns[0] + (t_mono - t_play0[0] - rec.lockstep_held_seconds) * cfg.rate * 1e9)

    try:
        recorder = _Recorder(recorder_node, node_name, outputs, rec, bag_time)
        rec.outputs_bag = str(outputs)
        executor.add_node(recorder_node)
        spin = threading.Thread(target=executor.spin, name="clip2-replay-spin", daemon=True)
        spin.start()
        player = BagPlayer(PlayConfig(bag=scene.bag, rate=cfg.rate, start_delay=0.0), context=ctx,
                           node_name=f"clip2_replay_player_{os.getpid()}")
        lidar_pub = player.publisher(lidar_topic)
        json_sub = next(s for s in recorder.subs if s.topic_name == recorder.json_topic)

        def ready() -> bool:
            return lidar_pub.get_subscription_count() > 0 and recorder_node.count_publishers(json_sub.topic_name) > 0

        if not _wait(ready, cfg.startup_timeout, proc):
            code = proc.poll()
            why = f"exited with code {code}" if code is not None else f"not subscribed after {cfg.startup_timeout:.0f} s"
            raise ReplayError(f"the node for {scene.scene} {why}; its log ({log_file}):\n{_tail(log_file)}")
        time.sleep(0.5)  # let every topic of the player match (cameras, tf) before the first sweep
        rec.startup_seconds = time.monotonic() - t_start

        def on_publish(topic: str, t_ns: int, t_mono: float) -> None:
            if first_ns[0] is None:
                first_ns[0], t_play0[0] = t_ns, t_mono
            if topic == lidar_topic:
                rec.published[int(round(t_ns / 1000))] = t_mono

        bar = None
        if cfg.progress:
            from tqdm import tqdm

            n_sweeps = _count_messages(scene.bag, lidar_topic)
            bar = tqdm(total=n_sweeps, desc=f"replay {scene.scene}", unit="sweep", leave=False)
            inner = on_publish

            def on_publish(topic, t_ns, t_mono):  # noqa: F811 - the same hook, with a progress bar
                inner(topic, t_ns, t_mono)
                if topic == lidar_topic:
                    bar.update(1)
                    bar.set_postfix(results=len(rec.docs), refresh=False)

        before_publish = None
        if cfg.lockstep:
            answered = set()
            n_seen = [0]

            def answered_stamp(us: int) -> bool:
                docs = rec.docs
                for d in docs[n_seen[0]:]:
                    answered.add(_us(d["stamp"]))
                n_seen[0] = len(docs)
                return us in answered

            def before_publish(topic: str, t_ns: int) -> None:
                if topic != lidar_topic or not rec.published:
                    return
                prev = max(rec.published)
                if answered_stamp(prev):
                    return
                t_hold = time.monotonic()
                rec.lockstep_waits += 1
                if not _wait(lambda: answered_stamp(prev), cfg.lockstep_timeout, proc, step=0.002):
                    rec.lockstep_timeouts += 1
                rec.lockstep_held_seconds += time.monotonic() - t_hold

        t0 = time.monotonic()
        stats = player.play(on_publish=on_publish, before_publish=before_publish)
        t1 = time.monotonic()
        if bar is not None:
            bar.close()
        rec.played, rec.play_seconds, rec.bag_seconds = dict(stats.published), t1 - t0, stats.bag_seconds
        last_us = max(rec.published) if rec.published else None

        def drained() -> bool:
            if not rec.docs:
                return time.monotonic() - t1 > 3.0
            if last_us is not None and int(round(rec.docs[-1]["stamp"] * 1e6)) == last_us:
                return True
            return time.monotonic() - rec.recv[-1] > 3.0 and time.monotonic() - t1 > 3.0

        _wait(drained, cfg.drain_timeout, proc)
        rec.resources = monitor.summary(t0, time.monotonic())
        rec.resources["rss_mb_peak"] = monitor.peak_rss_mb()
        rec.resources["cpu_seconds_startup"] = next((s[1] for s in monitor.samples if s[0] >= t0), None)
        _wait(lambda: rec.node_stats.get("frames_published", -1) >= len(rec.docs), 3.0, proc)  # stats: 1 Hz
    finally:
        monitor.stop()
        _stop_process(proc)
        if player is not None:
            player.destroy_node()
        executor.shutdown()
        if spin is not None:
            spin.join(timeout=2.0)
        try:
            recorder.close()
        except NameError:
            pass
        recorder_node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    code = proc.returncode
    if code not in (0, -signal.SIGINT, None):
        log.warning("the node for %s exited with code %s (log: %s)", scene.scene, code, log_file)
    return rec


def _count_messages(bag: Path, topic: str) -> int:
    from rosbags.rosbag2 import Reader

    with Reader(bag) as r:
        return sum(c.msgcount for c in r.connections if c.topic == topic)


def _stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5.0)


# ---------------------------------------------------------------------------------------------- scoring
def _us(stamp_s: float) -> int:
    return int(round(float(stamp_s) * 1e6))


def scored_frames(scene: SceneInput, rec: SceneRecord):
    """One :class:`~clip2_core.eval.detection.ScoredFrame` per keyframe of ``gt.json`` (the node's
    detections for that sweep, or none when it published nothing for it)."""
    from clip2_core.eval.detection import ScoredFrame

    by_stamp = {_us(d["stamp"]): d for d in rec.docs}
    frames = []
    for kf in scene.gt["keyframes"]:
        doc = by_stamp.get(int(round(kf["stamp_ns"] / 1000)))
        dets = doc["detections"] if doc else []
        frames.append(ScoredFrame(
            stamp=kf["stamp"], gt_boxes=np.asarray(kf["boxes"], dtype=np.float64).reshape(-1, 7),
            gt_labels=kf["labels"], gt_points=kf["num_lidar_pts"],
            det_boxes=np.array([[*d["box"]["center"], *d["box"]["size"], d["box"]["yaw"]] for d in dets]).reshape(-1, 7),
            det_labels=[d["label"] for d in dets], det_scores=np.array([d["score"] for d in dets]),
            processed=doc is not None, sample_token=kf["sample_token"],
        ))
    return frames


def transport_counts(rec: SceneRecord, lidar_topic: str) -> Dict[str, int]:
    played = int(rec.played.get(lidar_topic, 0))
    received = int(rec.node_stats.get("clouds_received", len(rec.docs)))
    lost = int(rec.node_stats.get("messages_lost", 0))
    processed = len({_us(d["stamp"]) for d in rec.docs})
    return {"played": played, "received": received, "processed": processed, "lost_in_transport": lost,
            "skipped_while_busy": max(0, played - received - lost),
            "not_received": max(0, played - received)}


def latencies(rec: SceneRecord) -> Dict[str, List[float]]:
    """Per result: the node's own time from taking the sweep to publishing [ms], and end to end
    from the player publishing the sweep to the result arriving here [ms]."""
    node_ms, e2e_ms, t_rel = [], [], []
    t_first = min(rec.published.values()) if rec.published else 0.0
    for doc, t_recv in zip(rec.docs, rec.recv):
        node_ms.append(float(doc.get("timings_ms", {}).get("total", float("nan"))))
        t_pub = rec.published.get(_us(doc["stamp"]))
        e2e_ms.append((t_recv - t_pub) * 1e3 if t_pub is not None else float("nan"))
        t_rel.append(t_recv - t_first)
    return {"node_ms": node_ms, "end_to_end_ms": e2e_ms, "t_s": t_rel}


def stage_medians(docs: Sequence[dict]) -> Dict[str, float]:
    stages: Dict[str, List[float]] = {}
    for d in docs:
        for k, v in d.get("timings_ms", {}).items():
            stages.setdefault(k, []).append(float(v))
    return {k: float(np.median(v)) for k, v in stages.items()}


# ---------------------------------------------------------------------------------------------- offline check
def offline_check(scene: SceneInput, rec: SceneRecord, max_frames: Optional[int] = None,
                  atol: float = 1e-3) -> Dict[str, Any]:
    """The sweeps the node processed, through :class:`~clip2_core.pipeline.Pipeline` directly, built
    from the bag's messages exactly as the node builds its frames (``cloud_to_frame``,
    ``camera_view``) with the camera images the node says it used (``cameras`` of its JSON);
    each frame's detections compared with the node's (labels equal, box centres and sizes within
    ``atol`` m, scores within ``atol``)."""
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

    from clip2_ros import params as P
    from clip2_ros.conversions import stamp_to_seconds
    from clip2_ros.node import build_pipeline, camera_view, cloud_to_frame, keep_range_of

    params = P.node_params(scene.params)
    pipeline = build_pipeline(params.pipeline)
    keep_range = keep_range_of(params)
    online = {_us(d["stamp"]): d for d in rec.docs}
    cams = {c.name: c for c in params.cameras}
    wanted = {(name, _us(t)) for d in rec.docs for name, t in (d.get("cameras") or {}).items()}
    by_topic = {}
    for c in params.cameras:
        by_topic[c.image_topic] = ("image", c)
        by_topic[c.camera_info_topic] = ("info", c)
    images: Dict[Tuple[str, int], Tuple[Any, Any]] = {}  # (camera, stamp us) -> (image msg, camera info)
    checked = identical = 0
    mismatches: List[Dict[str, Any]] = []
    with Reader(scene.bag) as reader:
        infos: Dict[str, Any] = {}
        conns = [c for c in reader.connections if c.topic in by_topic] if wanted else []
        for conn, t_ns, raw in reader.messages(connections=conns):
            what, cam = by_topic[conn.topic]
            if what == "info":
                infos[cam.name] = raw
            elif (cam.name, int(round(t_ns / 1000))) in wanted and cam.name in infos:
                images[(cam.name, int(round(t_ns / 1000)))] = (raw, infos[cam.name])
        conns = [c for c in reader.connections if c.topic == params.lidar_topic]
        for _, _, raw in reader.messages(connections=conns):
            msg = deserialize_message(bytes(raw), PointCloud2)
            t_us = _us(stamp_to_seconds(msg.header.stamp))
            if t_us not in online:
                continue
            if max_frames is not None and checked >= max_frames:
                break
            frame, _ = cloud_to_frame(msg, params, keep_range)
            views = {}
            for name, t_img in (online[t_us].get("cameras") or {}).items():
                got = images.get((name, _us(t_img)))
                if got is None or name not in cams:
                    continue
                cam = cams[name]
                img = deserialize_message(bytes(got[0]), CompressedImage if cam.compressed else Image)
                views[name] = camera_view(cam, img, deserialize_message(bytes(got[1]), CameraInfo), cam.T_lidar_to_cam,
                                          stamp_to_seconds(img.header.stamp))
            frame.cameras = views
            dets = pipeline.process(frame).detections if frame.points.shape[0] else []
            checked += 1
            diff = _compare(dets, online[t_us]["detections"], atol)
            if diff is None:
                identical += 1
            elif len(mismatches) < 20:
                mismatches.append({"stamp": frame.stamp, "why": diff})
    return {"frames_checked": checked, "frames_identical": identical, "atol": atol, "mismatches": mismatches}


def _compare(offline, online: Sequence[dict], atol: float) -> Optional[str]:
    """None when both lists hold the same detections (paired by nearest box centre), else what differs."""
    from clip2_core.eval.detection import greedy_match

    if len(offline) != len(online):
        return f"{len(offline)} detections offline, {len(online)} online"
    a = np.array([d.box.center for d in offline]).reshape(-1, 3)
    b = np.array([d["box"]["center"] for d in online]).reshape(-1, 3)
    pairs = greedy_match(a[:, :2], b[:, :2], max_dist=1e9)
    for i, j in pairs:
        x, y = offline[i], online[j]
        if not (np.allclose(x.box.center, y["box"]["center"], atol=atol) and np.allclose(x.box.size, y["box"]["size"], atol=atol)):
            return f"box {np.round(x.box.center, 3).tolist()} offline, {y['box']['center']} online"
        if x.label != y["label"]:
            return f"label {x.label!r} offline, {y['label']!r} online"
        if abs(float(x.score) - float(y["score"])) > atol:
            return f"score {float(x.score):.4f} offline, {float(y['score']):.4f} online"
    return None


# ---------------------------------------------------------------------------------------------- driver
def run_replay(cfg: ReplayConfig) -> Dict[str, Any]:
    """Replay every scene bag, score, write the report (see :mod:`clip2_ros.replay_report`); returns report.json's dict."""
    from clip2_core.eval.detection import (latency_stats, load_label_map, nuscenes_submission, open_vocab_metrics,
                                           operating_point, score_curve)
    from clip2_core.eval.devkit import dataroot_of_bag, lidar_to_global, load_nusc_view, run_detection_eval
    from clip2_ros.replay_report import write_report

    cfg.check()
    try:  # the player in this process sends clouds over 0.5 MB: the large-data DDS profile (docs/dds.md)
        from clip2_ros.dds import apply_large_data_profile

        apply_large_data_profile()
    except FileNotFoundError as exc:
        log.warning("%s: clouds over 0.5 MB may not reach the node", exc)
    label_map = load_label_map(cfg.label_map)
    scenes = [load_scene(b, cfg) for b in scene_bags(cfg.bag, cfg.scenes)]
    versions = {s.gt.get("dataset_version") for s in scenes}
    if len(versions) != 1:
        raise ValueError(f"the bags come from different dataset versions {sorted(map(str, versions))}; replay one at a time")
    version = versions.pop()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    domain_id = cfg.domain_id if cfg.domain_id is not None else random.Random(os.getpid() ^ time.time_ns()).randint(120, 220)
    t0 = time.perf_counter()
    records = []
    for s in scenes:
        records.append(replay_scene(s, cfg, domain_id, out))
        log.info("%s: %d results for %d sweeps", s.scene, len(records[-1].docs), records[-1].played.get(s.params["lidar"]["topic"], 0))
    replay_seconds = time.perf_counter() - t0

    all_frames, per_scene, node_ms, e2e_ms = [], {}, [], []
    for s, r in zip(scenes, records):
        frames = scored_frames(s, r)
        all_frames.extend(frames)
        lat = latencies(r)
        node_ms += lat["node_ms"]
        e2e_ms += lat["end_to_end_ms"]
        per_scene[s.scene] = {
            "transport": transport_counts(r, s.params["lidar"]["topic"]),
            "keyframes": len(frames), "keyframes_processed": int(sum(f.processed for f in frames)),
            "latency_node_ms": latency_stats(lat["node_ms"]), "latency_end_to_end_ms": latency_stats(lat["end_to_end_ms"]),
            "resources": r.resources, "node_stats": r.node_stats, "startup_seconds": round(r.startup_seconds, 2),
            "play_seconds": round(r.play_seconds, 3), "bag_seconds": round(r.bag_seconds, 3),
            "lockstep": {"waits": r.lockstep_waits, "timeouts": r.lockstep_timeouts,
                         "held_seconds": round(r.lockstep_held_seconds, 3)} if cfg.lockstep else None,
            "params": str(s.params_source), "node_log": r.node_log, "outputs_bag": r.outputs_bag,
        }
    metrics = open_vocab_metrics(all_frames, min_points=cfg.min_points, label_map=label_map)
    curve = score_curve(all_frames, min_points=cfg.min_points, max_dist=1.0)
    metrics["score_curve"] = curve  # recall / false alarms at 1 m if score_threshold were each value
    metrics["operating_point_10pct"] = operating_point(curve, 0.10)
    docs = [d for r in records for d in r.docs]
    transport = {k: sum(p["transport"][k] for p in per_scene.values()) for k in next(iter(per_scene.values()))["transport"]}

    devkit: Dict[str, Any]
    dataroot = Path(cfg.dataroot) if cfg.dataroot is not None else dataroot_of_bag(cfg.bag)
    if dataroot is None or not (Path(dataroot) / version).is_dir():
        devkit = {"skipped": f"no nuScenes tables for {version} (dataroot {dataroot}); give --dataroot"}
        log.warning("devkit metrics skipped: %s", devkit["skipped"])
    else:
        nusc = load_nusc_view(Path(dataroot), version, [s.scene for s in scenes], out / "devkit" / "dataroot")
        T = {}
        for s in scenes:
            for kf in s.gt["keyframes"]:
                T[kf["sample_token"]] = lidar_to_global(nusc, kf["lidar_token"])
        uses_cam = any(s.params.get("ensemble", False) and s.params.get("cameras", {}).get("enabled", True) for s in scenes)
        sub = nuscenes_submission(all_frames, T, label_map, meta={"use_camera": bool(uses_cam)})
        sub_path = out / "submission.json"
        sub_path.write_text(json.dumps(sub))
        if any(sub["results"].values()):
            devkit = run_detection_eval(nusc, sub_path, out / "devkit")
        else:  # the devkit cannot load a submission without any box (it raises); its score is 0 by definition
            devkit = {"mean_ap": 0.0, "nd_score": 0.0,
                      "empty": "the submission holds no box of a detection class: mAP and NDS are 0"}
        devkit["submission"] = str(sub_path)
        devkit["dataroot"] = str(dataroot)

    identity = {k: docs[0][k] for k in ("clip", "random_clip", "encoder", "backend", "warning") if docs and k in docs[0]}
    report: Dict[str, Any] = {
        "format": REPORT_FORMAT,
        "bag": str(cfg.bag), "dataset_version": version, "scenes": [s.scene for s in scenes],
        "rate": cfg.rate, "lockstep": cfg.lockstep, "domain_id": domain_id, "min_points": cfg.min_points,
        "vocabulary": docs[0].get("vocabulary") if docs else None, "identity": identity,
        "transport": transport,
        "latency_node_ms": latency_stats(node_ms), "latency_end_to_end_ms": latency_stats(e2e_ms),
        "stage_median_ms": stage_medians(docs),
        "open_vocab": metrics, "devkit": devkit, "per_scene": per_scene,
        "replay_seconds": round(replay_seconds, 2),
        "label_map": {k: v for k, v in label_map.items()} or "default (docs/replay.md)",
    }
    if cfg.check_offline:
        checks = [offline_check(s, r) for s, r in zip(scenes, records)]
        report["offline_check"] = {"frames_checked": sum(c["frames_checked"] for c in checks),
                                   "frames_identical": sum(c["frames_identical"] for c in checks),
                                   "mismatches": [m for c in checks for m in c["mismatches"]][:20]}
    write_report(report, out, scenes, records, all_frames)
    return report
