"""One ``Embedder`` protocol, three backends: PyTorch, ONNX Runtime, TensorRT.

Every backend maps a normalised batch ``(B, P, 4)`` float32 (see
:mod:`clip2_core.encoders.normalize`) to ``(B, D)`` float32 L2-normalised embeddings, and exposes
the encoder's :class:`PointEncoderConfig` (so callers normalise clusters the same way).

``create_embedder(source, backend="auto")``: ``source`` is a checkpoint directory or an exported
``.onnx`` file. ``auto`` picks TensorRT (tensorrt importable and a CUDA GPU) > ONNX Runtime >
PyTorch, by availability, and logs the choice. ONNX-based backends given a checkpoint use (and
create if missing or stale) ``model.onnx`` inside the checkpoint directory.

TensorRT is imported lazily inside :class:`TensorRTEmbedder`; the engine is built from the ONNX
file with the TensorRT 10 Python API (explicit batch, one optimisation profile over the dynamic
batch axis, optional FP16), cached beside the ONNX and rebuilt whenever TensorRT version, GPU,
ONNX hash or build options change (:mod:`clip2_core.runtime.engine_cache`).
"""
from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any, List, Optional, Protocol, Union, runtime_checkable

import numpy as np

from clip2_core.encoders.config import PointEncoderConfig
from clip2_core.fileio import atomic_write_bytes, file_sha256
from clip2_core.runtime import engine_cache
from clip2_core.runtime.export import INPUT_NAME, OUTPUT_NAME, export_onnx, read_onnx_metadata

log = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
ONNX_NAME = "model.onnx"


@runtime_checkable
class Embedder(Protocol):
    """``embed((B, P, 4) float32) -> (B, D) float32``, rows L2-normalised."""

    config: PointEncoderConfig
    name: str  # backend name: "torch" | "onnxruntime" | "tensorrt"

    def embed(self, batch: np.ndarray) -> np.ndarray:
        ...


def _check_batch(batch: np.ndarray, config: PointEncoderConfig) -> np.ndarray:
    x = np.asarray(batch)
    p, c = config.normalization.num_points, config.in_channels
    if x.ndim != 3 or x.shape[1:] != (p, c):
        raise ValueError(f"batch must be (B, {p}, {c}) for {config.name}, got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


class TorchEmbedder:
    """PyTorch eager inference (CPU or CUDA) of an ``nn.Module`` encoder."""

    name = "torch"

    def __init__(self, model: Any, config: PointEncoderConfig, device: str = "cpu") -> None:
        import torch

        self.config = config
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)

    @classmethod
    def from_checkpoint(cls, path: Union[str, Path], device: str = "cpu") -> "TorchEmbedder":
        from clip2_core.encoders import load_encoder

        model, ckpt = load_encoder(path)
        return cls(model, ckpt.model_config, device)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = _check_batch(batch, self.config)
        if x.shape[0] == 0:
            return np.zeros((0, self.config.embed_dim), dtype=np.float32)
        with torch.inference_mode():
            y = self.model(torch.from_numpy(x).to(self.device))
        return y.float().cpu().numpy()


class OrtEmbedder:
    """ONNX Runtime inference: CUDA execution provider when present and asked for, else CPU."""

    name = "onnxruntime"

    def __init__(self, onnx_path: Union[str, Path], device: str = "cpu", num_threads: Optional[int] = None) -> None:
        import onnxruntime as ort

        meta = read_onnx_metadata(onnx_path)
        self.config: PointEncoderConfig = meta["model_config"]
        self.onnx_path = Path(onnx_path)
        providers: List[str] = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError("onnxruntime has no CUDAExecutionProvider here; install onnxruntime-gpu or use device='cpu'")
            providers.insert(0, "CUDAExecutionProvider")
        so = ort.SessionOptions()
        if num_threads:
            so.intra_op_num_threads = int(num_threads)
        so.inter_op_num_threads = 1
        # ONNX Runtime's intra-op threads spin after each run by default; in the node they then fight
        # torch's threads (CLIP's image tower) and DDS for the 2 cores: a keyframe's camera step took
        # 44-52 ms with spinning, 11-16 ms without, and the encoder's own latency did not change (40
        # crops of pointnet2-tiny-v1: 1.42 vs 1.40 ms median). CLIP2_ORT_SPIN=1 turns spinning back on.
        so.add_session_config_entry("session.intra_op.allow_spinning", os.environ.get("CLIP2_ORT_SPIN", "0"))
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(onnx_path), so, providers=providers)
        self.providers = self.session.get_providers()

    def embed(self, batch: np.ndarray) -> np.ndarray:
        x = _check_batch(batch, self.config)
        if x.shape[0] == 0:
            return np.zeros((0, self.config.embed_dim), dtype=np.float32)
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


