"""``lidar_openvocab_node``: open-vocabulary labels for LiDAR clusters, published for rviz and tools.

A thin adapter over :class:`clip2_core.pipeline.Pipeline` (the object the offline evaluator
runs): it declares and validates parameters, converts messages to a :class:`Frame`, calls
``pipeline.process`` and publishes the result.

Topics (``~`` = the node's name)
--------------------------------
in:  ``lidar.topic`` (sensor_msgs/PointCloud2, sensor-data QoS, depth 1, keep-latest);
     per camera ``cameras.<NAME>.image_topic`` (Image or CompressedImage) and
     ``cameras.<NAME>.camera_info_topic`` (CameraInfo).
out: ``~/detections/markers`` (visualization_msgs/MarkerArray), ``~/detections/json``
     (std_msgs/String, one JSON document per frame), ``~/detections/points`` (PointCloud2 with
     label_id, score, cluster_id; only while subscribed), ``~/detections/detections3d``
     (vision_msgs/Detection3DArray, when vision_msgs is importable), ``~/debug/processing_time_ms``
     (std_msgs/Float64), ``~/debug/stage_times_ms`` (std_msgs/String, JSON per-stage timings),
     ``~/debug/stats`` (std_msgs/String, JSON of ``node.stats``; 1 Hz, reliable, transient local),
     ``~/debug/background`` (std_msgs/String, the clusters rejected as scene structure, same JSON
     layout as the detections; only while subscribed).

Threads
-------
The node spins in a SingleThreadedExecutor (``CLIP2_EXECUTOR=multi``: a MultiThreadedExecutor with
3 threads, measured 2-6x worse p99 on 2 cores: its Python-level wait loops starve the callback). With
a depth-1 sensor-data subscription a sweep that arrives while one is being processed replaces the
waiting one, so the node never builds a backlog. Camera callbacks only store the latest messages;
images are decoded only for the camera frame chosen for a sweep. A vocabulary change
(``ros2 param set <node> vocabulary "[...]"``) is validated in the parameter callback and the
text bank is rebuilt in a worker thread (``Pipeline.set_vocabulary`` swaps it in atomically), so
the LiDAR callback never waits for it.

Camera geometry
---------------
With tf2 (``use_tf``), the LiDAR -> camera transform of each image is looked up with time travel:
the LiDAR at the sweep stamp, the camera at the image stamp, through ``tf_fixed_frame`` (``odom``),
so the ego motion between the two stamps is compensated (:func:`compensated_extrinsics`, as the
offline nuScenes reader does). Fallbacks, each a throttled warning: the latest tf2 transform, then
``cameras.<NAME>.T_lidar_to_cam``.

Robustness
----------
Malformed clouds, NaN/inf points, empty clouds, undecodable images, missing camera info or
images, and exceptions in inference never stop the node: each kind gives a throttled warning
and the frame is skipped or processed LiDAR-only. ``node.stats`` counts what happened.
"""
from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import numpy as np
import rclpy
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Float64, String
from visualization_msgs.msg import MarkerArray

from clip2_core.accumulate import TIME_LAG_FIELD, PoseBuffer, SweepAccumulator
from clip2_core.frames import frame_from_arrays, keep_range_for, pick_nearest_stamp
from clip2_core.geometry import invert_transform
from clip2_core.sysmem import HOLD_HEAP_ENV, hold_heap, trim_heap
from clip2_core.types import CameraView, Frame

from clip2_ros import params as P
from clip2_ros.conversions import (
    CloudFormatError,
    ImageDecodeError,
    camera_info_intrinsics,
    compressed_image_to_rgb,
    image_to_rgb,
    pointcloud2_to_array,
    pose_to_matrix,
    stamp_to_seconds,
    transform_msg_to_matrix,
)
from clip2_ros.marker_cdr import MarkerEncoder
from clip2_ros.markers import detections_to_json, detections_to_markers, detections_to_vision_msgs, labelled_cloud

NODE_NAME = "lidar_openvocab_node"
CAMERA_BUFFER = 10  # image messages kept per camera to pick the one nearest a sweep


