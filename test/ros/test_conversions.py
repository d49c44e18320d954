"""PointCloud2 / Image / CameraInfo conversions against hand-worked bytes and a naive per-point decoder."""
import struct

import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image, PointCloud2, PointField

from clip2_ros.conversions import (
    CloudFormatError,
    ImageDecodeError,
    array_to_pointcloud2,
    camera_info_to_intrinsics,
    compressed_image_to_rgb,
    image_to_rgb,
    make_camera_info,
    pointcloud2_to_array,
    pointcloud2_to_structured,
    quaternion_to_rotation,
    quaternion_to_yaw,
    rgb_to_compressed_image,
    rgb_to_image,
    seconds_to_stamp,
    stamp_to_seconds,
    structured_to_pointcloud2,
    yaw_to_quaternion,
)

_STRUCT = {1: "b", 2: "B", 3: "h", 4: "H", 5: "i", 6: "I", 7: "f", 8: "d"}


def naive_decode(msg, names):
    """Reference: struct.unpack every field of every point (the slow way)."""
    order = ">" if msg.is_bigendian else "<"
    fields = {f.name: f for f in msg.fields}
    data = bytes(msg.data)
    rows = []
    for r in range(msg.height):
        for c in range(msg.width):
            base = r * msg.row_step + c * msg.point_step
            row = []
            for n in names:
                f = fields[n]
                row.append(struct.unpack_from(order + _STRUCT[f.datatype], data, base + f.offset)[0])
            rows.append(row)
    return np.array(rows, dtype=np.float64).reshape(-1, len(names))


def _cloud(fields, point_step, width, height=1, row_step=None, big=False, data=None):
    msg = PointCloud2()
    msg.height, msg.width = height, width
    msg.fields = [PointField(name=n, offset=o, datatype=t, count=c) for n, o, t, c in fields]
    msg.is_bigendian = big
    msg.point_step = point_step
    msg.row_step = row_step if row_step is not None else point_step * width
    msg.is_dense = False
    msg.data = data if data is not None else bytes(msg.row_step * height)
    return msg


