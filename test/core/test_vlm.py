"""The frozen CLIP side with a tiny registered open_clip model (random weights, saved and reloaded)."""
from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from clip2_core.vlm import (
    DEFAULT_TEMPLATES,
    FrozenCLIP,
    TextBank,
    VLMConfig,
    WeightsUnavailableError,
    build_text_bank,
    crop_boxes,
    text_bank_key,
)


def test_load_from_file_is_frozen_and_normalised(tiny_clip):
    assert tiny_clip.embed_dim == 32
    assert not tiny_clip.model.training
    assert not any(p.requires_grad for p in tiny_clip.model.parameters())
    t = tiny_clip.encode_text(["a car", "a pedestrian"])
    assert t.shape == (2, 32) and t.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    assert tiny_clip.weights_id.startswith("file:")
    assert tiny_clip.identity["embed_dim"] == 32


def test_file_and_local_dir_give_the_same_model(tiny_clip, tiny_clip_files):
    other = FrozenCLIP(VLMConfig(model=f"local-dir:{tiny_clip_files.local_dir}"))
    assert other.weights_id == tiny_clip.weights_id  # same bytes -> same identity -> same cache keys
    np.testing.assert_allclose(other.encode_text(["a bus"]), tiny_clip.encode_text(["a bus"]), atol=1e-6)


def test_random_clip_files_are_flagged_in_their_metadata(tiny_clip_files, tmp_path):
    from clip2_core.cli.demo_model import DEMO_CLIP_NAME, build_random_clip
    from clip2_core.vlm import safetensors_metadata

    flag = {"clip2.random_init": "true"}
    assert safetensors_metadata(tiny_clip_files.weights_file) == flag
    assert safetensors_metadata(tiny_clip_files.local_dir / "open_clip_model.safetensors") == flag
    cfg_file, weights = build_random_clip(tmp_path, seed=1)  # what clip2 demo and clip2 random-clip write
    assert weights.name == f"{DEMO_CLIP_NAME}.safetensors" and cfg_file.is_file()
    assert safetensors_metadata(weights) == flag


def test_weights_really_loaded(tiny_clip_files, tiny_clip):
    # a random model with another seed differs, so equality above is not an accident of init
    rnd = FrozenCLIP(VLMConfig(model=tiny_clip_files.name, pretrained=None, seed=99,
                               model_config_file=str(tiny_clip_files.config_file)))
    assert np.abs(rnd.encode_text(["a bus"]) - tiny_clip.encode_text(["a bus"])).max() > 1e-3


def test_random_weights_are_marked(tiny_clip_files, caplog):
    """Random weights are logged and marked; refusing them is the caller's (recognition.check_clip, tested there)."""
    with caplog.at_level(logging.INFO, logger="clip2_core.vlm"):
        clip = FrozenCLIP(VLMConfig(model=tiny_clip_files.name, model_config_file=str(tiny_clip_files.config_file)))
    assert any("RANDOM weights" in r.message for r in caplog.records)
    assert clip.weights_id.startswith("random:") and clip.is_random and clip.identity["random"] is True


def test_missing_tag_fails_fast_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as err:
        FrozenCLIP(VLMConfig(model="ViT-B-32", pretrained="openai", cache_dir=str(tmp_path / "empty_hub")))
    assert time.perf_counter() - t0 < 1.0
    msg = str(err.value)
    assert "local-dir:" in msg and "pretrained=" in msg and "HF_HUB_OFFLINE" in msg


def test_missing_tag_fails_fast_without_download_permission(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="allow_download=False"):
        FrozenCLIP(VLMConfig(model="ViT-B-32", pretrained="laion2b_s34b_b79k", cache_dir=str(tmp_path)))
    assert time.perf_counter() - t0 < 1.0


def test_bad_weight_sources(tmp_path, tiny_clip_files):
    with pytest.raises(FileNotFoundError, match="not found"):
        FrozenCLIP(VLMConfig(model="ViT-B-32", pretrained=str(tmp_path / "nope.safetensors")))
    with pytest.raises(ValueError, match="neither a weights file nor a known pretrained tag"):
        FrozenCLIP(VLMConfig(model="ViT-B-32", pretrained="no_such_tag"))
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        FrozenCLIP(VLMConfig(model="ViT-Q-99"))
    with pytest.raises(WeightsUnavailableError, match="open_clip_config.json"):
        FrozenCLIP(VLMConfig(model=f"local-dir:{tmp_path}"))


