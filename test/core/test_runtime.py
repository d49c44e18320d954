"""Checkpoints, ONNX export/parity, the Embedder backends and the TensorRT engine cache."""
from __future__ import annotations

import ast
import importlib.util
import json
import logging
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import clip2_core.checkpoint
from clip2_core.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_checkpoint, save_checkpoint
from clip2_core.encoders import load_encoder
from clip2_core.runtime import engine_cache
from clip2_core.runtime.embedders import (
    Embedder,
    OrtEmbedder,
    TensorRTEmbedder,
    TorchEmbedder,
    choose_backend,
    create_embedder,
    ensure_onnx,
)
from clip2_core.runtime.export import export_onnx, onnx_parity, random_batch, read_onnx_metadata


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(tiny_encoder_checkpoint, tiny_encoder):
    ckpt = load_checkpoint(tiny_encoder_checkpoint)
    assert ckpt.model_config == tiny_encoder.config
    assert ckpt.vocabulary == ["car", "pedestrian"] and ckpt.extra == {"step": 0}
    assert ckpt.clip["model"] == "clip2-test-tiny"
    model, _ = load_encoder(tiny_encoder_checkpoint / WEIGHTS_NAME)  # either file path also works
    x = torch.from_numpy(random_batch(3, ckpt.model_config))
    with torch.no_grad():
        torch.testing.assert_close(model(x), tiny_encoder(x))
    cfg = json.loads((tiny_encoder_checkpoint / CONFIG_NAME).read_text())
    assert cfg["embed_dim"] == 32 and cfg["normalization"]["num_points"] == 64
    # the weights file is plain safetensors (8-byte header length + JSON header), not a pickle
    raw = (tiny_encoder_checkpoint / WEIGHTS_NAME).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8 : 8 + n])["__metadata__"]["format"] == "clip2-checkpoint"


def test_create_point_encoder_pretrained(tiny_encoder_checkpoint):
    from clip2_core.encoders import create_point_encoder

    enc = create_point_encoder("pointnet2-tiny-v1", pretrained=tiny_encoder_checkpoint)
    assert not enc.training
    with pytest.raises(ValueError, match="differs"):
        create_point_encoder("pointnet2-s-v1", pretrained=tiny_encoder_checkpoint)


def test_a_flipped_weight_byte_is_a_load_error_naming_the_file(tmp_path, tiny_encoder):
    """safetensors reads a flipped byte inside a tensor silently; the SHA-256 in config.json does not."""
    d = save_checkpoint(tmp_path / "c", tiny_encoder, tiny_encoder.config)
    assert len(json.loads((d / CONFIG_NAME).read_text())["weights_sha256"]) == 64
    load_checkpoint(d)
    raw = bytearray((d / WEIGHTS_NAME).read_bytes())
    raw[-5] ^= 0x40  # inside the last tensor's data
    (d / WEIGHTS_NAME).write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=f"{d / WEIGHTS_NAME} do not match the SHA-256"):
        load_checkpoint(d)
    # a checkpoint written before the hash existed still loads (nothing to check against)
    cfg = json.loads((d / CONFIG_NAME).read_text())
    del cfg["weights_sha256"]
    (d / CONFIG_NAME).write_text(json.dumps(cfg))
    assert load_checkpoint(d).state_dict


def test_checkpoint_errors_name_the_file(tmp_path, tiny_encoder):
    d = save_checkpoint(tmp_path / "c", tiny_encoder, tiny_encoder.config)
    (d / WEIGHTS_NAME).write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match=str(d / WEIGHTS_NAME)):
        load_checkpoint(d)
    (d / WEIGHTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_NAME):
        load_checkpoint(d)
    (d / CONFIG_NAME).write_text("{not json")
    with pytest.raises(ValueError, match=CONFIG_NAME):
        load_checkpoint(d)
    (d / CONFIG_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=CONFIG_NAME):
        load_checkpoint(d)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "missing")
    # weights of another architecture
    d2 = save_checkpoint(tmp_path / "c2", tiny_encoder, tiny_encoder.config)
    cfg = json.loads((d2 / CONFIG_NAME).read_text())
    cfg["model"]["embed_dim"] = 16
    (d2 / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="do not fit"):
        load_encoder(d2)
    assert not list(tmp_path.glob("**/*.tmp"))  # atomic writes leave no temporaries


def _modules_after_import(module: str) -> set:
    """The ``sys.modules`` names a fresh interpreter holds after ``import module``."""
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(out.split())


