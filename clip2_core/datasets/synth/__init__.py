"""A synthetic driving world written in nuScenes format (see docs/synthetic_world.md).

``generate(SynthConfig(out=..., scenes=..., seconds=..., seed=...))`` writes a dataroot that
``nuscenes.nuscenes.NuScenes(version, dataroot)`` loads; read it back with
:class:`clip2_core.datasets.nuscenes.NuScenesReader`.
"""
from .writer import SynthConfig, generate
from .sensors import CAMERA_NAMES

__all__ = ["SynthConfig", "generate", "CAMERA_NAMES"]
