"""Fixtures for test/core: a loaded tiny CLIP and tiny point encoders (``tiny_clip_files`` itself
lives in test/conftest.py, shared with the other test layers)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_files):
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
    save_checkpoint(d, model, model.config, clip={"model": "clip2-test-tiny", "pretrained": None, "weights_id": "test"},
                    vocabulary=["car", "pedestrian"], extra={"step": 0})
    return d
