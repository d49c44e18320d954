import numpy as np
import pytest

from clip2_core.pointcloud_io import load_point_cloud, save_pcd_binary


def test_bin_npy_pcd_roundtrip(tmp_path):
    pts = np.random.default_rng(0).normal(size=(50, 5)).astype(np.float32)
    pts.tofile(tmp_path / "a.pcd.bin")
    p, f = load_point_cloud(tmp_path / "a.pcd.bin")
    np.testing.assert_array_equal(p, pts)
    assert f == ("x", "y", "z", "intensity", "ring")
    pts[:, :4].copy().tofile(tmp_path / "k.bin")
    p, f = load_point_cloud(tmp_path / "k.bin")
    np.testing.assert_array_equal(p, pts[:, :4])
    np.save(tmp_path / "a.npy", pts[:, :3])
    p, f = load_point_cloud(tmp_path / "a.npy")
    assert p.shape == (50, 3) and f == ("x", "y", "z")
    save_pcd_binary(tmp_path / "a.pcd", pts[:, :4], ("x", "y", "z", "intensity"))
    p, f = load_point_cloud(tmp_path / "a.pcd")
    np.testing.assert_array_equal(p, pts[:, :4])


def test_ascii_pcd_with_field_order(tmp_path):
    (tmp_path / "a.pcd").write_text(
        "VERSION 0.7\nFIELDS intensity x y z\nSIZE 4 4 4 4\nTYPE F F F F\nCOUNT 1 1 1 1\n"
        "WIDTH 2\nHEIGHT 1\nPOINTS 2\nDATA ascii\n5 1 2 3\n6 4 5 6\n"
    )
    p, f = load_point_cloud(tmp_path / "a.pcd")
    assert f == ("x", "y", "z", "intensity")
    np.testing.assert_array_equal(p, [[1, 2, 3, 5], [4, 5, 6, 6]])


@pytest.mark.parametrize(
    "name,content,match",
    [
        ("bad.bin", np.zeros(7, np.float32).tobytes(), "multiple of 4"),
        ("bad.pcd", b"VERSION 0.7\nFIELDS a b\nSIZE 4 4\nTYPE F F\nWIDTH 1\nHEIGHT 1\nPOINTS 1\nDATA ascii\n1 2\n", "needs x, y and z"),
        ("trunc.pcd", b"FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nWIDTH 10\nHEIGHT 1\nPOINTS 10\nDATA binary\n\x00\x00", "truncated"),
        ("c.pcd", b"FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nPOINTS 1\nDATA binary_compressed\n", "not supported"),
        ("a.txt", b"", "unknown point cloud format"),
    ],
)
def test_bad_files_give_clear_errors(tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=match):
        load_point_cloud(tmp_path / name)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_point_cloud(tmp_path / "nope.bin")