def test_text_bank_prompt_ensemble(tiny_clip):
    templates = ("a point cloud of a {}.", "a {} on the road.")
    bank = build_text_bank(tiny_clip, ["car", "pedestrian"], templates=templates)
    raw = tiny_clip.encode_text(["a point cloud of a car.", "a car on the road."])
    want = raw.mean(0) / np.linalg.norm(raw.mean(0))
    np.testing.assert_allclose(bank.embeddings[0], want, atol=1e-5)
    assert bank.index("pedestrian") == 1
    with pytest.raises(KeyError):
        bank.index("tram")
    assert len(DEFAULT_TEMPLATES) >= 5 and all("{}" in t for t in DEFAULT_TEMPLATES)


def test_text_bank_cache(tiny_clip, tmp_path):
    calls = []
    real = tiny_clip.encode_text

    def counting(texts, **kw):
        calls.append(len(texts))
        return real(texts, **kw)

    tiny_clip.encode_text = counting
    try:
        a = build_text_bank(tiny_clip, ["car", "bus"], cache_dir=tmp_path)
        b = build_text_bank(tiny_clip, ["car", "bus"], cache_dir=tmp_path)
        assert len(calls) == 1  # the second bank came from disk
        np.testing.assert_array_equal(a.embeddings, b.embeddings)
        build_text_bank(tiny_clip, ["car", "bus", "tram"], cache_dir=tmp_path)
        build_text_bank(tiny_clip, ["car", "bus"], templates=("a {}.",), cache_dir=tmp_path)
        assert len(calls) == 3  # vocabulary and templates are part of the key
    finally:
        del tiny_clip.encode_text
    assert len(list(tmp_path.glob("textbank-*.npy"))) == 3
    keys = {text_bank_key("m", w, ("a {}.",), ["car"]) for w in ("file:1", "file:2")}
    assert len(keys) == 2  # weights identity is part of the key
    # a tampered cache entry is detected
    meta = next(tmp_path.glob("textbank-*.json"))
    meta.write_text(meta.read_text().replace('"car"', '"lorry"'))
    with pytest.raises(ValueError, match="does not match"):
        TextBank.load(meta.with_suffix(""))


def test_text_bank_rejects_bad_vocabulary(tiny_clip):
    with pytest.raises(ValueError, match="duplicates"):
        build_text_bank(tiny_clip, ["car", "car"])
    with pytest.raises(ValueError, match="non-empty"):
        build_text_bank(tiny_clip, [])
    with pytest.raises(ValueError, match="template"):
        build_text_bank(tiny_clip, ["car"], templates=("no slot",))


def test_image_embeddings_batched(tiny_clip):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in [(20, 30), (64, 48), (32, 32), (5, 90)]]
    a = tiny_clip.encode_images(imgs, batch_size=3)
    b = tiny_clip.encode_images(imgs, batch_size=1)
    assert a.shape == (4, 32)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert tiny_clip.encode_images([]).shape == (0, 32)
    with pytest.raises(ValueError, match="RGB"):
        tiny_clip.encode_images([np.zeros((4, 4), dtype=np.uint8)])


def test_crop_boxes_worked_example(tiny_clip):
    img = np.arange(10 * 20 * 3, dtype=np.uint8).reshape(10, 20, 3)
    crops = crop_boxes(img, np.array([[2, 2, 12, 6], [15, 5, 25, 15]]), pad_frac=0.1)
    # box 1 grows by 1 px in x and 0.4 px in y -> [1, 1.6, 13, 6.4] -> pixels x 1..13, y 1..7
    assert crops[0].shape == (6, 12, 3)
    np.testing.assert_array_equal(crops[0], img[1:7, 1:13])
    # box 2 grows by 1 px each side -> [14, 4, 26, 16], clipped at the right/bottom border to x < 20, y < 10
    np.testing.assert_array_equal(crops[1], img[4:10, 14:20])
    with pytest.raises(ValueError, match="degenerate"):
        crop_boxes(img, np.array([[5, 5, 5, 9]]))
    assert tiny_clip.encode_crops(img, np.array([[2, 2, 12, 6]])).shape == (1, 32)