def test_worked_example_big_endian_bytes():
    # one point, big-endian: x=1.5 y=-2.0 z=0.25 (float32) then ring=7 (uint16), 2 pad bytes
    data = struct.pack(">fffH", 1.5, -2.0, 0.25, 7) + b"\x00\x00"
    msg = _cloud([("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("ring", 12, 4, 1)], 16, 1, big=True, data=data)
    pts, names = pointcloud2_to_array(msg)
    assert names == ("x", "y", "z", "ring")
    assert pts.dtype == np.float32
    assert pts.tolist() == [[1.5, -2.0, 0.25, 7.0]]


@pytest.mark.parametrize("big", [False, True])
def test_arbitrary_layout_matches_naive_decoder(big):
    rng = np.random.default_rng(3)
    # fields out of order, gaps, mixed types, point_step padding, two padded rows
    fields = [("intensity", 0, 4, 1), ("z", 4, 8, 1), ("x", 16, 7, 1), ("t", 20, 5, 1), ("y", 28, 7, 1),
              ("flag", 33, 1, 1)]
    h, w, step, row_step = 2, 37, 40, 37 * 40 + 12
    raw = rng.integers(0, 256, size=row_step * h, dtype=np.uint8)
    msg = _cloud(fields, step, w, height=h, row_step=row_step, big=big, data=raw.tobytes())
    pts, names = pointcloud2_to_array(msg)
    assert names == ("x", "y", "z", "intensity", "t", "flag")
    with np.errstate(over="ignore"):
        ref = naive_decode(msg, names).astype(np.float32)  # float64 beyond float32 range -> inf, as decoded
    np.testing.assert_array_equal(np.isnan(pts), np.isnan(ref))
    fin = ~np.isnan(ref)
    np.testing.assert_array_equal(pts[fin], ref[fin])


def test_structured_view_is_zero_copy():
    rec = np.zeros(5, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("i", "<f4")])
    rec["x"] = np.arange(5)
    msg = structured_to_pointcloud2(rec, frame_id="lidar")
    view = pointcloud2_to_structured(msg)
    assert np.shares_memory(view, np.frombuffer(msg.data, dtype=np.uint8))
    assert view["x"].tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("order", ["<", ">"])
def test_structured_round_trip_mixed_types(order):
    dt = np.dtype({"names": ["x", "y", "z", "label_id", "score", "ring"],
                   "formats": [order + "f4", order + "f4", order + "f8", order + "i4", order + "f4", order + "u2"],
                   "offsets": [0, 4, 8, 16, 24, 28], "itemsize": 36})
    rng = np.random.default_rng(0)
    rec = np.zeros(100, dtype=dt)
    for name in ("x", "y", "z", "score"):
        rec[name] = rng.normal(0, 10, 100)
    rec["label_id"] = rng.integers(-1, 50, 100)
    rec["ring"] = rng.integers(0, 32, 100)
    msg = structured_to_pointcloud2(rec, frame_id="f")
    assert msg.is_bigendian == (order == ">")
    assert msg.point_step == 36 and msg.width == 100 and len(msg.data) == 3600
    back = pointcloud2_to_structured(msg)
    for name in dt.names:
        np.testing.assert_array_equal(back[name], rec[name])
    pts, names = pointcloud2_to_array(msg)
    np.testing.assert_array_equal(pts, naive_decode(msg, names).astype(np.float32))


def test_array_round_trip_with_dtypes_and_nans():
    pts = np.array([[1, 2, 3, 10], [np.nan, 0, 0, 11], [4, 5, np.inf, 12], [7, 8, 9, 13]], dtype=np.float32)
    msg = array_to_pointcloud2(pts, ("x", "y", "z", "cluster_id"), frame_id="lidar", dtypes={"cluster_id": np.int32})
    assert msg.fields[3].datatype == PointField.INT32 and msg.is_dense is False
    back, names = pointcloud2_to_array(msg)
    np.testing.assert_array_equal(back, pts)
    dense, _ = pointcloud2_to_array(msg, remove_nans=True)
    assert dense[:, 3].tolist() == [10, 13]
    sel, sel_names = pointcloud2_to_array(msg, fields=["z", "x", "y"])
    assert sel_names == ("z", "x", "y") and sel[0].tolist() == [3, 1, 2]


def test_count_greater_than_one_field():
    data = struct.pack("<fff3f", 1, 2, 3, 0.1, 0.2, 0.3)
    msg = _cloud([("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("normal", 12, 7, 3)], 24, 1, data=data)
    pts, names = pointcloud2_to_array(msg)
    assert names == ("x", "y", "z", "normal_0", "normal_1", "normal_2")
    np.testing.assert_allclose(pts[0], [1, 2, 3, 0.1, 0.2, 0.3], rtol=1e-6)


def test_empty_cloud():
    msg = _cloud([("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)], 12, 0, data=b"")
    pts, names = pointcloud2_to_array(msg)
    assert pts.shape == (0, 3) and names == ("x", "y", "z")


XYZ = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(fields=XYZ[:2], point_step=8, width=2), "no 'z' field"),
        (dict(fields=XYZ, point_step=12, width=3, data=bytes(35)), "data has 35 bytes"),
        (dict(fields=XYZ, point_step=12, width=3, data=bytes(40)), "data has 40 bytes"),
        (dict(fields=XYZ + [("i", 10, 7, 1)], point_step=12, width=1), "does not fit in point_step"),
        (dict(fields=XYZ + [("i", 12, 42, 1)], point_step=16, width=1), "unknown PointField datatype 42"),
        (dict(fields=XYZ + [("x", 12, 7, 1)], point_step=16, width=1), "appears twice"),
        (dict(fields=XYZ, point_step=12, width=2, row_step=20, data=bytes(20)), "row_step 20 is smaller"),
        (dict(fields=XYZ, point_step=0, width=2, data=b""), "point_step must be > 0"),
        # a corrupt header's uint32 beyond what numpy's C int holds (was a bare ValueError from np.dtype)
        (dict(fields=XYZ, point_step=2**31, width=1, row_step=12, data=bytes(12)), "point_step 2147483648 is absurd"),
        (dict(fields=XYZ, point_step=2**32 - 1, width=1, row_step=12, data=bytes(12)), "is absurd"),
        (dict(fields=[("x", 0, 7, 2**31), ("y", 4, 7, 1), ("z", 8, 7, 1)], point_step=12, width=1), "has count"),
    ],
)
def test_malformed_clouds_raise_clear_errors(kwargs, match):
    msg = _cloud(**kwargs)
    with pytest.raises(CloudFormatError, match=match):
        pointcloud2_to_array(msg)


def test_requested_missing_field():
    msg = _cloud(XYZ, 12, 1)
    with pytest.raises(CloudFormatError, match="not in the PointCloud2"):
        pointcloud2_to_array(msg, fields=["x", "intensity"])


# ---------------------------------------------------------------------------------------------- images
def _rgb(h=5, w=7, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("enc", ["rgb8", "bgr8"])
def test_image_round_trip(enc):
    rgb = _rgb()
    msg = rgb_to_image(rgb, encoding=enc)
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


def test_image_padded_rows_and_16bit_big_endian():
    h, w = 3, 4
    mono = np.arange(h * w, dtype=np.uint16).reshape(h, w) * 1000
    msg = Image(height=h, width=w, encoding="mono16", is_bigendian=1, step=w * 2 + 6)
    rows = [mono[r].astype(">u2").tobytes() + b"\xff" * 6 for r in range(h)]
    msg.data = b"".join(rows)
    out = image_to_rgb(msg)
    assert out.shape == (h, w, 3)
    np.testing.assert_array_equal(out[:, :, 0], (mono >> 8).astype(np.uint8))
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 2])
    bgra = Image(height=1, width=2, encoding="bgra8", step=8)
    bgra.data = bytes([1, 2, 3, 255, 4, 5, 6, 255])
    assert image_to_rgb(bgra).tolist() == [[[3, 2, 1], [6, 5, 4]]]


@pytest.mark.parametrize(
    "msg, match",
    [
        (Image(height=2, width=2, encoding="bayer_rggb8", step=2, data=bytes(4)), "unsupported image encoding"),
        (Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(7)), "image data has 7 bytes"),
        (Image(height=2, width=2, encoding="rgb8", step=4, data=bytes(8)), "step 4 <"),
        (Image(height=0, width=2, encoding="rgb8", step=6, data=b""), "empty image"),
    ],
)
def test_bad_images(msg, match):
    with pytest.raises(ImageDecodeError, match=match):
        image_to_rgb(msg)


def test_compressed_png_exact_and_jpeg_close():
    rgb = _rgb(16, 24)
    np.testing.assert_array_equal(compressed_image_to_rgb(rgb_to_compressed_image(rgb, "png")), rgb)
    smooth = np.zeros((32, 32, 3), dtype=np.uint8)
    smooth[..., 0] = np.linspace(0, 255, 32, dtype=np.uint8)[None, :]
    back = compressed_image_to_rgb(rgb_to_compressed_image(smooth, "jpeg", quality=95))
    assert back.shape == smooth.shape and np.abs(back.astype(int) - smooth).mean() < 4


def _png_claiming(w: int, h: int) -> bytes:
    """A valid 1x1 PNG whose IHDR (CRC mended) claims w x h pixels: a decompression bomb header."""
    import zlib

    png = bytearray(rgb_to_compressed_image(_rgb(1, 1), "png").data)
    ihdr = png.index(b"IHDR")
    png[ihdr + 4: ihdr + 12] = struct.pack(">II", w, h)
    png[ihdr + 17: ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(png[ihdr: ihdr + 17])))
    return bytes(png)


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20,
                                  _png_claiming(20000, 20000), _png_claiming(65535, 65535), _png_claiming(9000, 8000)])
