"""Training configuration: YAML -> typed dataclasses, parsed once, validated, overridable.

``load_train_config(path, ["optim.lr=3e-4", "data.batch_size=32"])`` reads the YAML, applies the
``--set`` overrides (values parsed as YAML scalars / lists) and builds :class:`TrainConfig`;
unknown keys and wrong types raise ``ValueError`` naming the dotted key.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from clip2_core.configio import apply_overrides, build_dataclass


@dataclass
class DataConfig:
    train: List[str] = field(default_factory=list)  # proxy folders (clip2 mine --out), streamed
    val: List[str] = field(default_factory=list)  # held-out proxy folders for validation accuracy
    batch_size: int = 64  # per process
    workers: int = 0  # DataLoader worker processes per training process
    shuffle_buffer: int = 2048  # streaming shuffle buffer (proxies)
    min_points: int = 8  # proxies with fewer points are skipped
    vocabulary: Optional[List[str]] = None  # None: the labels present in the training shards
    repeat_threshold: float = 0.0  # repeat-factor sampling of rare labels (0 = off; e.g. 0.1: see training/data.py)


@dataclass
class AugmentConfig:
    rotate_z: bool = True  # uniform rotation about z (around the crop centre)
    scale_min: float = 0.9  # isotropic scaling range
    scale_max: float = 1.1
    jitter_std: float = 0.01  # per-point gaussian jitter [m]
    dropout_max: float = 0.2  # drop up to this fraction of points (random per proxy)


@dataclass
class ModelSection:
    name: str = "pointnet2-xs-v1"  # encoder config name (clip2_core.encoders.list_models()) or JSON path (= DEFAULT_ENCODER)


@dataclass
class ClipSection:
    model: str = "ViT-B-32"  # open_clip architecture or local-dir:PATH
    weights: Optional[str] = None  # tag or weights file; None = RANDOM weights (logged loudly)
    model_config_file: Optional[str] = None  # extra open_clip architecture JSON
    templates: Optional[List[str]] = None  # None: clip2_core.vlm.DEFAULT_TEMPLATES


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    steps: int = 2000  # total optimisation steps
    min_lr_ratio: float = 0.01  # cosine floor as a fraction of lr
    grad_clip: float = 1.0  # max global grad norm (0 = off)
    amp: bool = True  # mixed precision on GPU (ignored on CPU)


@dataclass
class LossConfig:
    semantic_weight: float = 1.0
    instance_weight: float = 1.0
    symmetric_semantic: bool = False


@dataclass
class CheckpointConfig:
    out: str = "runs/clip2"  # run folder: checkpoints, logs
    every: int = 500  # steps between checkpoints (and at the end)
    keep: int = 3  # step checkpoints kept (plus best)


@dataclass
class LogConfig:
    every: int = 20  # steps between scalar logs
    val_every: int = 500  # steps between validations (and at the end)
    tensorboard: bool = True


@dataclass
class TrainConfig:
    name: str = "clip2"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelSection = field(default_factory=ModelSection)
    clip: ClipSection = field(default_factory=ClipSection)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def load_train_config(path: Optional[str | Path], overrides: Sequence[str] = ()) -> TrainConfig:
    import yaml

    data: Dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"training config not found: {p}")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{p}: expected a mapping at the top level")
    apply_overrides(data, overrides)
    cfg = build_dataclass(TrainConfig, data)
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    if not cfg.data.train:
        raise ValueError("data.train must list at least one proxy folder")
    if cfg.data.batch_size < 2:
        raise ValueError("data.batch_size must be >= 2 (contrastive losses need negatives)")
    if cfg.optim.steps < 1 or cfg.optim.lr <= 0:
        raise ValueError("optim.steps must be >= 1 and optim.lr > 0")
    if cfg.loss.semantic_weight < 0 or cfg.loss.instance_weight < 0 or cfg.loss.semantic_weight + cfg.loss.instance_weight <= 0:
        raise ValueError("loss weights must be >= 0 and not both 0")
    if not 0 < cfg.augment.scale_min <= cfg.augment.scale_max:
        raise ValueError("need 0 < augment.scale_min <= augment.scale_max")
    if not 0 <= cfg.augment.dropout_max < 1:
        raise ValueError("augment.dropout_max must be in [0, 1)")
    if not 0 <= cfg.data.repeat_threshold <= 1:
        raise ValueError("data.repeat_threshold must be in [0, 1] (0 = off)")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ValueError("device must be auto, cpu or cuda")