def test_checkpoint_and_encoders_depend_one_way():
    # checkpoint I/O knows the encoder config, never the builders (nor torch)
    loaded = _modules_after_import("clip2_core.checkpoint")
    assert not loaded & {"clip2_core.encoders.pointnet2", "clip2_core.encoders.sparse", "torch"}
    # the encoders package reads checkpoints lazily, inside load_encoder / create_point_encoder
    assert "clip2_core.checkpoint" not in _modules_after_import("clip2_core.encoders")
    # and checkpoint.py's source imports nothing of clip2_core.encoders but .config
    tree = ast.parse(Path(clip2_core.checkpoint.__file__).read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert {m for m in imported if m.startswith("clip2_core.encoders")} == {"clip2_core.encoders.config"}
    assert "clip2_core.encoders" not in imported


# ---------------------------------------------------------------- export


def test_export_parity_and_dynamic_batch(tmp_path, tiny_encoder):
    import onnx

    path = export_onnx(tiny_encoder, tiny_encoder.config, tmp_path / "enc.onnx")
    proto = onnx.load(str(path))
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param == "batch" and not dim0.HasField("dim_value")
    assert proto.opset_import[0].version >= 17
    ops = {n.op_type for n in proto.graph.node}
    assert "TopK" in ops and "ArgMax" in ops and not any(n.domain not in ("", "ai.onnx") for n in proto.graph.node)
    assert onnx_parity(tiny_encoder, tiny_encoder.config, path, batch_sizes=(1, 3, 17, 64)) <= 1e-4
    meta = read_onnx_metadata(path)
    assert meta["model_config"] == tiny_encoder.config


def test_default_encoder_export_parity(tmp_path):
    from clip2_core.encoders import DEFAULT_ENCODER, create_point_encoder

    torch.manual_seed(0)
    enc = create_point_encoder(DEFAULT_ENCODER).eval()
    path = export_onnx(enc, enc.config, tmp_path / "default.onnx")
    assert onnx_parity(enc, enc.config, path, batch_sizes=(1, 8, 33)) <= 1e-4


def test_sparse_encoder_is_not_exportable(tmp_path):
    import spconv  # noqa: F401  (pinned: fails loudly when missing)
    from clip2_core.encoders import create_point_encoder

    enc = create_point_encoder("sparse-voxel-s-v1").eval()
    with pytest.raises(ValueError, match="only the dense pointnet2"):
        export_onnx(enc, enc.config, tmp_path / "s.onnx")


def test_read_onnx_metadata_errors(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a readable ONNX"):
        read_onnx_metadata(bad)
    with pytest.raises(FileNotFoundError):
        read_onnx_metadata(tmp_path / "none.onnx")


# ---------------------------------------------------------------- embedders


def test_torch_and_ort_embedders_agree(tiny_encoder_checkpoint):
    onnx_path = ensure_onnx(tiny_encoder_checkpoint)
    assert onnx_path.name == "model.onnx"
    te = TorchEmbedder.from_checkpoint(tiny_encoder_checkpoint)
    oe = OrtEmbedder(onnx_path, num_threads=1)
    for e in (te, oe):
        assert isinstance(e, Embedder)
    x = random_batch(9, te.config, seed=3)
    a, b = te.embed(x), oe.embed(x)
    assert a.shape == (9, 32) and b.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert oe.embed(x[:0]).shape == (0, 32) and te.embed(x[:0]).shape == (0, 32)
    with pytest.raises(ValueError, match=r"\(B, 64, 4\)"):
        oe.embed(np.zeros((2, 32, 4), dtype=np.float32))
    # intra-op threads do not spin after a run (they starved CLIP and DDS in the node: BENCHMARKS.md, issue 14)
    assert oe.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_ensure_onnx_reexports_when_stale(tiny_encoder_checkpoint, tmp_path):
    import shutil

    d = tmp_path / "ckpt"
    shutil.copytree(tiny_encoder_checkpoint, d)
    first = ensure_onnx(d)
    stamp = first.stat().st_mtime_ns
    assert ensure_onnx(d).stat().st_mtime_ns == stamp  # fresh: reused
    model, ckpt = load_encoder(d)
    with torch.no_grad():
        model.head[-1].bias.add_(1.0)
    save_checkpoint(d, model, ckpt.model_config)
    ensure_onnx(d)
    meta = read_onnx_metadata(d / "model.onnx")
    from clip2_core.runtime.export import _state_sha256

    assert meta["weights_sha256"] == _state_sha256(model)  # re-exported for the new weights


def test_auto_backend_prefers_tensorrt_then_onnxruntime_then_torch(monkeypatch):
    from clip2_core.runtime import embedders

    for trt, ort, want in ((True, True, "tensorrt"), (True, False, "tensorrt"), (False, True, "onnxruntime"),
                           (False, False, "torch")):
        monkeypatch.setattr(embedders, "tensorrt_available", lambda t=trt: t)
        monkeypatch.setattr(embedders, "onnxruntime_available", lambda o=ort: o)
        assert choose_backend("auto") == want, (trt, ort)
        for explicit in ("torch", "onnxruntime", "tensorrt"):
            assert choose_backend(explicit) == explicit  # asked for by name: never second-guessed
    with pytest.raises(RuntimeError, match="an .onnx source needs onnxruntime or tensorrt"):
        choose_backend("auto", source_is_onnx=True)  # both still unavailable
    with pytest.raises(ValueError, match="backend must be"):
        choose_backend("openvino")


def test_auto_backend_on_this_machine():
    """TensorRT where it is importable and a CUDA GPU is visible, else ONNX Runtime (a pinned requirement)."""
    has_trt = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()
    assert choose_backend("auto") == ("tensorrt" if has_trt else "onnxruntime")


def test_auto_embedder_without_tensorrt_is_onnxruntime(tiny_encoder_checkpoint, caplog, monkeypatch):
    from clip2_core.runtime import embedders

    monkeypatch.setattr(embedders, "tensorrt_available", lambda: False)  # as on a machine without TensorRT
    with caplog.at_level(logging.INFO, logger="clip2_core.runtime.embedders"):
        emb = create_embedder(tiny_encoder_checkpoint, backend="auto")
    assert emb.name == "onnxruntime"
    assert any("embedder backend: onnxruntime" in r.message for r in caplog.records)
    assert create_embedder(tiny_encoder_checkpoint / "model.onnx").name == "onnxruntime"
    assert create_embedder(tiny_encoder_checkpoint, backend="torch").name == "torch"
    with pytest.raises(ValueError, match="needs a checkpoint directory"):
        create_embedder(tiny_encoder_checkpoint / "model.onnx", backend="torch")


def test_tensorrt_missing_gives_clear_error(tiny_encoder_checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # "import tensorrt" fails, as where it is not installed
    with pytest.raises(ImportError, match="needs the 'tensorrt' Python package.*use backend='onnxruntime'"):
        create_embedder(tiny_encoder_checkpoint, backend="tensorrt")


def test_tensorrt_without_gpu_gives_clear_error(tiny_encoder_checkpoint, monkeypatch):
    import types

    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))  # importable ...
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # ... but no CUDA GPU
    with pytest.raises(RuntimeError, match="needs a CUDA GPU.*use backend='onnxruntime'"):
        create_embedder(tiny_encoder_checkpoint, backend="tensorrt")


# ---------------------------------------------------------------- engine cache (pure)


def _meta(**kw):
    base = engine_cache.EngineMeta(onnx_sha256="ab" * 32, tensorrt_version="10.3.0", gpu_name="NVIDIA A100",
                                   fp16=True, min_batch=1, opt_batch=64, max_batch=256)
    return replace(base, **kw)


def test_engine_key_changes_with_every_field(tmp_path):
    base = _meta()
    variants = [_meta(onnx_sha256="cd" * 32), _meta(tensorrt_version="10.4.0"), _meta(gpu_name="NVIDIA L4"),
                _meta(fp16=False), _meta(max_batch=128), _meta(opt_batch=32)]
    keys = {engine_cache.engine_key(m) for m in [base, *variants]}
    assert len(keys) == 7
    assert engine_cache.engine_key(base) == engine_cache.engine_key(_meta())  # deterministic
    p = engine_cache.engine_path(tmp_path / "enc.onnx", base)
    assert p.parent == tmp_path and p.name == f"enc.{engine_cache.engine_key(base)}.engine"
    assert engine_cache.meta_path(p).name == f"enc.{engine_cache.engine_key(base)}.engine.json"


def test_needs_rebuild_logic(tmp_path):
    m = _meta()
    p = engine_cache.engine_path(tmp_path / "enc.onnx", m)
    assert engine_cache.needs_rebuild(p, m)  # missing
    p.write_bytes(b"")
    assert engine_cache.needs_rebuild(p, m)  # empty
    p.write_bytes(b"serialized-engine")
    assert engine_cache.needs_rebuild(p, m)  # no sidecar
    engine_cache.write_meta(p, m)
    assert not engine_cache.needs_rebuild(p, m)  # valid
    assert engine_cache.needs_rebuild(p, _meta(tensorrt_version="10.5.0"))  # version mismatch
    assert engine_cache.needs_rebuild(p, _meta(gpu_name="NVIDIA H100"))  # GPU mismatch
    engine_cache.meta_path(p).write_text("{broken")
    assert engine_cache.needs_rebuild(p, m)  # unreadable sidecar
    other = engine_cache.engine_path(tmp_path / "enc.onnx", _meta(fp16=False))
    other.write_bytes(b"x")
    assert engine_cache.stale_engines(tmp_path / "enc.onnx", keep=p) == [other]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("tensorrt") is None,
                    reason="needs a CUDA GPU and TensorRT 10")