class TensorRTEmbedder:
    """TensorRT 10 inference from an ONNX file, with an engine cache beside it (CUDA only)."""

    name = "tensorrt"

    def __init__(self, onnx_path: Union[str, Path], fp16: bool = True, max_batch: int = 256, opt_batch: int = 64,
                 workspace_bytes: int = 1 << 30) -> None:
        trt = _import_tensorrt()
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("the TensorRT backend needs a CUDA GPU, and torch sees none; use backend='onnxruntime'")
        meta = read_onnx_metadata(onnx_path)
        self.config: PointEncoderConfig = meta["model_config"]
        self.onnx_path = Path(onnx_path)
        self.max_batch = int(max_batch)
        expected = engine_cache.EngineMeta(
            onnx_sha256=file_sha256(onnx_path),
            tensorrt_version=str(trt.__version__),
            gpu_name=torch.cuda.get_device_name(),
            fp16=bool(fp16),
            min_batch=1,
            opt_batch=int(min(opt_batch, max_batch)),
            max_batch=self.max_batch,
        )
        self.engine_path = engine_cache.engine_path(onnx_path, expected)
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        engine = None
        if not engine_cache.needs_rebuild(self.engine_path, expected):
            engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
            if engine is None:
                log.warning("cached TensorRT engine %s failed to deserialize; rebuilding", self.engine_path)
        if engine is None:
            blob = self._build(trt, expected, workspace_bytes)
            atomic_write_bytes(self.engine_path, blob)
            engine_cache.write_meta(self.engine_path, expected)
            engine = runtime.deserialize_cuda_engine(blob)
            if engine is None:
                raise RuntimeError(f"TensorRT could not deserialize the engine it just built ({self.engine_path})")
        self.engine = engine
        self.context = engine.create_execution_context()
        self._trt = trt

    def _build(self, trt: Any, meta: engine_cache.EngineMeta, workspace_bytes: int) -> bytes:
        log.info("building TensorRT engine for %s (fp16=%s, batch %d..%d); this takes a while",
                 self.onnx_path, meta.fp16, meta.min_batch, meta.max_batch)
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(self.onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse {self.onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
        if meta.fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        p, c = self.config.normalization.num_points, self.config.in_channels
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT_NAME, (meta.min_batch, p, c), (meta.opt_batch, p, c), (meta.max_batch, p, c))
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"TensorRT failed to build an engine from {self.onnx_path}")
        return bytes(serialized)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = _check_batch(batch, self.config)
        if x.shape[0] == 0:
            return np.zeros((0, self.config.embed_dim), dtype=np.float32)
        outs = []
        stream = torch.cuda.current_stream()
        for i in range(0, x.shape[0], self.max_batch):
            xin = torch.from_numpy(x[i : i + self.max_batch]).cuda()
            out = torch.empty((xin.shape[0], self.config.embed_dim), dtype=torch.float32, device="cuda")
            self.context.set_input_shape(INPUT_NAME, tuple(xin.shape))
            self.context.set_tensor_address(INPUT_NAME, xin.data_ptr())
            self.context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            stream.synchronize()
            outs.append(out.cpu().numpy())
        return np.concatenate(outs)


def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt  # lazy: only on machines with TensorRT
    except ImportError as exc:
        raise ImportError(
            "the TensorRT backend needs the 'tensorrt' Python package (TensorRT 10, from NVIDIA) on a CUDA machine; "
            "use backend='onnxruntime' or 'torch' here"
        ) from exc
    return trt


