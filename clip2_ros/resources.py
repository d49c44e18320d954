"""Where clip2_ros's installed files (config/, launch/, rviz/) are; no heavy imports."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

PACKAGE = "clip2_ros"


def config_dirs() -> Iterator[Path]:
    """Where the shipped config files may be, in order: ``share/clip2_ros/config`` of a ROS 2
    install (ament index), the source tree's ``config/`` (checkout, editable install), then the
    ``share/clip2_ros/config`` that pip's ``data_files`` wrote (under ``sys.prefix``, or beside the
    package with ``pip install --target``). Callers take the first that holds their file."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            yield Path(get_package_share_directory(PACKAGE)) / "config"
        except (PackageNotFoundError, OSError):  # not installed / AMENT_PREFIX_PATH unset
            pass
    except ImportError:
        pass
    here = Path(__file__).resolve().parent.parent
    yield here / "config"
    yield Path(sys.prefix) / "share" / PACKAGE / "config"
    yield here / "share" / PACKAGE / "config"