def test_tensorrt_embedder_matches_torch(tiny_encoder_checkpoint, tmp_path):  # pragma: no cover - GPU only
    import shutil

    d = tmp_path / "ckpt"
    shutil.copytree(tiny_encoder_checkpoint, d)
    onnx_path = ensure_onnx(d)
    te = TorchEmbedder.from_checkpoint(d)
    x = random_batch(17, te.config, seed=5)
    for fp16, tol in ((False, 1e-4), (True, 2e-2)):
        trt_e = TensorRTEmbedder(onnx_path, fp16=fp16, max_batch=32)
        np.testing.assert_allclose(trt_e.embed(x), te.embed(x), atol=tol)
        assert not engine_cache.needs_rebuild(trt_e.engine_path, engine_cache.read_meta(trt_e.engine_path))
        again = TensorRTEmbedder(onnx_path, fp16=fp16, max_batch=32)  # served from the cache
        assert again.engine_path == trt_e.engine_path
    assert choose_backend("auto") == "tensorrt"
    assert create_embedder(d, backend="auto").name == "tensorrt"  # the auto choice on a TensorRT machine


def test_onnx_export_carries_vocabulary_and_training_templates(tmp_path):
    """A runtime with only the ONNX file knows the training vocabulary and templates (trained_metadata)."""
    from clip2_core.encoders import create_point_encoder
    from clip2_core.recognition import trained_metadata
    from clip2_core.runtime.export import export_onnx, read_onnx_metadata

    model = create_point_encoder("pointnet2-tiny-v1")
    out = export_onnx(model, model.config, tmp_path / "m.onnx", vocabulary=["car", "background"],
                      extra={"templates": ["a {} on the road."]})
    meta = read_onnx_metadata(out)
    assert meta["vocabulary"] == ["car", "background"] and meta["extra"]["templates"] == ["a {} on the road."]
    assert trained_metadata(onnx=str(out))["extra"]["templates"] == ["a {} on the road."]