def tensorrt_available() -> bool:
    """tensorrt importable and a CUDA GPU visible."""
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover
        return False


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def choose_backend(backend: str = "auto", source_is_onnx: bool = False) -> str:
    """Resolve ``auto`` to TensorRT > ONNX Runtime > PyTorch by availability."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    if tensorrt_available():
        return "tensorrt"
    if onnxruntime_available():
        return "onnxruntime"
    if source_is_onnx:
        raise RuntimeError("an .onnx source needs onnxruntime or tensorrt, and neither is available")
    return "torch"


def ensure_onnx(checkpoint: Union[str, Path]) -> Path:
    """``model.onnx`` in the checkpoint directory, exported again when missing or stale."""
    from clip2_core.checkpoint import resolve_checkpoint_dir
    from clip2_core.encoders import load_encoder
    from clip2_core.runtime.export import _state_sha256

    d = resolve_checkpoint_dir(checkpoint)
    onnx_path = d / ONNX_NAME
    model, ckpt = load_encoder(d)
    want = _state_sha256(model)
    if onnx_path.is_file():
        try:
            meta = read_onnx_metadata(onnx_path)
            if meta["weights_sha256"] == want and meta["model_config"].to_dict() == ckpt.model_config.to_dict():
                return onnx_path
        except ValueError:
            pass
        log.info("re-exporting stale %s", onnx_path)
    return export_onnx(model, ckpt.model_config, onnx_path, clip=ckpt.clip)


def create_embedder(source: Union[str, Path], backend: str = "auto", device: Optional[str] = None,
                    fp16: bool = True, num_threads: Optional[int] = None) -> Embedder:
    """An :class:`Embedder` for a checkpoint directory or an exported ``.onnx`` file."""
    src = Path(source)
    if not src.exists():
        raise FileNotFoundError(f"encoder source not found: {src}")
    is_onnx = src.suffix == ".onnx"
    chosen = choose_backend(backend, source_is_onnx=is_onnx)
    if backend == "auto":
        log.info("embedder backend: %s (auto: tensorrt=%s, onnxruntime=%s)", chosen, tensorrt_available(),
                 onnxruntime_available())
    if chosen == "torch":
        if is_onnx:
            raise ValueError("the torch backend needs a checkpoint directory, not an .onnx file")
        return TorchEmbedder.from_checkpoint(src, device or "cpu")
    onnx_path = src if is_onnx else ensure_onnx(src)
    if chosen == "onnxruntime":
        return OrtEmbedder(onnx_path, device or "cpu", num_threads=num_threads)
    return TensorRTEmbedder(onnx_path, fp16=fp16)


FALLBACK_ORDER = ("tensorrt", "onnxruntime", "torch")


def open_embedder(onnx: Optional[Union[str, Path]], checkpoint: Optional[Union[str, Path]], backend: str = "auto",
                  num_threads: Optional[int] = None) -> "tuple[Embedder, List[str]]":
    """The configured encoder, falling back where a file or runtime is broken; ``(embedder, notes)``.

    Tried in order: the ONNX file (when given) on the chosen backend and then on each later one of
    TensorRT -> ONNX Runtime; then the checkpoint (when given) the same way, down to PyTorch. A
    truncated ONNX beside a good checkpoint, or an engine TensorRT cannot load, therefore costs
    speed, not the node. ``notes`` says what failed and what is used instead (empty when the first
    choice worked); when nothing loads the error names every file and why.
    """
    chosen = choose_backend(backend, source_is_onnx=onnx is not None and checkpoint is None)
    chain = list(FALLBACK_ORDER[FALLBACK_ORDER.index(chosen):])
    attempts = []
    for src in (s for s in (onnx, checkpoint) if s):
        for b in chain:
            if b == "torch" and Path(src).suffix == ".onnx":
                continue
            if b == "tensorrt" and b != chosen and not tensorrt_available():
                continue
            if b == "onnxruntime" and b != chosen and not onnxruntime_available():
                continue
            attempts.append((Path(src), b))
    if not attempts:  # e.g. backend torch with only an .onnx file: create_embedder's own clear error
        return create_embedder(onnx or checkpoint, backend=backend, num_threads=num_threads), []
    errors: List[str] = []
    first_exc: Optional[BaseException] = None
    for src, b in attempts:
        try:
            emb = create_embedder(src, backend=b, num_threads=num_threads)
        except Exception as exc:  # noqa: BLE001 - any failure of one file/runtime moves on to the next
            first_exc = first_exc or exc
            errors.append(f"{b} on {src}: {type(exc).__name__}: {exc}")
            log.warning("encoder: %s failed (%s: %s)", f"{b} on {src}", type(exc).__name__, exc)
            continue
        notes = []
        if errors:
            notes = [f"encoder fallback: using {b} on {src} because " + "; ".join(errors)]
            log.warning(notes[0])
        return emb, notes
    if len(errors) == 1 and first_exc is not None:
        raise first_exc
    raise RuntimeError("no encoder could be loaded: " + "; ".join(errors)) from first_exc
