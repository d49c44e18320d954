"""A small model trained by clip2's own trainer on synthetic sweeps, for the demo and the tests.

No CLIP weights ship with clip2 and none are downloaded, so this builds a tiny open_clip with
RANDOM weights (its text tower wide enough that class names map to distinct directions) and
trains a point encoder on ground-truth crops of synthetic sweeps against that text bank. The
result labels synthetic objects well because it was trained on them, not because of zero-shot
CLIP: logs and pictures made with it say so.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence

log = logging.getLogger(__name__)

DEMO_CLIP_NAME = "clip2-demo-random"
DEMO_CLIP_CFG = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 2},
}


def build_random_clip(root: Path, name: str = DEMO_CLIP_NAME, cfg: Optional[Dict] = None, seed: int = 1):
    """Register + save a randomly initialised open_clip: returns (config JSON path, weights path).

    The weights file is flagged as random in its safetensors metadata (``vlm.save_random_clip_weights``).
    """
    import open_clip
    import torch

    from clip2_core.vlm import save_random_clip_weights

    cfg = cfg or DEMO_CLIP_CFG
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cfg_file = root / f"{name}.json"
    weights = root / f"{name}.safetensors"
    cfg_file.write_text(json.dumps(cfg))
    open_clip.add_model_config(cfg_file)
    if not weights.is_file():
        torch.manual_seed(seed)
        model = open_clip.create_model(name, pretrained=None)
        save_random_clip_weights(model, weights)
    return cfg_file, weights


def train_sweep_model(root: Path, clip_name: str, clip_weights: Path, clip_config: Path, encoder: str = "pointnet2-tiny-v1",
                      steps: int = 150, train_seeds: Iterable[int] = range(100, 112), val_seeds: Iterable[int] = range(200, 203),
                      templates: Optional[Sequence[str]] = None, progress: bool = False) -> Dict:
    """Train on GT crops of synthetic sweeps (semantic loss); returns the trainer's summary."""
    from clip2_core.datasets.synth.sweep import write_sweep_proxies
    from clip2_core.training.config import load_train_config
    from clip2_core.training.trainer import train

    root = Path(root)
    train_dir = write_sweep_proxies(root / "train", train_seeds)
    val_dir = write_sweep_proxies(root / "val", val_seeds)
    overrides = [
        f"data.train=[{train_dir}]", f"data.val=[{val_dir}]", "data.batch_size=32", "data.shuffle_buffer=256",
        f"model.name={encoder}", f"clip.model={clip_name}", f"clip.weights={clip_weights}",
        f"clip.model_config_file={clip_config}", f"optim.steps={steps}", "optim.warmup_steps=10", "optim.lr=0.005",
        "loss.instance_weight=0.0", f"checkpoint.every={steps}", f"checkpoint.out={root / 'run'}",
        f"log.every={max(1, steps // 3)}", f"log.val_every={steps}", "log.tensorboard=false",
    ]
    if templates:
        overrides.append("clip.templates=" + json.dumps(list(templates)))
    return train(load_train_config(None, overrides))
