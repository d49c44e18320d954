"""The detection MarkerArray written straight to CDR bytes, for ``Publisher.publish(bytes)``.

Building a ``visualization_msgs/MarkerArray`` through the Python message classes costs one Python
object per box vertex plus rclpy's per-field conversion: 12 ms to build and 6 ms to serialise
45 boxes on this machine. The same message written here with ``struct`` for the ~90 markers and
numpy for the vertex and colour arrays takes well under a millisecond, and the bytes are those
rclpy itself would send.

The layout is tied to the Marker definition of the ROS distribution in use (Kilted adds fields
older ones lack), so :class:`MarkerEncoder` first encodes probe frames both ways and checks that our
bytes have rclpy's length and deserialise to what rclpy's bytes deserialise to (padding bytes
are not compared: the middleware leaves them uninitialised); where they differ (another distribution, another middleware encoding) it reports that and
the node falls back to the message classes. Nothing here imports ROS until that check.

Content is exactly :func:`clip2_ros.markers.detections_to_markers`'s (same layout, ids, colours).
"""
from __future__ import annotations

import struct
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from clip2_core.geometry import BOX_EDGES
from clip2_core.types import Detection

# Marker constants (visualization_msgs/Marker)
_CUBE, _LINE_LIST, _TEXT, _ADD, _DELETEALL = 1, 5, 9, 0, 3
_ENCAPSULATION = b"\x00\x01\x00\x00"  # CDR, little endian


_U32 = struct.Struct("<I")
_IDS = struct.Struct("<3i")  # id, type, action
_POSE_SCALE = struct.Struct("<10d")  # pose.position (3), pose.orientation (x, y, z, w), scale (3)
_COLOR_LIFETIME_LOCKED = struct.Struct("<4f2iB")  # color, lifetime {sec, nanosec}, frame_locked
_ZEROS = bytes(8)


def _string(s: bytes) -> bytes:
    """A CDR string at a 4-aligned offset: length with the NUL, the bytes, the NUL."""
    return _U32.pack(len(s) + 1) + s + b"\x00"


def _pad(n: int) -> bytes:
    """Zero bytes that take an offset ``n`` bytes into the body to a multiple of 4."""
    return _ZEROS[: -n % 4]


# Everything after ``colors`` up to ``text`` and after ``text`` to the end, for a Marker with no
# texture, no uv coordinates and no mesh (what clip2 writes). Both start 4-aligned.
_BEFORE_TEXT = b"".join([
    _string(b""), _pad(5),  # texture_resource
    _U32.pack(0), _U32.pack(0), _string(b""), _pad(5),  # texture.header: stamp, frame_id
    _string(b""), _pad(5), _U32.pack(0),  # texture.format, texture.data
    _U32.pack(0),  # uv_coordinates
])
_AFTER_TEXT = b"".join([
    _string(b""), _pad(5),  # mesh_resource
    _string(b""), _pad(5), _U32.pack(0),  # mesh_file: filename, data
    b"\x00",  # mesh_use_embedded_materials
])


def _marker(buf: bytearray, head: bytes, ids: Tuple[int, int, int], pose_scale: Sequence[float],
            color: Sequence[float], text: bytes = b"", points: Optional[np.ndarray] = None,
            colors: Optional[np.ndarray] = None) -> None:
    """Append one Marker. ``head``: header + ns, encoded from a 4-aligned start.
    Offsets count from the end of the 4-byte encapsulation header, as rmw_fastrtps does."""
    buf += _pad(len(buf))  # a Marker starts 4-aligned (len(buf) - 4 and len(buf) agree mod 4)
    buf += head
    buf += _pad(len(buf))
    buf += _IDS.pack(*ids)
    buf += _ZEROS[: -(len(buf) - 4) % 8]
    buf += _POSE_SCALE.pack(*pose_scale)
    buf += _COLOR_LIFETIME_LOCKED.pack(*color, 0, 0, 0)
    buf += _pad(len(buf))
    if points is None:
        buf += b"\x00" * 8  # points: 0, colors: 0
    else:
        buf += _U32.pack(points.shape[0])
        if (len(buf) - 4) % 8:
            buf += _ZEROS[:4]
        buf += points.tobytes()
        buf += _U32.pack(colors.shape[0])  # an (M*24, 3) float64 block ends 8-aligned
        buf += colors.tobytes()
    buf += _BEFORE_TEXT
    buf += _string(text)
    buf += _pad(len(buf))
    buf += _AFTER_TEXT


