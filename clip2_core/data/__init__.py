"""Sample data shipped with clip2 (package data, found from this file, never from the working directory).

``kitti_000008/``: one real KITTI frame (Velodyne HDL-64E points, camera image, calibration, six
annotated cars), used by ``clip2 demo``, ``clip2 bench clustering`` and the tests. KITTI is
CC BY-NC-SA 3.0: non-commercial use only; cite Geiger et al., CVPR 2012. See README.md here.
"""
from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
SAMPLE_FRAMES = ("kitti_000008",)


def sample_frame_dir(name: str = "kitti_000008") -> Path:
    """The folder of a shipped sample frame (``points.npy``, ``calib.json``, ``gt.json``, images)."""
    if name not in SAMPLE_FRAMES:
        raise ValueError(f"unknown sample frame {name!r}; shipped: {list(SAMPLE_FRAMES)}")
    d = DATA_DIR / name
    if not (d / "points.npy").is_file():
        raise FileNotFoundError(f"sample frame {name} is missing from this installation ({d})")
    return d
