"""ROS message <-> numpy conversions: PointCloud2, Image, CompressedImage, CameraInfo, stamps, poses.

Our own, vectorised implementation (``sensor_msgs_py`` is not always installable).

PointCloud2 decoding builds one numpy structured dtype from the message's ``PointField`` list
(any field order, offsets with gaps, ``point_step`` padding, ``count > 1`` fields, either byte
order) and views the message buffer through it with the message's strides: no per-point Python
and no copy until columns are gathered into the ``(N, C) float32`` array the core speaks.
Malformed messages raise :class:`CloudFormatError` (a ``ValueError``) that says what is wrong.

Images decode to ``(H, W, 3) uint8 RGB`` (raw encodings rgb8/bgr8/rgba8/bgra8/mono8/mono16/
8UC1/8UC3/16UC1; compressed JPEG/PNG via Pillow); failures raise :class:`ImageDecodeError`.

CameraInfo gives the pinhole model from ``P`` (rectified images) or ``K`` (raw images; ``D`` is not
modelled), with a stereo camera's ``P[:, 3]`` folded into the extrinsics (:class:`CameraIntrinsics`).
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from clip2_core import geometry

# sensor_msgs/PointField datatypes -> numpy scalar types (byte order applied separately)
POINTFIELD_DTYPES: Dict[int, np.dtype] = {
    1: np.dtype(np.int8),
    2: np.dtype(np.uint8),
    3: np.dtype(np.int16),
    4: np.dtype(np.uint16),
    5: np.dtype(np.int32),
    6: np.dtype(np.uint32),
    7: np.dtype(np.float32),
    8: np.dtype(np.float64),
}
_DTYPE_TO_POINTFIELD = {dt.str[1:]: code for code, dt in POINTFIELD_DTYPES.items()}  # "f4" -> 7


class CloudFormatError(ValueError):
    """A PointCloud2 whose layout or data cannot be decoded."""


class ImageDecodeError(ValueError):
    """An Image / CompressedImage that cannot be decoded to RGB."""


MAX_POINT_STEP = 1 << 16  # [bytes] per point; real drivers use 16-64, so more is a corrupt header
MAX_IMAGE_PIXELS = 64_000_000  # a compressed image claiming more (a 16K x 4K camera) is refused before decoding


# ----------------------------------------------------------------------------------------------
# time
# ----------------------------------------------------------------------------------------------
def stamp_to_seconds(stamp) -> float:
    """builtin_interfaces/Time -> float seconds."""
    return float(stamp.sec) + 1e-9 * float(stamp.nanosec)


def seconds_to_stamp(t: float):
    """float seconds (>= 0) -> builtin_interfaces/Time."""
    from builtin_interfaces.msg import Time

    if not np.isfinite(t) or t < 0:
        raise ValueError(f"stamp must be a finite non-negative number of seconds, got {t}")
    sec = int(np.floor(t))
    nanosec = int(round((t - sec) * 1e9))
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return Time(sec=sec, nanosec=nanosec)


# ----------------------------------------------------------------------------------------------
# PointCloud2
# ----------------------------------------------------------------------------------------------
def pointcloud2_dtype(msg) -> np.dtype:
    """The numpy structured dtype (itemsize ``point_step``) that one point of ``msg`` has.

    Fields with ``count > 1`` become sub-array fields. Fields with empty names (padding) are
    skipped. Raises CloudFormatError for unknown datatypes, duplicate names, or fields that
    do not fit in ``point_step``.
    """
    order = ">" if msg.is_bigendian else "<"
    step = int(msg.point_step)
    if step <= 0:
        raise CloudFormatError(f"point_step must be > 0, got {step}")
    if step > MAX_POINT_STEP:
        raise CloudFormatError(f"point_step {step} is absurd (more than {MAX_POINT_STEP} bytes per point)")
    names, formats, offsets = [], [], []
    for f in msg.fields:
        if not f.name:
            continue
        if f.datatype not in POINTFIELD_DTYPES:
            raise CloudFormatError(f"field '{f.name}' has unknown PointField datatype {f.datatype} (expected 1..8)")
        if f.name in names:
            raise CloudFormatError(f"field '{f.name}' appears twice in the PointCloud2 fields")
        base = POINTFIELD_DTYPES[f.datatype].newbyteorder(order)
        count = int(f.count) if int(f.count) > 0 else 1
        if count > step:
            raise CloudFormatError(f"field '{f.name}' has count {count}, more than point_step {step} bytes hold")
        size = base.itemsize * count
        off = int(f.offset)
        if off < 0 or off + size > step:
            raise CloudFormatError(
                f"field '{f.name}' (offset {off}, {size} bytes) does not fit in point_step {step}"
            )
        names.append(f.name)
        formats.append(base if count == 1 else np.dtype((base, (count,))))
        offsets.append(off)
    try:
        return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": step})
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. overlapping fields numpy refuses
        raise CloudFormatError(f"the PointCloud2 fields do not form a point layout: {exc}") from exc


def pointcloud2_to_structured(msg) -> np.ndarray:
    """A zero-copy ``(height * width,)`` structured view of the points in ``msg`` (read-only).

    Row padding (``row_step > width * point_step``) is handled with strides; the result is
    then a copy only if it has to be flattened across padded rows.
    Raises CloudFormatError when the sizes do not add up.
    """
    h, w = int(msg.height), int(msg.width)
    step, row_step = int(msg.point_step), int(msg.row_step)
    data = msg.data
    nbytes = len(data)
    if h < 0 or w < 0:
        raise CloudFormatError(f"negative cloud size {h}x{w}")
    if h * w == 0:
        if step <= 0:
            return np.zeros(0, dtype=np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4")]))
        return np.zeros(0, dtype=pointcloud2_dtype(msg))
    dt = pointcloud2_dtype(msg)
    if row_step < w * step:
        raise CloudFormatError(f"row_step {row_step} is smaller than width*point_step = {w}*{step} = {w * step}")
    if nbytes != row_step * h:
        raise CloudFormatError(
            f"data has {nbytes} bytes but height*row_step = {h}*{row_step} = {h * row_step} "
            f"(width={w}, point_step={step})"
        )
    buf = np.frombuffer(data, dtype=np.uint8)
    view = np.ndarray(shape=(h, w), dtype=dt, buffer=buf, offset=0, strides=(row_step, step))
    return view.reshape(-1)


def pointcloud2_field_names(msg) -> Tuple[str, ...]:
    return tuple(f.name for f in msg.fields if f.name)


def pointcloud2_to_array(
    msg,
    fields: Optional[Sequence[str]] = None,
    remove_nans: bool = False,
) -> Tuple[np.ndarray, Tuple[str, ...]]:
    """Decode a PointCloud2 into ``(N, C) float32`` columns.

    Args:
        msg: sensor_msgs/PointCloud2.
        fields: columns to return, in order. Default: x, y, z then every other scalar field in
            offset order (a ``count > 1`` field ``f`` gives columns ``f_0 .. f_{k-1}``).
        remove_nans: drop rows whose x, y or z is NaN/inf (``is_dense == False`` clouds).
    Returns:
        points (N, C) float32 and the C column names.
    Raises:
        CloudFormatError: missing x/y/z, unknown requested field, inconsistent sizes.
    """
    rec = pointcloud2_to_structured(msg)
    available = rec.dtype.names or ()
    for axis in ("x", "y", "z"):
        if axis not in available:
            raise CloudFormatError(f"PointCloud2 has no '{axis}' field (fields: {list(available)})")
    if fields is None:
        rest = sorted((n for n in available if n not in ("x", "y", "z")), key=lambda n: rec.dtype.fields[n][1])
        fields = ["x", "y", "z", *rest]
    else:
        fields = list(fields)
        missing = [f for f in fields if f not in available]
        if missing:
            raise CloudFormatError(f"requested field(s) {missing} not in the PointCloud2 (fields: {list(available)})")
    names, cols = [], []
    for name in fields:
        sub = rec.dtype.fields[name][0]
        if sub.shape:  # sub-array field
            k = int(np.prod(sub.shape))
            names.extend(f"{name}_{i}" for i in range(k))
            cols.append(("multi", name, k))
        else:
            names.append(name)
            cols.append(("one", name, 1))
    out = np.empty((rec.shape[0], len(names)), dtype=np.float32)
    j = 0
    with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond float32 range -> inf
        for kind, name, k in cols:
            if kind == "one":
                out[:, j] = rec[name]
            else:
                out[:, j : j + k] = rec[name].reshape(rec.shape[0], k)
            j += k
    if remove_nans and out.shape[0]:
        out = out[np.isfinite(out[:, :3]).all(axis=1)]
    return out, tuple(names)


def structured_to_pointcloud2(rec: np.ndarray, frame_id: str = "", stamp=None):
    """A packed sensor_msgs/PointCloud2 (height 1) from a 1-D structured array.

    Every field must be a scalar of a PointField type (int8..float64); all multi-byte fields
    must share one byte order, which sets ``is_bigendian``. Padding in ``rec.dtype`` is kept.
    """
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header

    rec = np.asarray(rec)
    if rec.dtype.names is None or rec.ndim != 1:
        raise ValueError(f"expected a 1-D structured array, got dtype {rec.dtype} shape {rec.shape}")
    fields, orders = [], set()
    for name in rec.dtype.names:
        dt, off = rec.dtype.fields[name][:2]
        if dt.shape:
            raise ValueError(f"field '{name}' is a sub-array; flatten it into scalar fields")
        code = _DTYPE_TO_POINTFIELD.get(dt.str[1:])
        if code is None:
            raise ValueError(f"field '{name}' has dtype {dt} which PointField cannot carry")
        if dt.itemsize > 1:
            orders.add(">" if dt.str[0] == ">" else "<")
        fields.append(PointField(name=name, offset=int(off), datatype=code, count=1))
    if len(orders) > 1:
        raise ValueError("all fields must share one byte order")
    big = orders == {">"}
    msg = PointCloud2()
    msg.header = Header(frame_id=frame_id)
    if stamp is not None:
        msg.header.stamp = stamp
    msg.height = 1
    msg.width = int(rec.shape[0])
    msg.fields = fields
    msg.is_bigendian = bool(big)
    msg.point_step = int(rec.dtype.itemsize)
    msg.row_step = msg.point_step * msg.width
    msg.is_dense = False
    msg.data = np.ascontiguousarray(rec).tobytes()  # bytes assignment is the fast path in rclpy
    return msg


def array_to_pointcloud2(
    points: np.ndarray,
    fields: Sequence[str],
    frame_id: str = "",
    stamp=None,
    dtypes: Optional[Dict[str, object]] = None,
):
    """A PointCloud2 from ``(N, C)`` columns named ``fields`` (float32 unless ``dtypes[name]`` says).

    ``dtypes`` maps a column name to a numpy dtype (e.g. ``{"cluster_id": np.int32}``).
    """
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != len(fields):
        raise ValueError(f"points shape {pts.shape} does not match {len(fields)} field names {list(fields)}")
    dtypes = dtypes or {}
    dt = np.dtype([(name, np.dtype(dtypes.get(name, np.float32))) for name in fields])
    rec = np.empty(pts.shape[0], dtype=dt)
    for i, name in enumerate(fields):
        rec[name] = pts[:, i]
    return structured_to_pointcloud2(rec, frame_id=frame_id, stamp=stamp)


# ----------------------------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------------------------
# encoding -> (channels, numpy dtype, channel order to take for RGB, or None for grey)
_ENCODINGS = {
    "rgb8": (3, np.uint8, (0, 1, 2)),
    "bgr8": (3, np.uint8, (2, 1, 0)),
    "rgba8": (4, np.uint8, (0, 1, 2)),
    "bgra8": (4, np.uint8, (2, 1, 0)),
    "8UC3": (3, np.uint8, (2, 1, 0)),  # OpenCV convention: BGR
    "8UC4": (4, np.uint8, (2, 1, 0)),
    "mono8": (1, np.uint8, None),
    "8UC1": (1, np.uint8, None),
    "mono16": (1, np.uint16, None),
    "16UC1": (1, np.uint16, None),
    "rgb16": (3, np.uint16, (0, 1, 2)),
    "bgr16": (3, np.uint16, (2, 1, 0)),
}


def image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB (16-bit images keep their high byte).

    Raises ImageDecodeError for unsupported encodings or inconsistent sizes.
    """
    enc = msg.encoding
    if enc not in _ENCODINGS:
        raise ImageDecodeError(f"unsupported image encoding '{enc}' (supported: {sorted(_ENCODINGS)})")
    ch, base, order = _ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    dt = np.dtype(base).newbyteorder(">" if msg.is_bigendian else "<")
    row = w * ch * dt.itemsize
    if h <= 0 or w <= 0:
        raise ImageDecodeError(f"empty image {w}x{h}")
    if step < row:
        raise ImageDecodeError(f"step {step} < width*channels*bytes = {row} for {enc} {w}x{h}")
    if len(msg.data) < step * (h - 1) + row:
        raise ImageDecodeError(f"image data has {len(msg.data)} bytes, need {step * h} for {enc} {w}x{h}")
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    img = np.ndarray(shape=(h, w, ch), dtype=dt, buffer=buf, strides=(step, ch * dt.itemsize, dt.itemsize))
    if dt.itemsize == 2:
        img = (img >> 8).astype(np.uint8)
    if order is None:
        return np.repeat(np.asarray(img[:, :, :1], dtype=np.uint8), 3, axis=2)
    return np.ascontiguousarray(img[:, :, list(order)], dtype=np.uint8)


