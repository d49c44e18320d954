"""Where TensorRT engines live and when they must be rebuilt — pure logic, no TensorRT needed.

An engine is only valid for the exact ONNX file, TensorRT version, GPU model and build options it
was built with. Engines are cached beside the ONNX file::

    encoder.onnx
    encoder.<key16>.engine          # serialized engine
    encoder.<key16>.engine.json     # EngineMeta of that engine (what the key hashes)

``key16`` is the first 16 hex digits of the sha256 of the :class:`EngineMeta` JSON, so a change in
any field selects a different file. The sidecar is compared field by field before an engine is
reused (guarding against hash-prefix collisions and hand-copied files); on any mismatch, a
missing sidecar or an unreadable file the engine is rebuilt.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional, Union

from clip2_core.fileio import atomic_write_json, file_sha256

ENGINE_SUFFIX = ".engine"
META_SUFFIX = ".engine.json"


@dataclass(frozen=True)
class EngineMeta:
    """Everything an engine depends on."""

    onnx_sha256: str  # hash of the ONNX file contents
    tensorrt_version: str  # tensorrt.__version__
    gpu_name: str  # torch.cuda.get_device_name()
    fp16: bool  # BuilderFlag.FP16 set
    min_batch: int  # optimisation profile of the dynamic batch axis
    opt_batch: int
    max_batch: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def engine_key(meta: EngineMeta) -> str:
    """16 hex digits identifying ``meta``."""
    return hashlib.sha256(meta.to_json().encode("utf-8")).hexdigest()[:16]


def engine_path(onnx_path: Union[str, Path], meta: EngineMeta) -> Path:
    """The engine file for ``meta``, beside ``onnx_path``."""
    p = Path(onnx_path)
    return p.with_name(f"{p.stem}.{engine_key(meta)}{ENGINE_SUFFIX}")


def meta_path(engine_file: Union[str, Path]) -> Path:
    p = Path(engine_file)
    return p.with_name(p.name[: -len(ENGINE_SUFFIX)] + META_SUFFIX) if p.name.endswith(ENGINE_SUFFIX) else p.with_name(p.name + ".json")


def read_meta(engine_file: Union[str, Path]) -> Optional[EngineMeta]:
    """The sidecar meta of an engine, or None when missing or unreadable."""
    mp = meta_path(engine_file)
    try:
        d = json.loads(mp.read_text(encoding="utf-8"))
        return EngineMeta(**d)
    except (OSError, ValueError, TypeError):
        return None


def needs_rebuild(engine_file: Union[str, Path], expected: EngineMeta) -> bool:
    """True unless ``engine_file`` exists, is non-empty and its sidecar equals ``expected``."""
    p = Path(engine_file)
    if not p.is_file() or p.stat().st_size == 0:
        return True
    return read_meta(p) != expected


def stale_engines(onnx_path: Union[str, Path], keep: Union[str, Path]) -> List[Path]:
    """Other cached engines of the same ONNX file (built for older versions/GPUs/options)."""
    p = Path(onnx_path)
    keep = Path(keep).resolve()
    return sorted(e for e in p.parent.glob(f"{p.stem}.*{ENGINE_SUFFIX}") if e.resolve() != keep)


def write_meta(engine_file: Union[str, Path], meta: EngineMeta) -> None:
    atomic_write_json(meta_path(engine_file), asdict(meta))
