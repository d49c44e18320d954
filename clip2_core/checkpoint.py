"""Point-encoder checkpoints: safetensors weights + a JSON config, never pickles.

A checkpoint is a directory holding two files::

    model.safetensors   # the encoder's state_dict (tensors only; loaded with safetensors)
    config.json         # what is needed to rebuild and use it (below)

``config.json``::

    {
      "format": "clip2-checkpoint", "format_version": 1,
      "model": {...},                 # PointEncoderConfig (arch, embed_dim, normalization, backbone)
      "embed_dim": 512,               # = model.embed_dim, repeated for readers that skip "model"
      "normalization": {...},         # = model.normalization, repeated likewise
      "clip": {"model": "ViT-B-32", "pretrained": "openai", "weights_id": "..."} | null,
      "vocabulary": ["car", ...] | null,
      "weights_sha256": "9f2c...",    # of model.safetensors; checked on load (absent in older checkpoints)
      "extra": {...}                  # free-form JSON (training step, metrics, ...)
    }

Both files are written atomically (:mod:`clip2_core.fileio`: temporary file in the same
directory, fsync, rename); ``config.json`` is written last, so a directory with a config always
has complete weights, and the SHA-256 it records makes any later change to them (a flipped
byte, a copy from another run) a load error rather than a silently different model. Loading
reads tensors with ``safetensors`` only: no ``torch.load``, no unpickling.

This module is checkpoint I/O only: it knows the encoder *config* (:mod:`clip2_core.encoders.config`)
but never the encoder builders. Rebuilding the model stored in a checkpoint is
:func:`clip2_core.encoders.load_encoder`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from clip2_core.encoders.config import PointEncoderConfig
from clip2_core.fileio import atomic_write_bytes, atomic_write_json, file_sha256

FORMAT = "clip2-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


@dataclass
class Checkpoint:
    """A loaded checkpoint (weights on CPU)."""

    model_config: PointEncoderConfig
    state_dict: Dict[str, Any]  # name -> torch.Tensor
    clip: Optional[Dict[str, Any]] = None  # CLIP model name, pretrained, weights_id
    vocabulary: Optional[List[str]] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    path: Optional[Path] = None  # the checkpoint directory


def resolve_checkpoint_dir(path: Union[str, Path]) -> Path:
    """The checkpoint directory for ``path`` (the directory itself, or either file inside it)."""
    p = Path(path)
    if p.is_file() and p.name in (WEIGHTS_NAME, CONFIG_NAME):
        return p.parent
    if p.is_dir():
        return p
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p} (expected a directory with {WEIGHTS_NAME} + {CONFIG_NAME})")
    raise ValueError(f"{p} is not a clip2 checkpoint: pass the directory holding {WEIGHTS_NAME} and {CONFIG_NAME}")


def save_checkpoint(
    path: Union[str, Path],
    model: Any,
    model_config: PointEncoderConfig,
    clip: Optional[Dict[str, Any]] = None,
    vocabulary: Optional[List[str]] = None,
    extra: Optional[Dict[str, Any]] = None,
) -> Path:
    """Save ``model`` (an ``nn.Module`` or a state_dict) into directory ``path``; returns it."""
    from safetensors.torch import save as st_save

    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"checkpoint path {out} exists and is not a directory")
    state = model.state_dict() if hasattr(model, "state_dict") else dict(model)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    data = st_save(tensors, metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    atomic_write_bytes(out / WEIGHTS_NAME, data)
    digest = hashlib.sha256(data).hexdigest()
    cfg = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model_config.to_dict(),
        "embed_dim": model_config.embed_dim,
        "normalization": model_config.normalization.to_dict(),
        "clip": clip,
        "vocabulary": list(vocabulary) if vocabulary is not None else None,
        "weights_sha256": digest,
        "extra": extra or {},
    }
    atomic_write_json(out / CONFIG_NAME, cfg)
    return out


def read_checkpoint_config(path: Union[str, Path]) -> Dict[str, Any]:
    """The parsed, validated ``config.json`` of a checkpoint."""
    d = resolve_checkpoint_dir(path)
    cfg_path = d / CONFIG_NAME
    if not cfg_path.is_file():
        raise FileNotFoundError(f"checkpoint config missing: {cfg_path}")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"checkpoint config {cfg_path} is not valid JSON: {exc}") from exc
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise ValueError(f"{cfg_path} is not a clip2 checkpoint config (format != {FORMAT!r})")
    if int(cfg.get("format_version", -1)) > FORMAT_VERSION:
        raise ValueError(
            f"{cfg_path} has format_version {cfg.get('format_version')}, newer than this clip2 "
            f"({FORMAT_VERSION}); upgrade clip2"
        )
    if "model" not in cfg:
        raise ValueError(f"{cfg_path} has no 'model' entry")
    return cfg


def load_checkpoint(path: Union[str, Path]) -> Checkpoint:
    """Load weights (safetensors) and config (JSON); errors name the broken file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = resolve_checkpoint_dir(path)
    cfg = read_checkpoint_config(d)
    try:
        model_config = PointEncoderConfig.from_dict(cfg["model"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{d / CONFIG_NAME}: invalid model config: {exc}") from exc
    w_path = d / WEIGHTS_NAME
    if not w_path.is_file():
        raise FileNotFoundError(f"checkpoint weights missing: {w_path}")
    expected = cfg.get("weights_sha256")
    if expected is not None:
        got = file_sha256(w_path)
        if got != expected:
            raise ValueError(f"checkpoint weights {w_path} do not match the SHA-256 recorded in {d / CONFIG_NAME} "
                             f"({got[:12]}... != {str(expected)[:12]}...): the file is corrupt or was replaced")
    try:
        state = load_file(str(w_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"checkpoint weights {w_path} are unreadable or corrupt: {exc}") from exc
    return Checkpoint(
        model_config=model_config,
        state_dict=state,
        clip=cfg.get("clip"),
        vocabulary=cfg.get("vocabulary"),
        extra=cfg.get("extra") or {},
        path=d,
    )

