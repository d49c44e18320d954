"""The data containers every clip2 layer speaks.

One documented dataclass per concept. Shapes, dtypes and frames are stated in the
field comments; nothing here imports ROS or torch.

Box convention (stated once, used everywhere)
---------------------------------------------
A 3D box is ``centre (x, y, z)`` — the geometric centre — ``size (l, w, h)`` with
``l`` measured along the heading, and ``yaw``: the heading angle about +z,
counter-clockwise from +x, in radians, all in the frame the box lives in (the LiDAR
frame unless said otherwise).  As a flat array a box is
``[x, y, z, l, w, h, yaw]`` (``BOX_DIM == 7``).  nuScenes' ``Box.wlh`` is
(width, length, height): convert once, at the dataset boundary.

A 2D box is ``[x0, y0, x1, y1]`` in pixels (``x`` right, ``y`` down), with
``x1 > x0`` and ``y1 > y0``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

BOX_DIM = 7  # x, y, z, l, w, h, yaw


@dataclass
class Box3D:
    """An oriented 3D box (see the module docstring for the convention)."""

    center: np.ndarray  # (3,) float64 x, y, z of the geometric centre [m]
    size: np.ndarray  # (3,) float64 l, w, h [m]; l along the heading
    yaw: float  # heading about +z, CCW from +x [rad]
    label: Optional[str] = None  # class / text label, when known
    score: float = 1.0  # confidence in [0, 1]
    token: Optional[str] = None  # dataset id (e.g. nuScenes annotation token)
    attributes: Dict[str, Any] = field(default_factory=dict)  # free-form extras

    def __post_init__(self) -> None:
        self.center = np.asarray(self.center, dtype=np.float64).reshape(3)
        self.size = np.asarray(self.size, dtype=np.float64).reshape(3)
        self.yaw = float(self.yaw)

    def as_array(self) -> np.ndarray:
        """(7,) float64 ``[x, y, z, l, w, h, yaw]``."""
        return np.concatenate([self.center, self.size, [self.yaw]])

    @classmethod
    def from_array(cls, arr: Sequence[float], **kwargs: Any) -> "Box3D":
        a = np.asarray(arr, dtype=np.float64).reshape(BOX_DIM)
        return cls(center=a[:3], size=a[3:6], yaw=float(a[6]), **kwargs)


def boxes_to_array(boxes: Sequence[Box3D]) -> np.ndarray:
    """Stack boxes into ``(M, 7)`` float64 ``[x, y, z, l, w, h, yaw]``."""
    if len(boxes) == 0:
        return np.zeros((0, BOX_DIM), dtype=np.float64)
    return np.stack([b.as_array() for b in boxes])


@dataclass
class CameraView:
    """One camera image with its calibration at the image's own timestamp."""

    name: str  # e.g. "CAM_FRONT"
    K: np.ndarray  # (3, 3) float64 pinhole intrinsics
    T_lidar_to_cam: np.ndarray  # (4, 4) float64: LiDAR frame -> camera optical frame (x right, y down, z forward)
    size_wh: Tuple[int, int]  # image width, height [px]
    image: Optional[np.ndarray] = None  # (H, W, 3) uint8 RGB, or None when not loaded / undecodable
    stamp: float = 0.0  # capture time [s]
    image_path: Optional[str] = None  # where the image came from, if a file
    token: Optional[str] = None  # dataset id (e.g. nuScenes sample_data token)

    def __post_init__(self) -> None:
        self.K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        self.T_lidar_to_cam = np.asarray(self.T_lidar_to_cam, dtype=np.float64).reshape(4, 4)
        self.size_wh = (int(self.size_wh[0]), int(self.size_wh[1]))


@dataclass
class Frame:
    """One LiDAR sweep with the camera views taken around it."""

    points: np.ndarray  # (N, C) float32, columns named by `point_fields`, LiDAR frame
    point_fields: Tuple[str, ...] = ("x", "y", "z", "intensity")  # names of the C columns; first three are x, y, z
    cameras: Dict[str, CameraView] = field(default_factory=dict)  # camera name -> view
    stamp: float = 0.0  # LiDAR sweep time [s]
    frame_id: str = "lidar"  # coordinate frame of `points` and of boxes
    token: Optional[str] = None  # dataset id (e.g. nuScenes sample token)
    scene: Optional[str] = None  # scene / log name
    gt_boxes: List[Box3D] = field(default_factory=list)  # ground truth in the LiDAR frame, when known
    intensity_max: Optional[float] = None  # the sensor's intensity full scale (nuScenes 255, KITTI 1); None: the encoder's

    def __post_init__(self) -> None:
        pts = np.asarray(self.points, dtype=np.float32)
        if pts.ndim != 2 or pts.shape[1] < 3:
            raise ValueError(f"Frame.points must be (N, C>=3), got shape {pts.shape}")
        if len(self.point_fields) != pts.shape[1]:
            raise ValueError(
                f"Frame.point_fields names {len(self.point_fields)} columns but points have {pts.shape[1]}"
            )
        self.points = pts
        self.point_fields = tuple(self.point_fields)

    @property
    def xyz(self) -> np.ndarray:
        """(N, 3) float32 view of the coordinates."""
        return self.points[:, :3]


@dataclass
class Cluster:
    """A group of points believed to be one object."""

    indices: np.ndarray  # (K,) int64 row indices into the frame's points
    box: Box3D  # fitted oriented box, LiDAR frame
    cluster_id: int = 0  # id unique within the frame

    @property
    def num_points(self) -> int:
        return int(self.indices.shape[0])


@dataclass
class Detection:
    """A recognised object: a box with an open-vocabulary label."""

    box: Box3D  # LiDAR frame
    label: str  # best label, or "unknown" below the unknown threshold
    score: float  # probability of `label` in [0, 1]
    cluster_id: int = -1  # cluster it came from, -1 if none
    num_points: int = 0  # points in the cluster
    embedding: Optional[np.ndarray] = None  # (D,) float32 L2-normalised point embedding
    top_k: List[Tuple[str, float]] = field(default_factory=list)  # [(label, prob), ...] best first


@dataclass
class Proxy:
    """A mined (text, image, point) triplet."""

    text: str  # label text from the 2D proposal
    points: np.ndarray  # (K, C) float32 point crop, LiDAR frame
    image_embedding: Optional[np.ndarray] = None  # (D,) float32 CLIP embedding of the image crop
    box_2d: Optional[np.ndarray] = None  # (4,) float64 x0, y0, x1, y1 of the proposal [px]
    score: float = 1.0  # proposal confidence
    provenance: Dict[str, Any] = field(default_factory=dict)  # scene, sample, camera, tokens, ...
    image_crop: Optional[np.ndarray] = None  # (h, w, 3) uint8 RGB, optional, for inspection
