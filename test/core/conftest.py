"""Shared fixtures for test/core: a tiny open_clip model and a tiny point-encoder checkpoint.

``tiny_clip_files`` builds a registered open_clip architecture small enough for CPU tests
(embed_dim 32, one transformer layer per tower), initialises it with random weights, and saves
them both as a weights file and as a ``local-dir:`` folder, so tests load it back through the
same path a user's real CLIP weights take. ``HF_HUB_OFFLINE=1`` for every test here.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

TINY_CLIP_NAME = "clip2-test-tiny"
TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@dataclass
class TinyClipFiles:
    name: str  # registered open_clip architecture name
    config_file: Path  # its JSON (pass as VLMConfig.model_config_file)
    weights_file: Path  # random weights, .safetensors
    local_dir: Path  # open_clip_config.json + open_clip_model.safetensors


@pytest.fixture(scope="session")
def tiny_clip_files(tmp_path_factory: pytest.TempPathFactory) -> TinyClipFiles:
    import open_clip
    import torch
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("tiny_clip")
    cfg_file = root / f"{TINY_CLIP_NAME}.json"
    cfg_file.write_text(json.dumps(TINY_CLIP_CFG))
    open_clip.add_model_config(cfg_file)
    torch.manual_seed(123)
    model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    weights = root / "tiny_clip.safetensors"
    save_file(state, str(weights))
    local = root / "local_dir"
    local.mkdir()
    (local / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CFG, "preprocess_cfg": {}}))
    save_file(state, str(local / "open_clip_model.safetensors"))
    return TinyClipFiles(TINY_CLIP_NAME, cfg_file, weights, local)


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_files: TinyClipFiles):
    """A FrozenCLIP loaded from the tiny model's weights file."""
    from clip2_core.vlm import FrozenCLIP, VLMConfig

    return FrozenCLIP(VLMConfig(model=tiny_clip_files.name, pretrained=str(tiny_clip_files.weights_file),
                                model_config_file=str(tiny_clip_files.config_file)))


def make_tiny_encoder(seed: int = 0):
    """A pointnet2-tiny-v1 encoder in eval mode with non-trivial BatchNorm statistics."""
    import torch

    from clip2_core.encoders import create_point_encoder

    torch.manual_seed(seed)
    model = create_point_encoder("pointnet2-tiny-v1")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.weight.copy_(1.0 + 0.1 * torch.randn(m.num_features, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))
    return model.eval()


@pytest.fixture
def tiny_encoder():
    """A fresh pointnet2-tiny-v1 encoder (eval mode, seed 0, non-trivial BatchNorm statistics)."""
    return make_tiny_encoder()


@pytest.fixture(scope="session")
def tiny_encoder_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved pointnet2-tiny-v1 checkpoint directory (random weights)."""
    from clip2_core.checkpoint import save_checkpoint

    model = make_tiny_encoder()
    d = tmp_path_factory.mktemp("tiny_encoder") / "ckpt"
    save_checkpoint(d, model, model.config, clip={"model": TINY_CLIP_NAME, "pretrained": None, "weights_id": "test"},
                    vocabulary=["car", "pedestrian"], extra={"step": 0})
    return d
