"""Fuzzing the message conversions (hypothesis): PointCloud2, Image, CompressedImage and CameraInfo
with random fields, offsets, datatypes, counts, endianness, steps, sizes and bytes (truncated,
oversized, NaN/inf, zero or huge width/height, is_dense lies). Each conversion either works or
raises its documented error (CloudFormatError / ImageDecodeError / ValueError for CameraInfo),
never another exception; and a decoded cloud never holds more points than its bytes can.

The suite runs the ``ci`` profile (derandomised, a few hundred examples per property);
``make fuzz`` runs the ``fuzz`` profile (random, 20,000 examples each).
"""
import io
import os
import struct
import zlib

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")  # a dev requirement: always there under make test
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField  # noqa: E402

from clip2_core.frames import frame_from_arrays  # noqa: E402
from clip2_ros.conversions import (  # noqa: E402
    CloudFormatError,
    ImageDecodeError,
    camera_info_intrinsics,
    compressed_image_to_rgb,
    image_to_rgb,
    pointcloud2_to_array,
)

settings.register_profile("ci", max_examples=300, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("fuzz", max_examples=20000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("CLIP2_FUZZ_PROFILE", "ci"))

U32 = 2**32 - 1
NAMES = ["x", "y", "z", "intensity", "ring", "t", "", "x", "rgb", "é"]
SIZES = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 8: 8}


def u32(small: int):
    """Mostly small values, sometimes anything a uint32 holds (a corrupt header)."""
    return st.one_of(st.integers(0, small), st.integers(0, U32), st.sampled_from([0, 1, 2**31, U32]))


@st.composite
def pointfields(draw):
    return PointField(name=draw(st.sampled_from(NAMES)), offset=draw(u32(40)), datatype=draw(st.integers(0, 255)),
                      count=draw(st.one_of(st.integers(0, 4), u32(4))))


FLOATS = st.sampled_from([0.0, 1.5, -3.25, 1e30, -1e-30, float("nan"), float("inf"), float("-inf"), 3.4e38, 80.5])


@st.composite
def clouds(draw):
    msg = PointCloud2()
    plausible = draw(st.booleans())  # x, y, z float32 in front and sizes that add up, or anything at all
    if plausible:
        extra = draw(st.lists(pointfields(), max_size=3))
        msg.fields = [PointField(name=n, offset=4 * i, datatype=7, count=1) for i, n in enumerate("xyz")] + extra
        msg.point_step = draw(st.integers(12, 48))
        msg.width = draw(st.integers(0, 60))
        msg.height = draw(st.integers(0, 3))
        msg.row_step = msg.point_step * msg.width + draw(st.sampled_from([0, 0, 0, 4, -4]) if msg.width else st.just(0))
        msg.row_step = max(0, msg.row_step)
        n = msg.row_step * msg.height
        cut = draw(st.sampled_from([0, 0, 0, 1, -1, 7]))
        body = bytearray(draw(st.binary(min_size=max(0, n + cut), max_size=max(0, n + cut))))
        for _ in range(draw(st.integers(0, 6))):  # plant non-finite / huge floats
            if len(body) >= 4:
                at = draw(st.integers(0, len(body) - 4))
                body[at:at + 4] = struct.pack("<f", draw(FLOATS))
        msg.data = bytes(body)
    else:
        msg.fields = draw(st.lists(pointfields(), max_size=6))
        msg.point_step = draw(u32(64))
        msg.width = draw(u32(64))
        msg.height = draw(u32(4))
        msg.row_step = draw(u32(4096))
        msg.data = draw(st.binary(max_size=4096))
    msg.is_bigendian = draw(st.booleans())
    msg.is_dense = draw(st.booleans())
    return msg


@given(clouds())
def test_pointcloud2_decodes_or_raises_cloudformaterror(msg):
    try:
        pts, names = pointcloud2_to_array(msg, remove_nans=True)
    except CloudFormatError:
        return
    assert pts.dtype == np.float32 and pts.ndim == 2 and pts.shape[1] == len(names) >= 3
    assert pts.shape[0] <= int(msg.width) * int(msg.height)
    assert pts.shape[0] == 0 or len(msg.data) >= pts.shape[0] * 12  # never more points than the bytes hold
    assert np.isfinite(pts[:, :3]).all()
    try:  # what the node does next (clip2_ros.node.cloud_to_frame)
        frame, _ = frame_from_arrays(pts, names, stamp=1.0, frame_id="lidar", intensity_field="intensity",
                                     intensity_max=None)
    except ValueError:
        return
    assert np.isfinite(frame.points).all()


ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "rgb16", "bgr16", "16UC1", "bayer_rggb8", "yuv422",
             "", "RGB8"]