def test_a_broken_onnx_beside_a_good_checkpoint_falls_back(tiny_encoder_checkpoint, tmp_path):
    """model.onnx truncated (a copy cut short), model.checkpoint fine: the encoder still loads, from
    the checkpoint, and the notes say what failed; with nothing to fall back to, the error names every file."""
    import shutil

    from clip2_core.runtime.embedders import open_embedder

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_encoder_checkpoint, ckpt)
    model, loaded = load_encoder(ckpt)
    good = export_onnx(model, loaded.model_config, tmp_path / "enc.onnx")
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    x = random_batch(3, loaded.model_config)

    emb, notes = open_embedder(good, ckpt, "auto")
    assert notes == [] and Path(emb.onnx_path) == good

    emb, notes = open_embedder(cut, ckpt, "auto")
    assert emb.name == "onnxruntime" and Path(emb.onnx_path).parent == ckpt  # exported from the checkpoint
    assert len(notes) == 1 and str(cut) in notes[0] and "fallback" in notes[0]
    with torch.no_grad():
        np.testing.assert_allclose(emb.embed(x), model(torch.from_numpy(x)).numpy(), atol=1e-4)

    with pytest.raises(Exception, match=str(cut)):  # no checkpoint: one clear error naming the file
        open_embedder(cut, None, "auto")
    (ckpt / WEIGHTS_NAME).write_bytes(b"\x00garbage")
    with pytest.raises(RuntimeError, match="no encoder could be loaded") as err:
        open_embedder(cut, ckpt, "auto")
    assert str(cut) in str(err.value) and str(ckpt) in str(err.value)


def test_pipeline_reports_the_fallback(tiny_encoder_checkpoint, tiny_clip_files, tmp_path):
    import shutil

    from clip2_core.pipeline import Pipeline, PipelineConfig

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_encoder_checkpoint, ckpt)
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(b"\x08\x07garbage")
    cfg = PipelineConfig.from_dict({
        "model": {"checkpoint": str(ckpt), "onnx": str(cut)},
        "clip": {"model": tiny_clip_files.name, "weights": str(tiny_clip_files.weights_file),
                 "model_config_file": str(tiny_clip_files.config_file), "allow_random": True,
                 "allow_mismatch": True},  # the tiny checkpoint names a made-up CLIP
        "vocabulary": ["car", "pedestrian"],
    })
    pipe = Pipeline(cfg)
    assert pipe.fallbacks and str(cut) in pipe.fallbacks[0]
    assert pipe.recognizer.trained.get("vocabulary") == ["car", "pedestrian"]  # metadata from the checkpoint
