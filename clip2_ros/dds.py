"""Fast DDS settings for large messages (LiDAR sweeps of 0.5 MB and more) between processes.

With Fast DDS defaults a PointCloud2 over ~0.5 MB never reaches a best-effort subscription in
another process on the same host: the publisher's 512 KiB shared-memory segment cannot hold the
sample's fragments (docs/dds.md has the cause and the measurements). The shipped profile
``config/fastdds_large_data.xml`` gives each process a 16 MiB segment; it has to be in the
environment of the PUBLISHING process (LiDAR driver, ``ros2 bag play``, ``clip2 bag play``) before
its ROS context starts. Fast DDS reads ``FASTDDS_DEFAULT_PROFILES_FILE`` once per process, when the
first participant is created, so setting it later in a running process has no effect.

    from clip2_ros.dds import large_data_env
    subprocess.Popen(["ros2", "bag", "play", bag], env=large_data_env())   # a child process
    apply_large_data_profile()   # this process, before rclpy.init()

Nothing here imports rclpy or numpy.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, MutableMapping, Optional

PACKAGE = "clip2_ros"
LARGE_DATA_PROFILE = "fastdds_large_data.xml"  # publisher side (and harmless everywhere)
UDP_RECEIVER_PROFILE = "fastdds_udp_receiver.xml"  # subscriber-only fallback, SUBNET discovery only
PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"  # Fast DDS 3 (Jazzy, Kilted, Rolling)
LEGACY_PROFILE_ENV = "FASTRTPS_DEFAULT_PROFILES_FILE"  # Fast DDS 2 (Humble); deprecated in Kilted
FASTDDS_RMWS = ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")


def shipped_profile_path(name: str = LARGE_DATA_PROFILE) -> Path:
    """The installed (else source-tree) path of a shipped Fast DDS profile, ``name`` one of
    :data:`LARGE_DATA_PROFILE`, :data:`UDP_RECEIVER_PROFILE`."""
    from clip2_ros.resources import config_dirs

    tried = []
    for d in config_dirs():
        p = d / name
        if p.is_file():
            return p
        tried.append(str(p))
    raise FileNotFoundError(f"Fast DDS profile {name} not found (looked at {', '.join(tried)}); "
                            "reinstall clip2_ros (setup.py installs config/*.xml)")


def uses_fastdds(env: Optional[Mapping[str, str]] = None) -> bool:
    """Whether ``env`` (default ``os.environ``) selects Fast DDS: ``RMW_IMPLEMENTATION`` unset or
    empty (Fast DDS is ROS 2's default RMW) or one of the two Fast DDS RMWs."""
    env = os.environ if env is None else env
    return env.get("RMW_IMPLEMENTATION", "").strip() in ("",) + FASTDDS_RMWS


def user_profile(env: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The Fast DDS profile file ``env`` already names (new or old variable), else None."""
    env = os.environ if env is None else env
    for var in (PROFILE_ENV, LEGACY_PROFILE_ENV):
        if env.get(var, "").strip():
            return env[var]
    return None


def large_data_env(env: Optional[Mapping[str, str]] = None, profile: Optional[Path] = None) -> dict:
    """A copy of ``env`` (default ``os.environ``) with ``FASTDDS_DEFAULT_PROFILES_FILE`` set to the
    shipped large-data profile (or ``profile``), for a child process.

    Left unchanged when the RMW is not Fast DDS, or when a profile file is already set
    (``FASTDDS_DEFAULT_PROFILES_FILE`` or ``FASTRTPS_DEFAULT_PROFILES_FILE``): the user's own profile
    wins; docs/dds.md says what it needs for large clouds.
    """
    out = dict(os.environ if env is None else env)
    if uses_fastdds(out) and user_profile(out) is None:
        out[PROFILE_ENV] = str(profile if profile is not None else shipped_profile_path())
    return out


def apply_large_data_profile(environ: Optional[MutableMapping[str, str]] = None) -> Optional[str]:
    """Set the large-data profile in ``environ`` (default ``os.environ``, i.e. this process) under the
    rules of :func:`large_data_env`; call it before ``rclpy.init()``. Returns the profile file now in
    effect (the shipped one or the user's), or None when the RMW is not Fast DDS."""
    environ = os.environ if environ is None else environ
    if not uses_fastdds(environ):
        return None
    if user_profile(environ) is None:
        environ[PROFILE_ENV] = str(shipped_profile_path())
    return user_profile(environ)