def sensor_qos(depth: int = 1) -> QoSProfile:
    """Sensor-data QoS (best effort, volatile) keeping only the newest ``depth`` messages."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )


def build_pipeline(pipeline_params: Dict[str, Any]):
    """The real pipeline from the nested parameter dict (kept separate so startup errors are clear)."""
    from clip2_core.pipeline import Pipeline, PipelineConfig

    return Pipeline(PipelineConfig.from_dict(pipeline_params))


LARGE_VOCABULARY_PROMPTS = 2000  # a text-bank rebuild with this many prompts or more is announced on the log


def _short(labels: List[str], n: int = 20) -> str:
    """A label list for a log line: all of a short one, the first ``n`` and a count of a long one."""
    return str(labels) if len(labels) <= n else f"{labels[:n]} ... ({len(labels)} labels)"


def keep_range_of(params: P.NodeParams) -> float:
    """[m] the node drops points beyond this range (from the clustering range)."""
    return keep_range_for(float(params.pipeline["segmentation"].get("cluster", {}).get("max_range", 80.0)))


def cloud_to_frame(msg: PointCloud2, params: P.NodeParams, keep_range: float):
    """``(Frame, FrameDrops)`` of a PointCloud2 as the node builds it (CloudFormatError / ValueError when malformed)."""
    points, names = pointcloud2_to_array(msg)
    return frame_from_arrays(
        points, names, stamp=stamp_to_seconds(msg.header.stamp), frame_id=params.lidar_frame_id or msg.header.frame_id,
        intensity_field=params.intensity_field, intensity_max=params.intensity_max, keep_range=keep_range,
    )


def compensated_extrinsics(T_lidar_to_fixed: np.ndarray, T_cam_to_fixed: np.ndarray) -> np.ndarray:
    """(4, 4) float64 LiDAR -> camera optical frame for a sweep and an image taken at different times.

    Args:
        T_lidar_to_fixed: (4, 4) LiDAR -> fixed frame (``odom``, ``map``, nuScenes ``global``) at the sweep stamp.
        T_cam_to_fixed: (4, 4) camera optical frame -> fixed frame at the image stamp.

    A point seen by the LiDAR stays put in the fixed frame while the vehicle moves, so the camera
    sees it at ``T_cam_to_fixed^-1 @ T_lidar_to_fixed @ p``; the ego motion between the two stamps
    is compensated. This is what ``tf2_ros.Buffer.lookup_transform_full(camera, t_image, lidar,
    t_sweep, fixed_frame)`` returns, and what :meth:`clip2_core.datasets.nuscenes.NuScenesReader.frame`
    puts into ``CameraView.T_lidar_to_cam``.
    """
    return invert_transform(T_cam_to_fixed) @ np.asarray(T_lidar_to_fixed, dtype=np.float64)


def camera_view(cfg: P.CameraParams, image_msg, info_msg, T_lidar_to_cam: np.ndarray, stamp: float) -> CameraView:
    """The :class:`CameraView` of one image + CameraInfo pair (decoded); ValueError / ImageDecodeError
    when the info is unusable, the image does not decode or their sizes disagree.

    The intrinsics come from P or K as ``cfg.intrinsics`` says; a stereo P's translation is folded
    into the returned view's ``T_lidar_to_cam``."""
    cam = camera_info_intrinsics(info_msg, source=cfg.intrinsics, image_topic=cfg.image_topic)
    K, size_wh = cam.K, cam.size_wh
    rgb = compressed_image_to_rgb(image_msg) if cfg.compressed else image_to_rgb(image_msg)
    if (rgb.shape[1], rgb.shape[0]) != size_wh:
        raise ValueError(f"image is {rgb.shape[1]}x{rgb.shape[0]} but CameraInfo says {size_wh[0]}x{size_wh[1]}")
    return CameraView(name=cfg.name, K=K, T_lidar_to_cam=cam.lidar_to_camera(T_lidar_to_cam), size_wh=size_wh,
                      image=rgb, stamp=stamp)


class _CameraState:
    """Latest messages of one camera (written by camera callbacks, read by the LiDAR callback)."""

    def __init__(self, cfg: P.CameraParams):
        self.cfg = cfg
        self.lock = threading.Lock()
        self.images: Deque[Tuple[float, Any]] = deque(maxlen=CAMERA_BUFFER)  # (stamp [s], msg)
        self.info: Optional[CameraInfo] = None

    def pick(self, t: float, max_offset: float) -> Tuple[Optional[Tuple[float, Any]], float]:
        """``((stamp, msg) or None, offset [s])``: the buffered image that belongs to the sweep at ``t``."""
        with self.lock:
            images = list(self.images)
        i, offset = pick_nearest_stamp([st for st, _ in images], t, max_offset)
        return (images[i] if i is not None else None), offset


