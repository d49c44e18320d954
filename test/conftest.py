"""Fixtures shared by every test layer.

* ``tiny_clip_files``: a registered, tiny open_clip architecture with random weights, saved as a
  weights file and as a ``local-dir:`` folder, so tests load CLIP through the same path a user's
  real weights take (``HF_HUB_OFFLINE=1`` throughout: nothing is ever downloaded).
* ``make_gt_proxies``: writes proxy shards from synthetic sweeps (the points inside each visible
  ground-truth box, labelled with its class), the data the trainer reads.
* ``trained_tiny_model``: a pointnet2-tiny-v1 encoder trained by the project's own trainer on those
  proxies against the tiny CLIP's text bank: a small model that really separates the synthetic
  classes, for pipeline, node and evaluation tests. Random CLIP weights: not a zero-shot model.
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


def build_tiny_clip(root: Path, name: str, cfg: dict, seed: int = 123) -> TinyClipFiles:
    """Register a tiny open_clip architecture, initialise it randomly and save it both as a
    weights file and as a ``local-dir:`` folder (both flagged as random in their safetensors metadata)."""
    import shutil

    from clip2_core.cli.demo_model import build_random_clip

    cfg_file, weights = build_random_clip(root, name, cfg, seed=seed)
    local = root / "local_dir"
    local.mkdir(exist_ok=True)
    (local / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    shutil.copyfile(weights, local / "open_clip_model.safetensors")  # the same random weights, metadata included
    return TinyClipFiles(name, cfg_file, weights, local)


@pytest.fixture(scope="session")
def tiny_clip_files(tmp_path_factory: pytest.TempPathFactory) -> TinyClipFiles:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny_clip"), TINY_CLIP_NAME, TINY_CLIP_CFG)


# A random text tower this narrow maps all class names to nearly one direction (cosine 0.95-1.0
# between "car" and "bus"); 128 wide x 2 layers with the bare "{}" template gives 0.64 mean / 0.82
# max, like real CLIP. Tests that need distinct class targets use this one.
WIDE_TEXT_CLIP_NAME = "clip2-test-widetext"
WIDE_TEXT_CLIP_CFG = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 2},
}


@pytest.fixture(scope="session")
def wide_text_clip_files(tmp_path_factory: pytest.TempPathFactory) -> TinyClipFiles:
    return build_tiny_clip(tmp_path_factory.mktemp("wide_clip"), WIDE_TEXT_CLIP_NAME, WIDE_TEXT_CLIP_CFG, seed=1)


def write_gt_proxies(out: Path, seeds, rng_seed: int = 0, emb_dim: int = 0) -> Path:
    """Proxy shards from synthetic sweeps: the points inside each visible GT box, labelled by class."""
    from clip2_core.datasets.synth.sweep import write_sweep_proxies

    return write_sweep_proxies(out, seeds, rng_seed=rng_seed, emb_dim=emb_dim)


@pytest.fixture(scope="session")
def make_gt_proxies():
    return write_gt_proxies


TRAINED_TEMPLATES = ("a point cloud of a {}.", "a {} on the road.")


@dataclass
class TrainedTinyModel:
    checkpoint: Path  # clip2 checkpoint directory
    clip: TinyClipFiles
    vocabulary: list  # labels it was trained on (synthetic sweep classes, "_" -> " ")
    summary: dict  # trainer summary (val accuracy on held-out sweeps)

    def pipeline_dict(self, **extra) -> dict:
        """A PipelineConfig.from_dict() input running this model on CPU (torch backend)."""
        d = {
            "model": {"checkpoint": str(self.checkpoint), "backend": "torch"},
            "clip": {"model": self.clip.name, "weights": str(self.clip.weights_file),
                     "model_config_file": str(self.clip.config_file), "allow_random": True},
            "vocabulary": list(self.vocabulary),
        }
        d.update(extra)
        return d


@pytest.fixture(scope="session")
def trained_tiny_model(tiny_clip_files, tmp_path_factory) -> TrainedTinyModel:
    from clip2_core.cli.demo_model import train_sweep_model

    c = tiny_clip_files
    # trained with two of the built-in templates, so "the encoder's training templates" and
    # "the built-in set" differ and tests can tell them apart
    summary = train_sweep_model(tmp_path_factory.mktemp("trained_tiny"), c.name, c.weights_file, c.config_file,
                                templates=TRAINED_TEMPLATES)
    return TrainedTinyModel(Path(summary["checkpoint"]), tiny_clip_files, summary["vocabulary"], summary)