def test_undecodable_compressed_image(data):
    with pytest.raises(ImageDecodeError):
        compressed_image_to_rgb(CompressedImage(format="jpeg", data=data))


def test_camera_info_round_trip_and_bad_k():
    K = np.array([[500.0, 0, 320], [0, 510, 240], [0, 0, 1]])
    K2, size = camera_info_to_intrinsics(make_camera_info(K, (640, 480), frame_id="cam"))
    np.testing.assert_array_equal(K2, K)
    assert size == (640, 480)
    bad = make_camera_info(K, (640, 480))
    bad.k = [0.0] * 9
    with pytest.raises(ValueError, match="not a pinhole"):
        camera_info_to_intrinsics(bad)
    with pytest.raises(ValueError, match="no image size"):
        camera_info_to_intrinsics(make_camera_info(K, (0, 0)))


def test_rotations_and_stamps():
    for yaw in [0.0, 0.3, -2.5, 3.0]:
        q = yaw_to_quaternion(yaw)
        assert quaternion_to_yaw(*q) == pytest.approx(yaw)
        R = quaternion_to_rotation(*q)
        np.testing.assert_allclose(R[:2, :2], [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]], atol=1e-12)
    with pytest.raises(ValueError):
        quaternion_to_rotation(0, 0, 0, 0)
    s = seconds_to_stamp(12.25)
    assert (s.sec, s.nanosec) == (12, 250_000_000)
    assert stamp_to_seconds(seconds_to_stamp(1.9999999999)) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        seconds_to_stamp(-1.0)