class LidarOpenVocabNode(Node):
    """The node; construct after ``rclpy.init``. Raises :class:`clip2_ros.params.ParameterError` on bad parameters."""

    def __init__(self, node_name: str = NODE_NAME, pipeline: Any = None, **kwargs: Any):
        """``pipeline``: an already built :class:`clip2_core.pipeline.Pipeline` to use instead of
        building one from the parameters (e.g. shared with an offline evaluator); ``kwargs`` go
        to :class:`rclpy.node.Node` (context, parameter_overrides, namespace, ...)."""
        super().__init__(node_name, **kwargs)
        self.stats: Dict[str, int] = {
            "clouds_received": 0,
            "frames_published": 0,
            "malformed_cloud": 0,
            "empty_cloud": 0,
            "nonfinite_points": 0,
            "out_of_range_points": 0,
            "camera_skipped": 0,
            "inference_error": 0,
            "lidar_only_fallback": 0,
            "vocabulary_updates": 0,
            "messages_lost": 0,  # LiDAR messages the middleware reports lost in transport
            "background_clusters": 0,  # clusters rejected as scene structure (not published as detections)
        }
        self._stats_lock = threading.Lock()
        self._last_warn: Dict[str, float] = {}
        self._declared: List[str] = []
        self.params = self._declare_and_validate()
        self._throttle_s = self.params.warn_throttle_s
        self._max_keep_range = keep_range_of(self.params)  # [m] farther points are dropped

        self.pipeline = pipeline if pipeline is not None else build_pipeline(self.params.pipeline)
        self._identity = self.pipeline.recognizer.identity
        fallbacks = list(getattr(self.pipeline, "fallbacks", []) or [])
        if fallbacks:  # a broken ONNX / engine: running on the next backend, said on the log and in every output
            self._identity["encoder_fallback"] = fallbacks
            self.stats["encoder_fallbacks"] = len(fallbacks)
            for note in fallbacks:
                self.get_logger().warning(note)
        if pipeline is None:  # the first sweep must not pay for lazy initialisation
            self.get_logger().info(f"pipeline warmed up in {self.pipeline.warm_up():.0f} ms")
        if self._identity.get("random_clip"):
            self.get_logger().warning(
                "CLIP weights are RANDOM (clip.allow_random is true): labels are NOT zero-shot results; "
                "every JSON document says random_clip: true"
            )
        self.get_logger().info(
            f"pipeline ready; vocabulary ({len(self.pipeline.vocabulary)}): {list(self.pipeline.vocabulary)}"
        )

        # vocabulary rebuilds: latest request wins, done off the LiDAR thread
        self._vocab_requests: "queue.Queue[Optional[Tuple[List[str], Optional[List[str]]]]]" = queue.Queue()
        self._decoder = ThreadPoolExecutor(max_workers=2, thread_name_prefix="clip2-decode")  # camera images
        self._vocab_thread = threading.Thread(target=self._vocab_worker, name="clip2-vocabulary", daemon=True)
        self._vocab_thread.start()
        self.add_on_set_parameters_callback(self._check_parameters)

        # multi-sweep accumulation: earlier sweeps moved into the current one with the ego motion, the
        # sensor's pose from a PoseStamped topic or from tf2 (the cloud frame in tf_fixed_frame)
        self._accumulator = SweepAccumulator(self.params.accumulate) if self.params.accumulate.sweeps > 1 else None
        self._poses: Optional[PoseBuffer] = None
        self._tf_buffer = None
        wants_tf = bool(self.params.cameras) or (self._accumulator is not None and not self.params.pose_topic)
        if self.params.use_tf and wants_tf:
            self._tf_buffer = self._make_tf_buffer()

        # publishers
        self.pub_markers = self.create_publisher(MarkerArray, "~/detections/markers", 5)
        # the MarkerArray goes out as CDR bytes written in one pass (1.3 vs 14 ms for 45 boxes) where
        # that encoding is checked to read back as rclpy's own (clip2_ros.marker_cdr)
        self._marker_encoder = MarkerEncoder()
        if not self._marker_encoder.usable:
            self.get_logger().info(f"markers are built as messages: {self._marker_encoder.reason}")
        self.pub_json = self.create_publisher(String, "~/detections/json", 5)
        self.pub_points = self.create_publisher(PointCloud2, "~/detections/points", sensor_qos(1))
        self.pub_time = self.create_publisher(Float64, "~/debug/processing_time_ms", 5)
        self.pub_stages = self.create_publisher(String, "~/debug/stage_times_ms", 5)
        self.pub_background = self.create_publisher(String, "~/debug/background", 5)  # JSON, built only when subscribed
        # counters (JSON of node.stats) once a second; transient local, so a late tool still gets the last
        self.pub_stats = self.create_publisher(String, "~/debug/stats", QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.pub_vision = None
        if self.params.publish_vision_msgs:
            try:
                from vision_msgs.msg import Detection3DArray

                self.pub_vision = self.create_publisher(Detection3DArray, "~/detections/detections3d", 5)
            except ImportError:
                self.get_logger().info("vision_msgs is not importable: ~/detections/detections3d is not published")

        # subscriptions
        self._lidar_group = MutuallyExclusiveCallbackGroup()
        self._camera_group = MutuallyExclusiveCallbackGroup()
        if self._accumulator is not None and self.params.pose_topic:
            from geometry_msgs.msg import PoseStamped

            self._poses = PoseBuffer()
            # created before the LiDAR subscription, so that a pose and a sweep ready together are taken
            # in that order; best effort accepts reliable publishers too (ros2 bag play)
            self.create_subscription(PoseStamped, self.params.pose_topic, self._on_pose, sensor_qos(50),
                                     callback_group=self._camera_group)
        self.sub_cloud = self.create_subscription(
            PointCloud2, self.params.lidar_topic, self._on_cloud, sensor_qos(1), callback_group=self._lidar_group,
            event_callbacks=SubscriptionEventCallbacks(message_lost=self._on_message_lost),
        )
        self.cameras: Dict[str, _CameraState] = {}
        for cam in self.params.cameras:
            state = _CameraState(cam)
            self.cameras[cam.name] = state
            img_type = CompressedImage if cam.compressed else Image
            self.create_subscription(
                img_type, cam.image_topic, self._image_callback(state), sensor_qos(2), callback_group=self._camera_group
            )
            self.create_subscription(
                CameraInfo, cam.camera_info_topic, self._info_callback(state), sensor_qos(1),
                callback_group=self._camera_group,
            )
        if self._accumulator is not None:
            src = self.params.pose_topic or f"tf2 ({self.params.tf_fixed_frame or 'no fixed frame'})"
            self.get_logger().info(f"accumulating {self.params.accumulate.sweeps} sweeps; sensor poses from {src}")
        self._stats_timer = self.create_timer(1.0, self.publish_stats, callback_group=self._camera_group)
        self.get_logger().info(
            f"listening on {self.sub_cloud.topic_name}"
            + (f" with cameras {list(self.cameras)}" if self.cameras else " (LiDAR-only)")
        )

    # ------------------------------------------------------------------------------------------
    # parameters
    # ------------------------------------------------------------------------------------------
    def _declare(self, name: str, default: Any) -> None:
        desc = ParameterDescriptor(
            name=name,
            dynamic_typing=True,  # types are checked by the schema, with clearer messages
            read_only=name not in P.DYNAMIC_PARAMETERS,
        )
        self.declare_parameter(name, default, desc)
        self._declared.append(name)

    def _declare_and_validate(self) -> P.NodeParams:
        defaults = P.flatten(P.load_param_file(P.default_param_file()))
        for name, value in defaults.items():
            self._declare(name, value)
        names = self.get_parameter("cameras.names").value or []
        for cam in names:
            for name, value in P.camera_parameter_names(str(cam)):
                if not self.has_parameter(name):
                    self._declare(name, value)
        overrides = getattr(self, "_parameter_overrides", {}) or {}
        unknown = sorted(
            k for k in overrides if not self.has_parameter(k) and not k.startswith(P.RESERVED_PREFIXES)
        )
        if unknown:
            raise P.ParameterError(
                f"unknown parameter(s) {unknown}; see {P.default_param_file()} for the accepted names "
                "(camera groups must be listed in cameras.names)"
            )
        nested = P.unflatten({n: self.get_parameter(n).value for n in self._declared})
        P.validate(nested)
        return P.node_params(nested)

    def _check_parameters(self, parameters) -> SetParametersResult:
        """Validate run-time changes; a valid vocabulary / templates change queues a text-bank rebuild.

        (Queued from here rather than from a post-set callback, which older rclpy lacks; this is
        the node's only set-parameters callback, so an accepted change is applied.)
        """
        new = {p.name: p.value for p in parameters if p.name in P.DYNAMIC_PARAMETERS}
        if not new:
            return SetParametersResult(successful=True)
        try:
            vocab = P.validate_vocabulary(new.get("vocabulary", self.get_parameter("vocabulary").value))
            templates = P.validate_templates(new.get("clip.templates", self.get_parameter("clip.templates").value))
        except P.ParameterError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if templates is None:  # [""]: the encoder's training templates, else the built-in set
            templates = list(self.pipeline.recognizer.default_templates)
        self._vocab_requests.put((vocab, templates))
        return SetParametersResult(successful=True)

    def _vocab_worker(self) -> None:
        while True:
            reqs = [self._vocab_requests.get()]
            while True:  # only the newest request matters
                try:
                    reqs.append(self._vocab_requests.get_nowait())
                except queue.Empty:
                    break
            if any(r is None for r in reqs):  # shutting down
                return
            req = reqs[-1]
            vocab, templates = req
            t0 = time.perf_counter()
            n_prompts = len(vocab) * max(1, len(templates or ()))
            if n_prompts >= LARGE_VOCABULARY_PROMPTS:  # tens of seconds on a CPU: say so, frames keep flowing
                self.get_logger().info(
                    f"building the text bank for {len(vocab)} labels x {len(templates or ())} templates "
                    f"({n_prompts} prompts); frames use the previous vocabulary until it is ready")
            try:
                self.pipeline.set_vocabulary(vocab, templates)
            except Exception as exc:  # keep the old text bank, keep running
                self.get_logger().error(f"vocabulary update to {_short(vocab)} failed, keeping the previous one: {exc}")
                continue
            finally:
                trim_heap()  # the build's temporary memory goes back to the system, not to this thread's arena
            self._count("vocabulary_updates")
            self.get_logger().info(
                f"vocabulary updated in {(time.perf_counter() - t0) * 1e3:.0f} ms: {_short(list(self.pipeline.vocabulary))}"
            )

    # ------------------------------------------------------------------------------------------
    # helpers
    # ------------------------------------------------------------------------------------------
    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] = self.stats.get(key, 0) + n

    def _warn(self, kind: str, message: str, count: int = 1) -> None:
        """At most one warning of each kind per ``warn_throttle_s``; ``stats[kind] += count`` every time."""
        self._count(kind, count)
        now = time.monotonic()
        last = self._last_warn.get(kind)
        if last is None or now - last >= self._throttle_s:
            self._last_warn[kind] = now
            self.get_logger().warning(f"[{kind}] {message}")

    def _on_message_lost(self, info) -> None:
        self._count("messages_lost", int(info.total_count_change))

    def publish_stats(self) -> None:
        """Publish ``node.stats`` as JSON on ``~/debug/stats`` (also once a second by a timer)."""
        with self._stats_lock:
            doc = json.dumps(dict(self.stats), sort_keys=True)
        self.pub_stats.publish(String(data=doc))

    def _make_tf_buffer(self):
        try:
            from tf2_ros import Buffer, TransformListener
        except ImportError:
            self.get_logger().info("tf2_ros is not importable: LiDAR->camera extrinsics come from the parameters")
            return None
        buf = Buffer()
        self._tf_listener = TransformListener(buf, self, spin_thread=False)
        return buf

    def _on_pose(self, msg) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        vals = (p.x, p.y, p.z, q.x, q.y, q.z, q.w)
        norm = float(np.sqrt(q.x * q.x + q.y * q.y + q.z * q.z + q.w * q.w))
        if not np.isfinite(vals).all() or not norm > 0:
            self._warn("bad_pose", f"{self.params.pose_topic}: non-finite or zero pose skipped")
            return
        self._poses.add(stamp_to_seconds(msg.header.stamp), pose_to_matrix(vals))

    def _sweep_pose(self, lidar_frame: str, stamp, t: float) -> Optional[np.ndarray]:
        """The LiDAR frame's pose in the fixed frame at the sweep (None: not known; the sweep goes alone)."""
        if self._poses is not None:
            T = self._poses.at(t)
            if T is None:
                self._warn("accumulate_no_pose", f"no pose on {self.params.pose_topic} at the sweep's stamp "
                           f"({len(self._poses)} buffered): this sweep is not accumulated")
            return T
        fixed = self.params.tf_fixed_frame
        if self._tf_buffer is None or not fixed:
            self._warn("accumulate_no_pose", "accumulate.sweeps > 1 needs accumulate.pose_topic, or tf2 with "
                       "tf_fixed_frame: sweeps are not accumulated")
            return None
        from rclpy.duration import Duration
        from rclpy.time import Time

        try:
            tf = self._tf_buffer.lookup_transform(fixed, lidar_frame, Time.from_msg(stamp), timeout=Duration(seconds=0))
        except Exception as exc:  # not (yet) known at this stamp
            self._warn("accumulate_no_pose", f"tf2 {fixed} <- {lidar_frame} at the sweep: {exc}; not accumulated")
            return None
        return transform_msg_to_matrix(tf.transform)

    def _image_callback(self, state: _CameraState) -> Callable[[Any], None]:
        def cb(msg) -> None:
            with state.lock:
                state.images.append((stamp_to_seconds(msg.header.stamp), msg))

        return cb

    def _info_callback(self, state: _CameraState) -> Callable[[Any], None]:
        def cb(msg) -> None:
            with state.lock:
                state.info = msg

        return cb

    def _extrinsics(
        self, state: _CameraState, lidar_frame: str, camera_frame: str, image_stamp, sweep_stamp
    ) -> np.ndarray:
        """(4, 4) LiDAR -> camera optical frame for one image of a sweep; ``image_stamp`` and
        ``sweep_stamp`` are the messages' ``header.stamp`` (builtin_interfaces/Time).

        In order: tf2 with time travel through ``tf_fixed_frame`` (LiDAR at the sweep stamp ->
        camera at the image stamp: ego motion between them compensated); else the latest tf2
        transform (``tf_uncompensated`` warning); else ``cameras.<NAME>.T_lidar_to_cam``
        (``tf_fallback`` warning). Never waits for tf2: a transform that is not there yet is a fallback.
        """
        if self._tf_buffer is not None and camera_frame and lidar_frame:
            from rclpy.duration import Duration
            from rclpy.time import Time

            fixed = self.params.tf_fixed_frame
            if fixed:
                try:
                    tf = self._tf_buffer.lookup_transform_full(
                        target_frame=camera_frame, target_time=Time.from_msg(image_stamp), source_frame=lidar_frame,
                        source_time=Time.from_msg(sweep_stamp), fixed_frame=fixed, timeout=Duration(seconds=0),
                    )
                    return transform_msg_to_matrix(tf.transform)
                except Exception as exc:  # no fixed frame, or the pose at a stamp is not (yet) known
                    self._warn("tf_uncompensated",
                               f"{state.cfg.name}: tf2 {lidar_frame}@sweep -> {camera_frame}@image via {fixed}: {exc}; "
                               "using the latest transform (ego motion between the stamps not compensated)")
            try:
                tf = self._tf_buffer.lookup_transform(camera_frame, lidar_frame, Time(), timeout=Duration(seconds=0))
                return transform_msg_to_matrix(tf.transform)
            except Exception as exc:  # no transform yet: the parameters are the fallback
                self._warn("tf_fallback", f"{state.cfg.name}: tf2 {lidar_frame}->{camera_frame}: {exc}; using T_lidar_to_cam")
        return state.cfg.T_lidar_to_cam

    def _camera_views(self, t: float, lidar_frame: str, sweep_stamp) -> Dict[str, CameraView]:
        """Camera views for the sweep at ``t`` [s] (``sweep_stamp``: its header.stamp, for tf2)."""
        views: Dict[str, CameraView] = {}
        jobs = []
        for name, state in self.cameras.items():
            picked, offset = state.pick(t, self.params.max_time_offset)
            if picked is None:
                if offset == float("inf"):
                    self._warn("camera_skipped", f"{name}: no image received yet; LiDAR-only for this camera")
                else:
                    self._warn(
                        "camera_skipped",
                        f"{name}: nearest image is {offset * 1e3:.0f} ms from the sweep "
                        f"(max_time_offset {self.params.max_time_offset * 1e3:.0f} ms); not used",
                    )
                continue
            t_img, msg = picked
            with state.lock:
                info = state.info
            if info is None:
                self._warn("camera_skipped", f"{name}: no CameraInfo received yet; not used")
                continue
            cam_frame = state.cfg.frame_id or msg.header.frame_id
            T = self._extrinsics(state, lidar_frame, cam_frame, msg.header.stamp, sweep_stamp)
            jobs.append((name, state.cfg, msg, info, T, t_img))
        # JPEG decoding releases the GIL: the images decode in parallel (six 1600x900 images 43 -> 27 ms
        # on 2 cores); warnings stay on this thread
        futures = [(name, self._decoder.submit(camera_view, cfg, msg, info, T, t_img))
                   for name, cfg, msg, info, T, t_img in jobs]
        for name, fut in futures:
            try:
                views[name] = fut.result()
            except (ValueError, ImageDecodeError) as exc:
                self._warn("camera_skipped", f"{name}: {exc}; not used")
            except Exception as exc:  # a broken camera never costs the LiDAR result
                self._warn("camera_skipped", f"{name}: {type(exc).__name__}: {exc}; not used")
        return views

    # ------------------------------------------------------------------------------------------
    # the LiDAR callback
    # ------------------------------------------------------------------------------------------
    def _on_cloud(self, msg: PointCloud2) -> None:
        try:
            self._process_cloud(msg)
        except Exception as exc:  # last line of defence: the node keeps running
            if not self.context.ok():  # shutting down (Ctrl-C, SIGTERM) with a frame in flight: nothing to report
                return
            self._warn("callback_error", f"frame skipped: {type(exc).__name__}: {exc}")

    def _process_cloud(self, msg: PointCloud2) -> None:
        t0 = time.perf_counter()
        self._count("clouds_received")
        try:
            frame, drops = cloud_to_frame(msg, self.params, self._max_keep_range)
        except (CloudFormatError, ValueError) as exc:
            self._warn("malformed_cloud", f"PointCloud2 skipped: {exc}")
            return
        frame_id, t = frame.frame_id, frame.stamp
        if drops.nonfinite:
            self._count("nonfinite_points", drops.nonfinite)
        if drops.out_of_range:
            self._warn("out_of_range_points", f"{drops.out_of_range} points beyond {self._max_keep_range:.0f} m dropped",
                       drops.out_of_range)
        if drops.intensity_missing:
            self._warn("intensity_missing", f"the cloud has no '{self.params.intensity_field}' field: intensity is zero")
        timings: Dict[str, float] = {"decode": (time.perf_counter() - t0) * 1e3}
        if frame.points.shape[0] == 0:
            self._warn("empty_cloud", "empty PointCloud2 (or no finite points): publishing no detections")
            self._publish(msg, frame, [], None, timings, t0, list(self.pipeline.vocabulary), [])
            return
        sweeps = 1
        if self._accumulator is not None:
            t_acc = time.perf_counter()
            points, sweeps = self._accumulator.add(frame.points, t, self._sweep_pose(frame_id, msg.header.stamp, t))
            frame.points, frame.point_fields = points, (*frame.point_fields, TIME_LAG_FIELD)
            timings["accumulate"] = (time.perf_counter() - t_acc) * 1e3
        t1 = time.perf_counter()
        if self.cameras and self.params.pipeline.get("ensemble", False):
            frame.cameras = self._camera_views(t, frame_id, msg.header.stamp)
        timings["cameras"] = (time.perf_counter() - t1) * 1e3
        try:
            result = self.pipeline.process(frame)
        except Exception as exc:
            self._warn("inference_error", f"frame skipped: {type(exc).__name__}: {exc}")
            return
        if result.lidar_only_fallback:
            self._count("lidar_only_fallback")
        if result.background:
            self._count("background_clusters", len(result.background))
            if self.pub_background.get_subscription_count() > 0:
                self.pub_background.publish(String(data=detections_to_json(
                    result.background, frame.stamp, frame.frame_id, None, None, None, identity=self._identity)))
        # pipeline stages keep their names; its own total becomes "pipeline" ("total" is the node's)
        timings.update({("pipeline" if k == "total" else k): float(v) for k, v in result.timings_ms.items()})
        self._publish(msg, frame, result.detections, result.segmentation, timings, t0, result.vocabulary,
                      list(result.image_used), {n: v.stamp for n, v in (frame.cameras or {}).items()}, sweeps)

    def _publish(
        self, msg, frame: Frame, detections, segmentation, timings: Dict[str, float], t0: float,
        vocabulary: List[str], image_used: Optional[List[bool]] = None, cameras: Optional[Dict[str, float]] = None,
        sweeps: int = 1,
    ) -> None:
        """Publish one frame's outputs; ``vocabulary``: the one its labels come from (label_id indexes it)."""
        t_pub = time.perf_counter()
        stamp = msg.header.stamp
        # messages are built only for topics someone listens to (rviz, a recorder, a consumer)
        if self.pub_markers.get_subscription_count() > 0:
            self.pub_markers.publish(
                self._marker_encoder.encode(detections, frame.frame_id, stamp) if self._marker_encoder.usable
                else detections_to_markers(detections, frame.frame_id, stamp))
        if self.params.publish_points and segmentation is not None and self.pub_points.get_subscription_count() > 0:
            self.pub_points.publish(
                labelled_cloud(frame.points, segmentation.labels, detections, vocabulary, frame.frame_id, stamp)
            )
        if self.pub_vision is not None and self.pub_vision.get_subscription_count() > 0:
            self.pub_vision.publish(detections_to_vision_msgs(detections, frame.frame_id, stamp))
        timings["publish"] = (time.perf_counter() - t_pub) * 1e3
        total = (time.perf_counter() - t0) * 1e3
        self.pub_json.publish(
            String(data=detections_to_json(
                detections, frame.stamp, frame.frame_id, vocabulary, dict(timings, total=total), image_used,
                identity=self._identity, cameras=cameras, sweeps=sweeps if self._accumulator is not None else None,
            ))
        )
        self.pub_time.publish(Float64(data=total))
        self.pub_stages.publish(String(data=json.dumps({k: round(v, 3) for k, v in timings.items()})))
        self._count("frames_published")

    # ------------------------------------------------------------------------------------------
    def destroy_node(self) -> None:
        try:  # the final counts, for a tool that is still listening
            self.publish_stats()
        except Exception:  # context already shut down
            pass
        # a node whose __init__ failed (no model) is still destroyed by rclpy's shutdown: only what exists
        if getattr(self, "_vocab_requests", None) is not None:
            self._vocab_requests.put(None)
        thread = getattr(self, "_vocab_thread", None)
        if thread is not None and thread.is_alive():
            thread.join(timeout=5.0)
        if getattr(self, "_decoder", None) is not None:
            self._decoder.shutdown(wait=True)
        super().destroy_node()


