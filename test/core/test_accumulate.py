"""clip2_core.accumulate: the pose buffer a node looks sweeps' poses up in, and merge_sweeps' inputs."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from clip2_core.accumulate import PoseBuffer, merge_sweeps


def _pose(yaw_deg, xyz):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("z", yaw_deg, degrees=True).as_matrix()
    T[:3, 3] = xyz
    return T


def test_pose_buffer_exact_interpolated_extrapolated_or_nothing():
    buf = PoseBuffer(size=10, tolerance=0.005, max_extrapolation=0.1)
    assert buf.at(1.0) is None
    buf.add(1.0, _pose(0, (0, 0, 0)))
    buf.add(1.1, _pose(20, (2, 0, 0)))
    np.testing.assert_array_equal(buf.at(1.003), _pose(0, (0, 0, 0)))  # within the tolerance: that pose
    mid = buf.at(1.05)  # halfway: position linear, rotation slerped
    np.testing.assert_allclose(mid, _pose(10, (1, 0, 0)), atol=1e-9)
    # a sweep just ahead of its pose: the newest two poses' motion carried on, at most 0.1 s
    np.testing.assert_allclose(buf.at(1.15), _pose(30, (3, 0, 0)), atol=1e-9)
    assert buf.at(0.9) is None and buf.at(1.25) is None  # never into the past, never far ahead
    buf.add(1.05, _pose(90, (9, 9, 9)))  # out of order: ignored, the buffer stays sorted
    np.testing.assert_allclose(buf.at(1.05), mid, atol=1e-9)
    buf.add(0.0, _pose(0, (5, 5, 5)))  # time jumped back (a bag that loops): a fresh start
    assert len(buf) == 1 and buf.at(1.05) is None


def test_merge_sweeps_moves_filters_and_checks_columns():
    cur = np.array([[1.0, 0, 0, 7]], np.float32)
    past = np.array([[0.5, 0.5, 0, 1], [3, 0, 0, 2]], np.float32)  # the first is the ego body (< 1.5 m)
    T = _pose(90, (10, 0, 0))
    out = merge_sweeps(cur, [(past, T, 0.05)], min_range=1.5)
    assert out.shape == (2, 5)
    np.testing.assert_allclose(out[1], [10, 3, 0, 2, 0.05], atol=1e-6)  # rotated, moved, time lag last
    np.testing.assert_array_equal(out[0], [1, 0, 0, 7, 0])
    with pytest.raises(ValueError, match="same columns"):
        merge_sweeps(cur, [(past[:, :3], T, 0.05)])
