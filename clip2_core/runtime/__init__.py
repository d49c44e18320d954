"""Deployment of point encoders: ONNX export, the ``Embedder`` backends, the TensorRT engine cache.

Importing this package is cheap; torch, onnxruntime and tensorrt are imported by the functions
and classes that need them.
"""
from clip2_core.runtime.embedders import (
    BACKENDS,
    Embedder,
    OrtEmbedder,
    TensorRTEmbedder,
    TorchEmbedder,
    choose_backend,
    create_embedder,
    ensure_onnx,
)
from clip2_core.runtime.export import export_onnx, onnx_parity, read_onnx_metadata

__all__ = [
    "BACKENDS",
    "Embedder",
    "OrtEmbedder",
    "TensorRTEmbedder",
    "TorchEmbedder",
    "choose_backend",
    "create_embedder",
    "ensure_onnx",
    "export_onnx",
    "onnx_parity",
    "read_onnx_metadata",
]