@st.composite
def images(draw):
    msg = Image()
    msg.encoding = draw(st.sampled_from(ENCODINGS))
    if draw(st.booleans()):
        msg.width, msg.height = draw(st.integers(0, 16)), draw(st.integers(0, 16))
        ch = 2 if "16" in msg.encoding else 1
        msg.step = msg.width * 4 * ch + draw(st.sampled_from([0, 0, 2, -1]))
        msg.step = max(0, msg.step)
        n = msg.step * msg.height + draw(st.sampled_from([0, 0, -1, 3]))
        msg.data = draw(st.binary(min_size=max(0, n), max_size=max(0, n)))
    else:
        msg.width, msg.height, msg.step = draw(u32(64)), draw(u32(64)), draw(u32(256))
        msg.data = draw(st.binary(max_size=2048))
    msg.is_bigendian = draw(st.integers(0, 255))
    return msg


@given(images())
def test_image_decodes_or_raises_imagedecodeerror(msg):
    try:
        rgb = image_to_rgb(msg)
    except ImageDecodeError:
        return
    assert rgb.dtype == np.uint8 and rgb.shape == (msg.height, msg.width, 3)


def _encoded(fmt: str, w: int, h: int, seed: int) -> bytes:
    from PIL import Image as PILImage

    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def _claim_size(png: bytes, w: int, h: int) -> bytes:
    out = bytearray(png)
    i = out.index(b"IHDR")
    out[i + 4:i + 12] = struct.pack(">II", w, h)
    out[i + 17:i + 21] = struct.pack(">I", zlib.crc32(bytes(out[i:i + 17])))
    return bytes(out)


@st.composite
def compressed(draw):
    fmt = draw(st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]))
    try:
        good = _encoded(fmt, draw(st.integers(1, 12)), draw(st.integers(1, 12)), draw(st.integers(0, 9)))
    except (KeyError, OSError):  # a format this Pillow build cannot write
        good = _encoded("PNG", 4, 4, 0)
    kind = draw(st.sampled_from(["good", "cut", "flipped", "bomb", "random"]))
    if kind == "cut":
        data = good[: draw(st.integers(0, len(good)))]
    elif kind == "flipped":
        body = bytearray(good)
        for _ in range(draw(st.integers(1, 8))):
            at = draw(st.integers(0, len(body) - 1))
            body[at] = draw(st.integers(0, 255))
        data = bytes(body)
    elif kind == "bomb":
        data = _claim_size(_encoded("PNG", 2, 2, 0), draw(st.integers(1, 65535)), draw(st.integers(1, 65535)))
    elif kind == "random":
        data = draw(st.binary(max_size=512))
    else:
        data = good
    return CompressedImage(format=draw(st.sampled_from(["jpeg", "png", "", "rgb8; jpeg compressed bgr8"])), data=data)


@given(compressed())
def test_compressed_image_decodes_or_raises_imagedecodeerror(msg):
    try:
        rgb = compressed_image_to_rgb(msg)
    except ImageDecodeError:
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert rgb.shape[0] * rgb.shape[1] <= 64_000_000


MATRIX_VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), st.sampled_from([0.0, 1.0, 500.0]))


@st.composite
def camera_infos(draw):
    msg = CameraInfo()
    msg.width, msg.height = draw(u32(2000)), draw(u32(2000))
    if draw(st.booleans()):  # a plausible pinhole, perhaps spoiled
        fx, fy = draw(st.floats(-10, 2000)), draw(st.floats(-10, 2000))
        k = [fx, 0.0, 320.0, 0.0, fy, 240.0, 0.0, 0.0, 1.0]
        if draw(st.booleans()):
            k[draw(st.integers(0, 8))] = draw(MATRIX_VALUES)
        msg.k = k
        msg.p = [fx, 0.0, 320.0, draw(MATRIX_VALUES), 0.0, fy, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    else:
        msg.k = draw(st.lists(MATRIX_VALUES, min_size=9, max_size=9))
        msg.p = draw(st.lists(MATRIX_VALUES, min_size=12, max_size=12))
    msg.d = draw(st.lists(st.floats(width=64), max_size=8))
    msg.distortion_model = draw(st.sampled_from(["plumb_bob", "", "rational_polynomial", "x"]))
    return msg


@given(camera_infos(), st.sampled_from(["K", "P", "auto"]), st.sampled_from(["/cam/image_rect", "/cam/image_raw"]))
def test_camera_info_gives_intrinsics_or_raises_valueerror(msg, source, topic):
    try:
        cam = camera_info_intrinsics(msg, source=source, image_topic=topic)
    except ValueError:
        return
    assert np.isfinite(cam.K).all() and cam.K[0, 0] > 0 and cam.K[1, 1] > 0
    assert np.isfinite(cam.offset).all() or cam.source == "P"
    assert cam.size_wh == (msg.width, msg.height) and min(cam.size_wh) > 0