def test_tag_found_in_local_hub_cache(tiny_clip_files, tiny_clip, tmp_path, monkeypatch):
    """A pretrained tag resolves to the file in the Hugging Face hub cache, offline."""
    import shutil

    import open_clip.pretrained as ocp

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # register a tag for the tiny architecture, the way open_clip lists its own tags
    monkeypatch.setitem(ocp._PRETRAINED, tiny_clip_files.name,
                        {"cachedtag": {"hf_hub": "clip2-test/tiny-clip/", "quick_gelu": False}})
    # the hub cache layout: models--ORG--REPO/refs/main -> revision, snapshots/REV/FILE
    repo = tmp_path / "hub" / "models--clip2-test--tiny-clip"
    rev = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    (repo / "snapshots" / rev).mkdir(parents=True)
    shutil.copy(tiny_clip_files.weights_file, repo / "snapshots" / rev / "open_clip_model.safetensors")
    clip = FrozenCLIP(VLMConfig(model=tiny_clip_files.name, pretrained="cachedtag", cache_dir=str(tmp_path / "hub"),
                                model_config_file=str(tiny_clip_files.config_file)))
    assert clip.weights_id == f"tag:{tiny_clip_files.name}/cachedtag"
    np.testing.assert_allclose(clip.encode_text(["a van"]), tiny_clip.encode_text(["a van"]), atol=1e-6)


def test_hf_hub_model_from_local_cache(tiny_clip_files, tiny_clip, tmp_path, monkeypatch):
    """An hf-hub: model whose config and weights are in the hub cache loads without the network."""
    import shutil

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = tmp_path / "hub" / "models--clip2-test--tiny-hub"
    rev = "89abcdef0123456789abcdef0123456789abcdef"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True)
    shutil.copy(tiny_clip_files.local_dir / "open_clip_config.json", snap / "open_clip_config.json")
    shutil.copy(tiny_clip_files.weights_file, snap / "open_clip_model.safetensors")
    clip = FrozenCLIP(VLMConfig(model="hf-hub:clip2-test/tiny-hub", cache_dir=str(tmp_path / "hub")))
    assert clip.weights_id == f"hf-hub:clip2-test/tiny-hub@{rev}"  # the snapshot revision is part of the identity
    np.testing.assert_allclose(clip.encode_text(["a van"]), tiny_clip.encode_text(["a van"]), atol=1e-6)
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="not in the local hub cache"):
        FrozenCLIP(VLMConfig(model="hf-hub:clip2-test/absent", cache_dir=str(tmp_path / "hub")))
    assert time.perf_counter() - t0 < 1.0


def test_tensor_preprocessing_matches_open_clips_pil_transform(tiny_clip):
    import torch
    from PIL import Image
    from torchvision import transforms as T

    from clip2_core.image_preprocess import tensor_transform

    assert tiny_clip._tensor_preprocess is not None  # open_clip's standard transform is converted
    rng = np.random.default_rng(3)
    # smooth images (camera-like) and noise, portrait / landscape / tiny / already square
    yy, xx = np.mgrid[0:120, 0:200]
    smooth = np.stack([(xx * 1.2) % 256, (yy * 2.0) % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
    imgs = [smooth, smooth[:90, :40], rng.integers(0, 255, (37, 61, 3), dtype=np.uint8),
            rng.integers(0, 255, (5, 90, 3), dtype=np.uint8), smooth[:64, :64]]
    for im in imgs:
        ref = tiny_clip.preprocess(Image.fromarray(im))
        got = tiny_clip._tensor_preprocess(im)
        assert got.shape == ref.shape and got.dtype == torch.float32
        # measured max 0.015 (one uint8 rounding step / std), mean ~2e-4
        assert (got - ref).abs().max().item() < 0.03 and (got - ref).abs().mean().item() < 0.003
    with torch.no_grad():
        a = torch.nn.functional.normalize(tiny_clip.model.encode_image(torch.stack(
            [tiny_clip.preprocess(Image.fromarray(im)) for im in imgs])), dim=-1)
    b = torch.from_numpy(tiny_clip.encode_images(imgs))
    assert (a * b).sum(-1).min().item() > 0.9999
    # a transform of another shape is not converted (the PIL path stays)
    assert tensor_transform(T.Compose([T.Resize(32), T.ToTensor()])) is None
    assert tensor_transform(T.Compose([T.Resize(32, interpolation=T.InterpolationMode.NEAREST), T.CenterCrop(32),
                                       T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])) is None
    assert tensor_transform(lambda im: im) is None
