"""Point encoders whose embeddings live in CLIP's space.

Architectures are JSON files in ``model_configs/`` (see :mod:`.config`)::

    >>> from clip2_core.encoders import list_models, create_point_encoder
    >>> list_models()
    ['pointnet2-s-v1', 'pointnet2-tiny-v1', 'sparse-voxel-s-v1']
    >>> enc = create_point_encoder("pointnet2-s-v1")          # random init
    >>> enc = create_point_encoder("pointnet2-s-v1", pretrained="runs/x/checkpoint")
    >>> enc, ckpt = load_encoder("runs/x/checkpoint")          # whatever model it stores

Input: ``(B, P, 4)`` float32 batches from :func:`.normalize.normalize_clusters`; output:
``(B, D)`` float32 L2-normalised embeddings. Importing this package does not import torch;
building an encoder does. Checkpoint files are read by :mod:`clip2_core.checkpoint`, which
depends on :mod:`.config` only; this package imports it lazily, so the dependency is one-way.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Union

from clip2_core.encoders.config import (
    PointEncoderConfig,
    PointNet2Config,
    SetAbstractionConfig,
    SparseVoxelConfig,
    list_models,
    load_model_config,
)
from clip2_core.encoders.normalize import NormalizationConfig, normalize_cluster, normalize_clusters

log = logging.getLogger(__name__)

# The encoder trained and run by default. pointnet2-xs-v1 (128 points, 0.2 M parameters) keeps a
# nuScenes sweep inside one 20 Hz LiDAR period on 2 CPU cores (encoder 11 vs 33-40 ms for
# pointnet2-s-v1 on 40 crops) and learns as well on the learning check (mean class accuracy 0.829 vs
# 0.801, same world, 3,000 steps; BENCHMARKS.md, issue 14); pointnet2-s-v1 stays for GPUs.
DEFAULT_ENCODER = "pointnet2-xs-v1"

__all__ = [
    "DEFAULT_ENCODER",
    "NormalizationConfig",
    "PointEncoderConfig",
    "PointNet2Config",
    "SetAbstractionConfig",
    "SparseVoxelConfig",
    "build_point_encoder",
    "create_point_encoder",
    "list_models",
    "load_encoder",
    "load_model_config",
    "normalize_cluster",
    "normalize_clusters",
]


def build_point_encoder(config: PointEncoderConfig):
    """A randomly initialised ``nn.Module`` for ``config`` (train mode, CPU)."""
    if config.arch == "pointnet2":
        from clip2_core.encoders.pointnet2 import PointNet2Encoder

        return PointNet2Encoder(config)
    if config.arch == "sparse_voxel":
        from clip2_core.encoders.sparse import SparseVoxelEncoder

        return SparseVoxelEncoder(config)
    raise ValueError(f"unknown arch {config.arch!r}")  # pragma: no cover - config validates arch


def create_point_encoder(
    name: Union[str, Path, PointEncoderConfig] = DEFAULT_ENCODER,
    pretrained: Optional[Union[str, Path]] = None,
    embed_dim: Optional[int] = None,
):
    """Build a point encoder by config name / JSON path / config object.

    Args:
        name: a bundled model name (see :func:`list_models`), a JSON config path, or a config.
        pretrained: a clip2 checkpoint (directory or ``.safetensors`` file, see
            :mod:`clip2_core.checkpoint`) whose weights are loaded; its stored model config
            must have the same architecture.
        embed_dim: override the output size (to match a CLIP model other than the config's).

    Returns the module in eval mode when ``pretrained`` is given, else in train mode.
    """
    cfg = name if isinstance(name, PointEncoderConfig) else load_model_config(name)
    if embed_dim is not None and int(embed_dim) != cfg.embed_dim:
        cfg = PointEncoderConfig.from_dict({**cfg.to_dict(), "embed_dim": int(embed_dim)})
    if pretrained is None:
        return build_point_encoder(cfg)
    from clip2_core.checkpoint import load_checkpoint

    ckpt = load_checkpoint(pretrained)
    if ckpt.model_config.to_dict() != cfg.to_dict():
        raise ValueError(
            f"checkpoint {pretrained} holds model {ckpt.model_config.name!r} "
            f"(embed_dim {ckpt.model_config.embed_dim}), which differs from the requested {cfg.name!r} "
            f"(embed_dim {cfg.embed_dim}); load it with clip2_core.encoders.load_encoder instead"
        )
    model = build_point_encoder(cfg)
    model.load_state_dict(ckpt.state_dict, strict=True)
    return model.eval()


def load_encoder(path: Union[str, Path]):
    """Rebuild the encoder stored in a checkpoint (directory or either file in it), eval mode, CPU.

    The architecture comes from the checkpoint's own config. Returns ``(model, checkpoint)``
    with ``checkpoint`` a :class:`clip2_core.checkpoint.Checkpoint`; raises ValueError when the
    weights do not fit the stored model config.
    """
    from clip2_core.checkpoint import WEIGHTS_NAME, load_checkpoint

    ckpt = load_checkpoint(path)
    model = build_point_encoder(ckpt.model_config)
    try:
        model.load_state_dict(ckpt.state_dict, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"weights in {ckpt.path / WEIGHTS_NAME} do not fit model {ckpt.model_config.name!r}: {exc}") from exc
    return model.eval(), ckpt
