"""ONNX export of the dense point encoder, with a parity check against PyTorch.

The exported graph takes ``points`` ``(batch, P, 4)`` float32 (dynamic ``batch``, fixed P) and
returns ``embedding`` ``(batch, D)`` float32, L2-normalised. BatchNorm is folded into the
preceding Linear layers first (same outputs, fewer nodes). Standard ONNX ops only (opset 17):
Gather, TopK, ArgMax, Min, MatMul/Gemm, ReduceMax, ... — no custom ops, so ONNX Runtime and the
TensorRT ONNX parser take it as is.

The ONNX file's ``metadata_props`` carry what a runtime needs without the checkpoint:
``clip2.model_config`` (the PointEncoderConfig JSON, including the normalisation),
``clip2.weights_sha256`` (hash of the source weights), ``clip2.clip`` (CLIP identity JSON).
"""
from __future__ import annotations

import copy
import json
import logging
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from clip2_core.encoders.config import PointEncoderConfig
from clip2_core.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

INPUT_NAME = "points"
OUTPUT_NAME = "embedding"
DEFAULT_OPSET = 17


def _state_sha256(model: Any) -> str:
    import hashlib

    h = hashlib.sha256()
    sd = model.state_dict()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def inference_copy(model: Any) -> Any:
    """An eval-mode deep copy of ``model`` with BatchNorm folded (dense encoders only)."""
    from clip2_core.encoders.pointnet2 import PointNet2Encoder, fold_batchnorm

    if not isinstance(model, PointNet2Encoder):
        raise ValueError(
            f"only the dense pointnet2 encoders are exportable, got {type(model).__name__} "
            "(spconv has no ONNX ops)"
        )
    return fold_batchnorm(copy.deepcopy(model).eval())


def export_onnx(
    model: Any,
    config: PointEncoderConfig,
    out_path: Union[str, Path],
    opset: int = DEFAULT_OPSET,
    clip: Optional[Dict[str, Any]] = None,
    example_batch: int = 2,
    vocabulary: Optional[List[str]] = None,
    extra: Optional[Dict[str, Any]] = None,
) -> Path:
    """Export ``model`` (a dense encoder) to ``out_path``; returns the path.

    ``clip``, ``vocabulary`` and ``extra`` (e.g. the training ``templates``) are the checkpoint's
    training metadata, carried in the ONNX file so a runtime without the checkpoint knows them.

    Written atomically (temporary file + rename). Raises ValueError for non-exportable models.
    """
    import onnx
    import torch

    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")
    m = inference_copy(model)
    weights_sha = _state_sha256(model)
    p = config.normalization.num_points
    x = torch.zeros(example_batch, p, config.in_channels)
    x.normal_(generator=torch.Generator().manual_seed(0))
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # the exporter writes to a file: a scratch one, removed whatever happens; the final file is
    # written atomically once the metadata is in and the model checks
    scratch = out.with_name(f".{out.name}.export.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its deprecation
            torch.onnx.export(
                m,
                (x,),
                str(scratch),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        proto = onnx.load(str(scratch))
    finally:
        scratch.unlink(missing_ok=True)
    meta = {
        "clip2.model_config": json.dumps(config.to_dict()),
        "clip2.weights_sha256": weights_sha,
        "clip2.clip": json.dumps(clip),
        "clip2.vocabulary": json.dumps(list(vocabulary) if vocabulary is not None else None),
        "clip2.extra": json.dumps(dict(extra or {})),
    }
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(proto)
    atomic_write_bytes(out, proto.SerializeToString())
    log.info("exported %s (%s, opset %d) to %s", config.name, type(model).__name__, opset, out)
    return out


def read_onnx_metadata(onnx_path: Union[str, Path]) -> Dict[str, Any]:
    """``{"model_config": PointEncoderConfig, "weights_sha256": str, "clip": dict|None, "vocabulary":
    list|None, "extra": dict}`` of an export (files exported before vocabulary/extra were recorded give None / {})."""
    import onnx

    path = Path(onnx_path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError / others for corrupt files
        raise ValueError(f"{path} is not a readable ONNX model: {exc}") from exc
    props = {p.key: p.value for p in proto.metadata_props}
    if "clip2.model_config" not in props:
        raise ValueError(f"{path} was not exported by clip2 (no clip2.model_config metadata)")
    return {
        "model_config": PointEncoderConfig.from_dict(json.loads(props["clip2.model_config"])),
        "weights_sha256": props.get("clip2.weights_sha256"),
        "clip": json.loads(props.get("clip2.clip", "null")),
        "vocabulary": json.loads(props.get("clip2.vocabulary", "null")),
        "extra": json.loads(props.get("clip2.extra", "{}")),
    }


def random_batch(batch: int, config: PointEncoderConfig, seed: int = 0) -> np.ndarray:
    """A plausible normalised batch ``(batch, P, 4)`` float32 (points in a ~car-sized box)."""
    rng = np.random.default_rng(seed)
    p = config.normalization.num_points
    xyz = rng.normal(0.0, 1.0, (batch, p, 3)) * np.array([0.5, 0.25, 0.2])
    inten = rng.uniform(0.0, 1.0, (batch, p, 1))
    return np.concatenate([xyz, inten], axis=-1).astype(np.float32)


def onnx_parity(
    model: Any,
    config: PointEncoderConfig,
    onnx_path: Union[str, Path],
    batch_sizes: Sequence[int] = (1, 3, 16),
    seed: int = 0,
) -> float:
    """Max abs difference between PyTorch (eval) and ONNX Runtime (CPU) over random batches."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    m = copy.deepcopy(model).eval()
    worst = 0.0
    for i, b in enumerate(batch_sizes):
        x = random_batch(b, config, seed + i)
        with torch.inference_mode():
            ref = m(torch.from_numpy(x)).numpy()
        got = sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        worst = max(worst, float(np.abs(ref - got).max()))
    return worst
