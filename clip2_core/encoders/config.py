"""Point-encoder architectures as data: JSON model configs parsed into typed dataclasses.

A model config file ``model_configs/<name>.json`` holds::

    {
      "arch": "pointnet2" | "sparse_voxel",
      "embed_dim": 512,                      # = the CLIP embedding size it is trained against
      "normalization": {...},                # NormalizationConfig (input definition)
      "backbone": {...}                      # PointNet2Config or SparseVoxelConfig
    }

Names are versioned (``pointnet2-s-v1``): a change that alters weights' meaning gets a new
name instead of editing an existing file, so old checkpoints keep loading.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from clip2_core.encoders.normalize import INPUT_CHANNELS, NormalizationConfig

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"


def _check_keys(cls: type, d: Dict[str, Any], what: str) -> None:
    unknown = set(d) - set(cls.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown {what} keys: {sorted(unknown)}")


MAX_WIDTH = 16384  # any layer width, embed_dim included (CLIP's largest embeddings are 1024-1280)
MAX_POINTS = 65536  # points per cluster / centroids per level
MAX_NEIGHBORS = 4096
MAX_GRID = 4096  # voxels per axis
MAX_PARAMETERS = 500_000_000  # ~2 GB of fp32 weights: larger is a corrupt or hostile config, not a model


def _bounded(what: str, value: Any, hi: int, lo: int = 1) -> int:
    """``int(value)`` when ``lo <= value <= hi``, else a ValueError naming ``what`` (no huge allocation later)."""
    try:
        v = int(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{what} must be an integer, got {value!r}") from None
    if not lo <= v <= hi:
        raise ValueError(f"{what} must be in [{lo}, {hi}], got {v}")
    return v


@dataclass
class SetAbstractionConfig:
    """One PointNet++ set-abstraction level: sample, group, shared MLP, max-pool."""

    num_centroids: int  # M: centroids kept by farthest point sampling
    num_neighbors: int  # k: nearest neighbours grouped around each centroid
    mlp: List[int]  # output widths of the shared per-point MLP layers

    def __post_init__(self) -> None:
        if not self.mlp:
            raise ValueError(f"invalid set-abstraction config {self}")
        self.num_centroids = _bounded("set_abstraction num_centroids", self.num_centroids, MAX_POINTS)
        self.num_neighbors = _bounded("set_abstraction num_neighbors", self.num_neighbors, MAX_NEIGHBORS)
        self.mlp = [_bounded("set_abstraction mlp width", c, MAX_WIDTH) for c in self.mlp]


@dataclass
class PointNet2Config:
    """Dense PointNet++-style (single-scale grouping) backbone."""

    set_abstraction: List[SetAbstractionConfig]  # levels, coarse to fine order of application
    global_mlp: List[int]  # shared MLP on the last level's centroids before global max-pool
    head_hidden: int = 512  # hidden width of the projection head
    sampling: str = "fps"  # "fps" (farthest point sampling) or "stride" (first M input rows)

    def __post_init__(self) -> None:
        self.set_abstraction = [
            s if isinstance(s, SetAbstractionConfig) else SetAbstractionConfig(**s) for s in self.set_abstraction
        ]
        if not self.set_abstraction or not self.global_mlp:
            raise ValueError("pointnet2 needs at least one set-abstraction level and a global MLP")
        self.global_mlp = [_bounded("global_mlp width", c, MAX_WIDTH) for c in self.global_mlp]
        self.head_hidden = _bounded("head_hidden", self.head_hidden, MAX_WIDTH)
        if self.sampling not in ("fps", "stride"):
            raise ValueError(f"sampling must be 'fps' or 'stride', got {self.sampling!r}")
        for a, b in zip(self.set_abstraction, self.set_abstraction[1:]):
            if b.num_centroids > a.num_centroids or b.num_neighbors > a.num_centroids:
                raise ValueError(f"level {b} samples more points than level {a} provides")


@dataclass
class SparseVoxelConfig:
    """spconv sparse-voxel backbone over a cubic grid centred on the cluster."""

    voxel_size: float  # voxel edge in normalised units (x metric_scale = metres)
    grid_size: int  # voxels per axis; the grid spans [-grid_size/2, grid_size/2) * voxel_size
    channels: List[int]  # widths per stage; stage 0 is submanifold, later stages downsample x2
    head_hidden: int = 512

    def __post_init__(self) -> None:
        if not self.voxel_size > 0 or not self.channels:
            raise ValueError(f"invalid sparse-voxel config {self}")
        self.grid_size = _bounded("grid_size", self.grid_size, MAX_GRID, lo=2)
        self.channels = [_bounded("sparse-voxel channel width", c, MAX_WIDTH) for c in self.channels]
        self.head_hidden = _bounded("head_hidden", self.head_hidden, MAX_WIDTH)


_BACKBONES = {"pointnet2": PointNet2Config, "sparse_voxel": SparseVoxelConfig}


@dataclass
class PointEncoderConfig:
    """A complete point-encoder definition (architecture + input definition)."""

    name: str  # versioned model name, e.g. "pointnet2-s-v1"
    arch: str  # "pointnet2" | "sparse_voxel"
    embed_dim: int  # output embedding size (the CLIP embedding size)
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    backbone: Union[PointNet2Config, SparseVoxelConfig, None] = None
    in_channels: int = INPUT_CHANNELS  # x, y, z, intensity

    def __post_init__(self) -> None:
        if self.arch not in _BACKBONES:
            raise ValueError(f"unknown arch {self.arch!r}; known: {sorted(_BACKBONES)}")
        self.embed_dim = _bounded("embed_dim", self.embed_dim, MAX_WIDTH)
        if isinstance(self.normalization, dict):
            self.normalization = NormalizationConfig.from_dict(self.normalization)
        cls = _BACKBONES[self.arch]
        if self.backbone is None:
            raise ValueError(f"model config {self.name!r} has no 'backbone'")
        if isinstance(self.backbone, dict):
            _check_keys(cls, self.backbone, f"{self.arch} backbone")
            self.backbone = cls(**self.backbone)
        if not isinstance(self.backbone, cls):
            raise ValueError(f"backbone of arch {self.arch!r} must be {cls.__name__}")
        if self.in_channels != INPUT_CHANNELS:
            raise ValueError(f"in_channels must be {INPUT_CHANNELS} (x, y, z, intensity), got {self.in_channels}")
        if isinstance(self.backbone, PointNet2Config):
            first = self.backbone.set_abstraction[0]
            if first.num_centroids > self.normalization.num_points or first.num_neighbors > self.normalization.num_points:
                raise ValueError(
                    f"{self.name}: first level needs {first.num_centroids} centroids / {first.num_neighbors} "
                    f"neighbours but the input has only num_points={self.normalization.num_points}"
                )

        n = self.approx_parameters()
        if n > MAX_PARAMETERS:
            raise ValueError(f"{self.name}: the configured layers hold ~{n:,} weights (more than {MAX_PARAMETERS:,}); "
                             "a corrupt or hostile model config")

    def approx_parameters(self) -> int:
        """Weights of the layers this config describes, roughly (linear / conv kernels only)."""
        b = self.backbone
        if isinstance(b, PointNet2Config):
            n, width = 0, self.in_channels
            for sa in b.set_abstraction:
                chain = [width + 3, *sa.mlp]
                n += sum(x * y for x, y in zip(chain, chain[1:]))
                width = sa.mlp[-1]
            chain = [width, *b.global_mlp, b.head_hidden, self.embed_dim]
        else:
            chain = [self.in_channels, *b.channels]
            n = 27 * sum(x * y for x, y in zip(chain, chain[1:]))
            chain = [b.channels[-1], b.head_hidden, self.embed_dim]
        return n + sum(x * y for x, y in zip(chain, chain[1:]))

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "PointEncoderConfig":
        _check_keys(cls, d, "model config")
        return cls(**d)


def list_models() -> List[str]:
    """Names of the bundled point-encoder configs, sorted."""
    return sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json"))


def load_model_config(name_or_path: Union[str, Path]) -> PointEncoderConfig:
    """A bundled config by name (``"pointnet2-s-v1"``) or any JSON file by path."""
    p = Path(name_or_path)
    if p.suffix == ".json" and p.is_file():
        path = p
    else:
        path = MODEL_CONFIG_DIR / f"{name_or_path}.json"
        if not path.is_file():
            raise ValueError(f"unknown point encoder {str(name_or_path)!r}; available: {list_models()}")
    with open(path, "r", encoding="utf-8") as f:
        d = json.load(f)
    d.setdefault("name", path.stem)
    return PointEncoderConfig.from_dict(d)