def rgb_to_image(rgb: np.ndarray, encoding: str = "rgb8", frame_id: str = "", stamp=None):
    """(H, W, 3) uint8 RGB -> sensor_msgs/Image in ``rgb8`` or ``bgr8``."""
    from sensor_msgs.msg import Image

    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8, got {arr.shape} {arr.dtype}")
    if encoding == "bgr8":
        arr = arr[:, :, ::-1]
    elif encoding != "rgb8":
        raise ValueError(f"encoding must be rgb8 or bgr8, got {encoding}")
    msg = Image()
    msg.header.frame_id = frame_id
    if stamp is not None:
        msg.header.stamp = stamp
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = 3 * msg.width
    msg.data = np.ascontiguousarray(arr).tobytes()
    return msg


def compressed_image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG/PNG) -> (H, W, 3) uint8 RGB; ImageDecodeError on failure."""
    from PIL import Image as PILImage

    data = bytes(msg.data)
    if not data:
        raise ImageDecodeError("compressed image has no data")
    try:
        with PILImage.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:  # checked before decoding: a forged header must not allocate gigabytes
                raise ImageDecodeError(f"compressed image claims {w}x{h} pixels (more than {MAX_IMAGE_PIXELS:,}); "
                                       "not decoded")
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except ImageDecodeError:
        raise
    except MemoryError as exc:
        raise ImageDecodeError(f"compressed image (format '{msg.format}') does not fit in memory: {exc}") from exc
    except Exception as exc:  # Pillow raises many kinds (DecompressionBombError, struct.error, ...) on bad data
        raise ImageDecodeError(f"cannot decode compressed image (format '{msg.format}'): "
                               f"{type(exc).__name__}: {exc}") from exc


def rgb_to_compressed_image(rgb: np.ndarray, fmt: str = "jpeg", frame_id: str = "", stamp=None, quality: int = 90):
    """(H, W, 3) uint8 RGB -> sensor_msgs/CompressedImage (``jpeg`` or ``png``)."""
    from PIL import Image as PILImage
    from sensor_msgs.msg import CompressedImage

    if fmt not in ("jpeg", "png"):
        raise ValueError(f"fmt must be jpeg or png, got {fmt}")
    out = io.BytesIO()
    kwargs = {"quality": int(quality)} if fmt == "jpeg" else {}
    PILImage.fromarray(np.asarray(rgb, dtype=np.uint8)).save(out, format=fmt.upper(), **kwargs)
    msg = CompressedImage()
    msg.header.frame_id = frame_id
    if stamp is not None:
        msg.header.stamp = stamp
    msg.format = fmt
    msg.data = out.getvalue()
    return msg


# Where the pinhole model comes from: "K" (raw images), "P" (rectified images), or "auto".
INTRINSICS_SOURCES = ("auto", "P", "K")
_RECTIFIED_TOPIC = re.compile(r"(^|[/_])rect")  # image_rect, image_rect_color, .../rect/..., rectified


@dataclass(frozen=True)
class CameraIntrinsics:
    """The pinhole model of one CameraInfo, in the form :class:`clip2_core.types.CameraView` takes.

    A camera-frame point ``X`` projects to ``K @ (X + offset)`` (homogeneous). From ``P`` this is
    exactly ``P @ [X; 1]``: ``K = P[:, :3]`` and ``offset = K^-1 P[:, 3]``, zero for a monocular
    camera and ``(-baseline, 0, 0)`` for the right camera of a horizontal stereo pair (whose
    ``P[0, 3] = -fx * baseline``; ``X`` is then in the first camera's frame, as CameraInfo defines).
    From ``K`` the offset is zero (and the distortion ``D`` is not modelled).
    """

    K: np.ndarray  # (3, 3) float64 pinhole intrinsics of the image as published
    size_wh: Tuple[int, int]  # image width, height [px]
    offset: np.ndarray  # (3,) float64 [m] camera-frame translation folded out of P[:, 3]
    source: str  # "P" or "K": which matrix of the CameraInfo this came from

    def lidar_to_camera(self, T_lidar_to_cam: np.ndarray) -> np.ndarray:
        """(4, 4) ``[I offset; 0 1] @ T_lidar_to_cam``: with it and ``K`` a LiDAR point projects like ``P @ [T X; 1]``."""
        T = np.array(T_lidar_to_cam, dtype=np.float64).reshape(4, 4)
        T[:3, 3] += self.offset  # [I t; 0 1] @ [R p; 0 1] = [R p + t; 0 1]
        return T


def is_rectified_topic(topic: str) -> bool:
    """Whether an image topic name says its images are rectified (a name part starting with ``rect``:
    ``image_rect``, ``image_rect_color``, ``image_rect_compressed``, ``rectified/image``; not ``direct``)."""
    return bool(_RECTIFIED_TOPIC.search(topic))


def intrinsics_source(setting: str, image_topic: str, msg) -> str:
    """``"P"`` or ``"K"`` for a camera's ``intrinsics`` setting: ``auto`` is P when ``image_topic`` is
    rectified (:func:`is_rectified_topic`) and the CameraInfo's P is not all zeros, else K."""
    if setting not in INTRINSICS_SOURCES:
        raise ValueError(f"intrinsics must be one of {list(INTRINSICS_SOURCES)}, got {setting!r}")
    if setting != "auto":
        return setting
    P = np.asarray(msg.p, dtype=np.float64)
    return "P" if is_rectified_topic(image_topic) and P.size == 12 and P.any() else "K"


def _pinhole_problem(M: np.ndarray) -> Optional[str]:
    """Why a (3, 3) matrix is not a pinhole intrinsics matrix, or None."""
    if not np.isfinite(M).all():
        return "it has non-finite entries"
    if M[0, 0] <= 0 or M[1, 1] <= 0:
        return "its focal lengths fx, fy must be > 0"
    if M[1, 0] != 0 or not np.array_equal(M[2], [0.0, 0.0, 1.0]):
        return "it must be upper triangular with a last row 0 0 1"
    return None


def camera_info_intrinsics(msg, source: str = "K", image_topic: str = "") -> CameraIntrinsics:
    """sensor_msgs/CameraInfo -> :class:`CameraIntrinsics` from ``K``, ``P`` or ``auto`` (see
    :func:`intrinsics_source`; ``image_topic`` is what ``auto`` looks at).

    ``P`` is right for rectified images, ``K`` for raw ones (whose distortion ``D`` is ignored, so
    crops of distorted images are slightly off). ``R`` is not applied: like image_geometry, the
    camera's frame is taken to be the one ``P`` projects from.
    Raises ValueError when the chosen matrix is unusable (an all-zero P: not calibrated for
    rectified images) or the image size is missing.
    """
    used = intrinsics_source(source, image_topic, msg)
    w, h = int(msg.width), int(msg.height)
    offset = np.zeros(3)
    if used == "K":
        K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
        problem = _pinhole_problem(K)
        if problem:
            raise ValueError(f"CameraInfo K is not a pinhole matrix ({problem}): {K.tolist()}")
    else:
        P = np.asarray(msg.p, dtype=np.float64)
        if P.size != 12:
            raise ValueError(f"CameraInfo P must have 12 numbers (3x4), got {P.size}")
        P = P.reshape(3, 4)
        if not P.any():
            raise ValueError(
                "CameraInfo P is all zeros: the camera has no rectified projection; "
                "use intrinsics K for raw images or publish a calibrated P"
            )
        K = P[:, :3].copy()
        problem = "it has non-finite entries" if not np.isfinite(P).all() else _pinhole_problem(K)
        if problem:
            raise ValueError(f"CameraInfo P is not a pinhole projection ({problem}): {P.tolist()}")
        offset = np.linalg.solve(K, P[:, 3])
    if w <= 0 or h <= 0:
        raise ValueError(f"CameraInfo has no image size ({w}x{h})")
    return CameraIntrinsics(K=K, size_wh=(w, h), offset=offset, source=used)


def camera_info_to_intrinsics(msg, source: str = "K", image_topic: str = "") -> Tuple[np.ndarray, Tuple[int, int]]:
    """sensor_msgs/CameraInfo -> (K (3, 3) float64, (width, height)) from K or P; ValueError if unusable.

    A P with a translation column (a stereo pair's second camera) raises ValueError too, as K alone
    cannot express it: use :func:`camera_info_intrinsics` and its ``lidar_to_camera``.
    """
    cam = camera_info_intrinsics(msg, source, image_topic)
    if cam.offset.any():
        raise ValueError(
            f"CameraInfo P has a translation column {np.asarray(msg.p).reshape(3, 4)[:, 3].tolist()} "
            "(a stereo pair's second camera); use camera_info_intrinsics, which folds it into the extrinsics"
        )
    return cam.K, cam.size_wh


def make_camera_info(K: np.ndarray, size_wh: Tuple[int, int], frame_id: str = "", stamp=None):
    """sensor_msgs/CameraInfo with the given pinhole K and size (no distortion)."""
    from sensor_msgs.msg import CameraInfo

    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    msg = CameraInfo()
    msg.header.frame_id = frame_id
    if stamp is not None:
        msg.header.stamp = stamp
    msg.width, msg.height = int(size_wh[0]), int(size_wh[1])
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = K.reshape(-1).tolist()
    msg.r = np.eye(3).reshape(-1).tolist()
    P = np.zeros((3, 4))
    P[:, :3] = K
    msg.p = P.reshape(-1).tolist()
    return msg


# ----------------------------------------------------------------------------------------------
# rotations / transforms
# ----------------------------------------------------------------------------------------------
# geometry_msgs/Quaternion order (x, y, z, w) over clip2_core.geometry's one implementation.
def yaw_to_quaternion(yaw: float) -> Tuple[float, float, float, float]:
    """Rotation about +z -> quaternion (x, y, z, w), w >= 0."""
    x, y, z, w = geometry.yaw_to_quaternion(yaw, scalar_first=False)
    return (float(x), float(y), float(z), float(w))


def quaternion_to_yaw(x: float, y: float, z: float, w: float) -> float:
    """Heading about +z of a quaternion (x, y, z, w) (exact for pure z rotations)."""
    return geometry.quaternion_to_yaw((x, y, z, w), scalar_first=False)


def quaternion_to_rotation(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Quaternion (x, y, z, w) -> (3, 3) rotation matrix (normalised first; ValueError if zero/non-finite)."""
    return geometry.quaternion_to_matrix((x, y, z, w), scalar_first=False)


def pose_to_matrix(xyz_quat) -> np.ndarray:
    """``(x, y, z, qx, qy, qz, qw)`` (a geometry_msgs/Pose's numbers) -> (4, 4) float64."""
    x, y, z, qx, qy, qz, qw = (float(v) for v in xyz_quat)
    T = np.eye(4)
    T[:3, :3] = quaternion_to_rotation(qx, qy, qz, qw)
    T[:3, 3] = (x, y, z)
    return T


def transform_msg_to_matrix(transform) -> np.ndarray:
    """geometry_msgs/Transform -> (4, 4) float64."""
    t, q = transform.translation, transform.rotation
    T = np.eye(4)
    T[:3, :3] = quaternion_to_rotation(q.x, q.y, q.z, q.w)
    T[:3, 3] = (t.x, t.y, t.z)
    return T
