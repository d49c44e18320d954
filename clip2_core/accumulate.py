"""Multi-sweep accumulation with ego-motion compensation: one implementation for the offline
reader (``NuScenesReader(nsweeps=K)``) and the ROS node (``accumulate.sweeps``).

A 32-beam sweep holds a handful of points on an object 40 m away; nuScenes detectors commonly
fuse ~10 sweeps (0.45 s at 20 Hz). Each earlier sweep is moved into the current sweep's sensor
frame with the sensor's poses in a fixed frame (``T_cur_past = inv(T_world_cur) @ T_world_past``;
what nuscenes-devkit's ``LidarPointCloud.from_file_multisweep`` does, which the tests use as the
reference), and gets a ``time_lag`` column [s] (0 for the current sweep). Only the ego motion is
compensated: a moving object leaves a trail of its earlier positions, which is why the default is
off and the benchmark (``python bench/accumulation.py``) reports recall by range, false alarms and
the cost per sweep for each setting.

Earlier sweeps' returns within ``min_range`` [m] (bird's-eye view) of their own sensor position
are dropped before the move: the ego vehicle's own body, which would otherwise land behind the
car as a ghost object once it has moved (the current sweep's are the clusterer's ``min_range``).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Deque, Optional, Sequence, Tuple

import numpy as np

__all__ = ["AccumulateConfig", "PoseBuffer", "SweepAccumulator", "merge_sweeps", "TIME_LAG_FIELD"]

TIME_LAG_FIELD = "time_lag"


@dataclass
class AccumulateConfig:
    """How many sweeps make one frame."""

    sweeps: int = 1  # sweeps per frame, the current one included; 1 = off
    max_age: float = 0.55  # [s] earlier sweeps older than this are not used (10 sweeps at 20 Hz span 0.45 s)
    min_range: float = 1.5  # [m] earlier sweeps' returns this close to their own sensor are dropped (the ego body)

    def __post_init__(self) -> None:
        if not 1 <= int(self.sweeps) <= 30:
            raise ValueError(f"accumulate.sweeps must be in [1, 30], got {self.sweeps}")
        self.sweeps = int(self.sweeps)
        if not float(self.max_age) > 0:
            raise ValueError(f"accumulate.max_age must be > 0 s, got {self.max_age}")
        if not float(self.min_range) >= 0:
            raise ValueError(f"accumulate.min_range must be >= 0 m, got {self.min_range}")


def merge_sweeps(current: np.ndarray, past: Sequence[Tuple[np.ndarray, np.ndarray, float]],
                 min_range: float = 0.0) -> np.ndarray:
    """The current sweep and earlier ones in the current sensor frame, with a time-lag column.

    Args:
        current: (N, C) points of the current sweep, its sensor frame (x, y, z first).
        past: (points (M, C) in their own sensor frame, T_cur_past (4, 4), lag [s] >= 0) per
            earlier sweep, newest first.
        min_range: earlier sweeps' points within this BEV distance of their own sensor are dropped.
    Returns:
        (N + sum M', C + 1) float32: x, y, z moved, the other columns unchanged, ``time_lag`` last.
    """
    cur = np.asarray(current, dtype=np.float32)
    c = cur.shape[1]
    parts = [np.concatenate([cur, np.zeros((len(cur), 1), np.float32)], axis=1)]
    for pts, T, lag in past:
        pts = np.asarray(pts, dtype=np.float32)
        if pts.ndim != 2 or pts.shape[1] != c:
            raise ValueError(f"an earlier sweep has shape {pts.shape}, the current one {cur.shape}: same columns needed")
        if min_range > 0:
            with np.errstate(invalid="ignore"):
                pts = pts[~(pts[:, 0] * pts[:, 0] + pts[:, 1] * pts[:, 1] < min_range * min_range)]
        T = np.asarray(T, dtype=np.float64)
        out = np.empty((len(pts), c + 1), np.float32)
        out[:, :3] = pts[:, :3].astype(np.float64) @ T[:3, :3].T + T[:3, 3]
        out[:, 3:c] = pts[:, 3:]
        out[:, c] = lag
        parts.append(out)
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


class SweepAccumulator:
    """Streaming accumulation for a node: :meth:`add` each sweep with its sensor pose.

    ``T_world_sensor`` is the pose of the sweep's sensor frame in a fixed frame (``odom`` /
    ``map``) at the sweep's stamp. A sweep without a pose is returned alone, and so is any sweep
    after a jump back in time (a bag that loops); either clears the history.
    """

    def __init__(self, config: Optional[AccumulateConfig] = None):
        self.config = config or AccumulateConfig()
        self._history: Deque[Tuple[float, np.ndarray, np.ndarray]] = deque(maxlen=max(self.config.sweeps - 1, 0))

    def reset(self) -> None:
        self._history.clear()

    def __len__(self) -> int:
        return len(self._history)

    def add(self, points: np.ndarray, stamp: float, T_world_sensor: Optional[np.ndarray]) -> Tuple[np.ndarray, int]:
        """``(merged points (N', C + 1) with time_lag last, sweeps merged)``; see :func:`merge_sweeps`."""
        cfg = self.config
        pts = np.asarray(points, dtype=np.float32)
        if T_world_sensor is None or cfg.sweeps == 1:
            self._history.clear()
            return merge_sweeps(pts, ()), 1
        T_world = np.asarray(T_world_sensor, dtype=np.float64)
        if self._history and (stamp <= self._history[0][0] or self._history[0][2].shape[1] != pts.shape[1]):
            self._history.clear()  # time went back (or the cloud layout changed): start over
        T_cur_world = np.linalg.inv(T_world)
        past = [(p, T_cur_world @ T_w, stamp - t) for t, T_w, p in self._history if stamp - t <= cfg.max_age]
        merged = merge_sweeps(pts, past, cfg.min_range)
        self._history.appendleft((float(stamp), T_world, pts))
        return merged, 1 + len(past)


class PoseBuffer:
    """Recent sensor poses by stamp (a pose topic), looked up at a sweep's stamp: the pose with that
    stamp (within ``tolerance`` s), else interpolated between the two that bracket it, else (a sweep
    that arrives just before its pose: two topics give no order) extrapolated from the newest two
    by at most ``max_extrapolation`` s at their velocity. Position linear, rotation along the
    geodesic (slerp). Otherwise None."""

    def __init__(self, size: int = 100, tolerance: float = 0.005, max_extrapolation: float = 0.1):
        self.tolerance = float(tolerance)
        self.max_extrapolation = float(max_extrapolation)
        self._poses: Deque[Tuple[float, np.ndarray]] = deque(maxlen=int(size))

    def __len__(self) -> int:
        return len(self._poses)

    def add(self, stamp: float, T: np.ndarray) -> None:
        T = np.asarray(T, dtype=np.float64).reshape(4, 4)
        if self._poses and stamp <= self._poses[-1][0]:
            if stamp < self._poses[-1][0] - 1.0:
                self._poses.clear()  # time jumped back (a bag that loops): forget the old poses
            else:
                return  # out of order or repeated: keep the buffer sorted
        self._poses.append((float(stamp), T))

    def at(self, stamp: float) -> Optional[np.ndarray]:
        poses = list(self._poses)
        if not poses:
            return None
        stamps = np.array([t for t, _ in poses])
        i = int(np.searchsorted(stamps, stamp))
        for j in (i - 1, i):
            if 0 <= j < len(poses) and abs(stamps[j] - stamp) <= self.tolerance:
                return poses[j][1]
        if 0 < i < len(poses):
            a, b = i - 1, i
        elif i == len(poses) and len(poses) >= 2 and stamp - stamps[-1] <= self.max_extrapolation:
            a, b = len(poses) - 2, len(poses) - 1
        else:
            return None
        (t0, A), (t1, B) = poses[a], poses[b]
        w = (stamp - t0) / (t1 - t0)
        from scipy.spatial.transform import Rotation

        R0 = Rotation.from_matrix(A[:3, :3])
        step = (R0.inv() * Rotation.from_matrix(B[:3, :3])).as_rotvec()
        out = np.eye(4)
        out[:3, :3] = (R0 * Rotation.from_rotvec(step * w)).as_matrix()
        out[:3, 3] = (1 - w) * A[:3, 3] + w * B[:3, 3]
        return out