def encode_markers(
    detections: Sequence[Detection],
    frame_id: str,
    stamp=None,
    box_alpha: float = 0.3,
    text_height: float = 0.7,
    line_width: float = 0.06,
) -> bytes:
    """CDR bytes of ``detections_to_markers(detections, frame_id, stamp, ...)`` (same arguments).

    ``stamp``: a ``builtin_interfaces/Time`` (anything with ``sec`` and ``nanosec``) or None.
    """
    from clip2_ros.markers import NS_BOXES, NS_LABELS, NS_OUTLINES, format_label, marker_geometry

    sec, nsec = (int(stamp.sec), int(stamp.nanosec)) if stamp is not None else (0, 0)
    fid = frame_id.encode()
    # std_msgs/Header (stamp {int32 sec, uint32 nanosec}, string frame_id), then ns
    header = struct.pack("<iI", sec, nsec) + _string(fid)

    def head(ns: str) -> bytes:
        return header + _pad(len(header)) + _string(ns.encode())

    n = len(detections)
    buf = bytearray(_ENCAPSULATION)
    buf += _U32.pack(1 + 2 * n + (1 if n else 0))
    _marker(buf, head(""), (0, 0, _DELETEALL), (0.0,) * 6 + (1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0))
    if not n:
        return bytes(buf)
    g = marker_geometry(detections)
    h_boxes, h_labels = head(NS_BOXES), head(NS_LABELS)
    alpha, th = float(box_alpha), float(text_height)
    for i in range(n):
        _marker(buf, h_boxes, (i, _CUBE, _ADD), g.centers[i] + g.quats[i] + g.sizes[i], g.rgb[i] + (alpha,))
    for i, d in enumerate(detections):
        cx, cy, cz = g.centers[i]
        _marker(buf, h_labels, (i, _TEXT, _ADD), (cx, cy, cz + 0.5 * g.sizes[i][2] + 0.6 * th, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, th),
                g.rgb[i] + (1.0,), text=format_label(d.label, float(d.score)).encode())
    per_box = 2 * BOX_EDGES.shape[0]
    rgba = np.concatenate([np.asarray(g.rgb, dtype="<f4"), np.ones((n, 1), "<f4")], axis=1)
    _marker(buf, head(NS_OUTLINES), (0, _LINE_LIST, _ADD), (0.0,) * 6 + (1.0, float(line_width), 0.0, 0.0),
            (1.0, 1.0, 1.0, 1.0), points=np.ascontiguousarray(g.vertices, dtype="<f8"),
            colors=np.repeat(rgba, per_box, axis=0))
    return bytes(buf)


class MarkerEncoder:
    """:func:`encode_markers` once it has been shown to give rclpy's own bytes here.

    ``usable`` is False (and ``reason`` says why) when the probe frames' bytes do not read back
    (``rclpy.serialization.deserialize_message``) as rclpy's serialisation of the message-class
    MarkerArray does, e.g. on a ROS
    distribution whose Marker has other fields; callers then publish the message instead.
    ``encode``: the writer to check and use (default :func:`encode_markers`).
    """

    def __init__(self, encode: Callable[..., bytes] = None) -> None:
        self._encode = encode or encode_markers
        self.usable, self.reason = self._check(self._encode)

    @staticmethod
    def _check(encode: Callable[..., bytes]) -> Tuple[bool, str]:
        from builtin_interfaces.msg import Time
        from rclpy.serialization import deserialize_message, serialize_message
        from visualization_msgs.msg import MarkerArray

        from clip2_core.types import Box3D
        from clip2_ros.markers import detections_to_markers

        probe = [
            Detection(box=Box3D(center=[1.5, -2.0, 0.4], size=[4.2, 1.9, 1.6], yaw=0.7), label="car", score=0.83,
                      cluster_id=0, num_points=10),
            Detection(box=Box3D(center=[-8.0, 3.25, 0.1], size=[0.6, 0.7, 1.8], yaw=-2.0), label="pedestrian",
                      score=0.412, cluster_id=1, num_points=10),
        ]
        stamp = Time(sec=17, nanosec=250_000_001)
        for dets, fid in ((probe, "lidar_top"), ([], "a"), (probe[:1], "")):
            msg = detections_to_markers(dets, fid, stamp)
            ref = serialize_message(msg)
            ours = encode(dets, fid, stamp)
            try:
                same = len(ours) == len(ref) and deserialize_message(ours, MarkerArray) == deserialize_message(ref, MarkerArray)
            except Exception:  # noqa: BLE001 - bytes the middleware cannot read are a mismatch too
                same = False
            if not same:
                return False, (f"CDR MarkerArray differs from rclpy's ({len(ours)} vs {len(ref)} bytes for "
                               f"{len(dets)} boxes): this ROS distribution's Marker has another layout")
        return True, ""

    def encode(self, detections: Sequence[Detection], frame_id: str, stamp=None) -> bytes:
        if not self.usable:
            raise RuntimeError(f"MarkerEncoder is not usable here: {self.reason}")
        return self._encode(detections, frame_id, stamp)