EXECUTOR_ENV = "CLIP2_EXECUTOR"
# single: measured at real time on the demo replay (2 cores, 20 Hz sweeps, six cameras at 2 Hz): sweeps
# processed 130-218 of 302 -> 276, node p99 485-789 -> 116 ms, against MultiThreadedExecutor(3), whose
# Python-level wait loops in three threads took over half the node's CPU samples (py-spy) and starved
# the callback (BENCHMARKS.md, issue 14). The callbacks that are not the LiDAR's only store a message.
DEFAULT_EXECUTOR = "single"
EXECUTORS = ("single", "multi")


def make_executor(kind: str, context=None):
    """The rclpy executor the node spins in: ``single`` (SingleThreadedExecutor, the default) or
    ``multi`` (MultiThreadedExecutor, 3 threads); environment variable ``CLIP2_EXECUTOR``."""
    if kind == "single":
        from rclpy.executors import SingleThreadedExecutor

        return SingleThreadedExecutor(context=context)
    if kind == "multi":
        return MultiThreadedExecutor(num_threads=3, context=context)
    raise ValueError(f"{EXECUTOR_ENV} must be one of {'|'.join(EXECUTORS)}, got {kind!r}")


def main(args: Optional[List[str]] = None) -> int:
    """Console script: ``lidar_openvocab_node [--ros-args ...]``; Ctrl-C shuts down cleanly.

    Exit codes: 0 after a shutdown, 2 for invalid parameters, 1 when the node cannot start
    (e.g. the encoder or CLIP weights cannot be loaded).
    """
    from clip2_ros.dds import apply_large_data_profile

    if os.environ.get(HOLD_HEAP_ENV, "1") != "0":  # no fresh zero pages per sweep (clip2_core.sysmem.hold_heap)
        hold_heap()
    try:  # covers the node's own large outputs (labelled cloud); the senders of clouds need it too (docs/dds.md)
        apply_large_data_profile()
    except FileNotFoundError:  # a broken install: default DDS settings
        pass
    rclpy.init(args=args)
    logger = rclpy.logging.get_logger(NODE_NAME)
    try:
        executor = make_executor(os.environ.get(EXECUTOR_ENV, DEFAULT_EXECUTOR))
    except ValueError as exc:
        logger.fatal(str(exc))
        rclpy.try_shutdown()
        return 2
    node = None
    code = 0
    try:
        try:
            node = LidarOpenVocabNode()
            executor.add_node(node)
            node.get_logger().info("ready")
            executor.spin()
        except P.ParameterError as exc:
            logger.fatal(str(exc))
            code = 2
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        except Exception as exc:
            if rclpy.ok():  # not a Ctrl-C during start-up: the model or weights could not be loaded, ...
                logger.fatal(f"cannot start: {type(exc).__name__}: {exc}")
                code = 1
    except KeyboardInterrupt:  # a second Ctrl-C (launch forwards one to the group that already got it)
        pass
    _shut_down(executor, node)
    return code


def _shut_down(executor, node) -> None:
    """Stop spinning, destroy the node, shut rclpy down, with further SIGINT / SIGTERM ignored.

    ``ros2 launch`` on a terminal Ctrl-C delivers two SIGINTs (the terminal's to the process group
    and launch's own). Without this the second one either raised KeyboardInterrupt in the middle of
    clean-up or, arriving while the interpreter finalised (which puts SIGINT back to its default
    action), killed the process: exit code -2. Ignored (``SIG_IGN``, which finalisation keeps) from
    here on; clean-up takes well under a second, and launch's SIGKILL after its timeout still forces it.
    """
    import signal

    def ignore() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)

    for _ in range(3):  # a KeyboardInterrupt already pending before the handlers were swapped
        try:
            ignore()
            executor.shutdown()
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown()
            ignore()  # rclpy's shutdown may put back the handlers it found at init
            return
        except KeyboardInterrupt:
            continue


if __name__ == "__main__":
    raise SystemExit(main())
