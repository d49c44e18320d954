"""A sparse-voxel point encoder on spconv (SubMConv3d / SparseConv3d blocks).

Input is the same ``(B, P, 4)`` normalised batch as the dense encoder. Points are voxelised on
a cubic grid centred on the cluster (``grid_size`` voxels of ``voxel_size`` normalised units per
axis; points outside are clamped to the border voxels), voxel features are the mean of their
points' ``[x, y, z, intensity]``. Stage 0 is two submanifold convolutions; each later stage
downsamples by 2 with a regular sparse convolution followed by a submanifold one. A per-sample
max-pool over the active voxels and a two-layer head give the ``(B, D)`` unit embedding.

Every convolution uses ``spconv.ConvAlgo.Native``.

**CPU.** A CUDA build of spconv (spconv-cu120 here) with ``ConvAlgo.Native`` computes these
convolutions correctly on CPU tensors, forward and backward, with several threads (checked against
a dense ``conv3d`` reference in the tests), whereas the CPU-only ``spconv`` wheel is known to give
wrong results with more than one thread. As a guard the encoder runs a tiny parity self-check the
first time it sees a CPU tensor in a process and refuses to run if spconv fails it. Pitfall:
spconv reads index tensors as raw contiguous memory — ``torch.nonzero(...)`` returns a
column-major (non-contiguous) tensor, so always pass ``indices.contiguous()``.

The dense :mod:`clip2_core.encoders.pointnet2` encoder is the default and the one exported to
ONNX/TensorRT; this one is not exportable (spconv has no ONNX ops).

spconv is imported lazily, only when a sparse encoder is built.
"""
from __future__ import annotations

import logging
import warnings
from typing import Any, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from clip2_core.encoders.config import PointEncoderConfig, SparseVoxelConfig

log = logging.getLogger(__name__)

_CPU_PARITY: Optional[Tuple[bool, float]] = None  # (ok, max abs diff) of the CPU self-check, once per process


def import_spconv() -> Any:
    """``spconv.pytorch``, or a clear ImportError naming the package to install."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # spconv uses deprecated torch.cuda.amp decorators
            import spconv.pytorch as spconv  # noqa: WPS433 (lazy heavy import)
    except Exception as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the sparse-voxel encoder needs spconv (a CUDA build such as spconv-cu120 also runs on CPU "
            f"machines for import): pip install spconv-cu120  ({exc})"
        ) from exc
    return spconv


def spconv_dense_parity(device: str = "cpu", seed: int = 0, backward: bool = False) -> float:
    """Max abs difference between spconv (SubMConv3d and strided SparseConv3d, Native algo) and a
    dense ``conv3d`` reference on a random 6^3 grid with 2 samples and 3->4 channels.

    Compares outputs at the active output sites and, with ``backward=True``, also the gradients
    of a random linear function of the outputs w.r.t. the input features, weights and bias.
    A correct spconv gives ~1e-6. Used by the tests and by the encoder's CPU self-check.
    """
    spconv = import_spconv()
    g = torch.Generator().manual_seed(seed)
    d, b, cin, cout = 6, 2, 3, 4
    occ = torch.rand(b, d, d, d, generator=g) < 0.3
    idx = occ.nonzero().to(torch.int32).contiguous()  # (N, 4) b, z, y, x; nonzero() is column-major
    li = idx.long()
    feats = torch.randn(idx.shape[0], cin, generator=g)
    worst = 0.0
    for stride in (1, 2):
        if stride == 1:
            conv = spconv.SubMConv3d(cin, cout, 3, padding=1, bias=True, indice_key="parity", algo=spconv.ConvAlgo.Native)
        else:
            conv = spconv.SparseConv3d(cin, cout, 3, stride=2, padding=1, bias=True, algo=spconv.ConvAlgo.Native)
        with torch.no_grad():
            for p in conv.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        conv.to(device)
        f_sp = feats.clone().to(device).requires_grad_(backward)
        with torch.set_grad_enabled(backward):
            y = conv(spconv.SparseConvTensor(f_sp, idx.to(device), [d, d, d], b))
        oi = y.indices.long().cpu()
        if stride == 1 and oi.shape[0] != idx.shape[0]:
            return float("inf")  # submanifold must keep exactly the input sites
        # dense reference on CPU, differentiable w.r.t. features and the same parameter values
        w = conv.weight.detach().cpu().clone().requires_grad_(backward)  # KRSC (out, kz, ky, kx, in)
        bias = conv.bias.detach().cpu().clone().requires_grad_(backward)
        f_ref = feats.clone().requires_grad_(backward)
        with torch.set_grad_enabled(backward):
            dense = torch.zeros(b, d, d, d, cin).index_put((li[:, 0], li[:, 1], li[:, 2], li[:, 3]), f_ref)
            ref = F.conv3d(dense.permute(0, 4, 1, 2, 3), w.permute(0, 4, 1, 2, 3), bias, stride=stride, padding=1)
            ref_at = ref[oi[:, 0], :, oi[:, 1], oi[:, 2], oi[:, 3]]
        worst = max(worst, float((ref_at.detach() - y.features.detach().cpu()).abs().max()))
        if backward:
            r = torch.randn(ref_at.shape, generator=g)
            with torch.enable_grad():
                (ref_at * r).sum().backward()
                (y.features * r.to(device)).sum().backward()
            for got, want in ((f_sp.grad, f_ref.grad), (conv.weight.grad, w.grad), (conv.bias.grad, bias.grad)):
                worst = max(worst, float((got.cpu() - want).abs().max()))
    return worst


def _check_cpu_spconv() -> None:
    global _CPU_PARITY
    if _CPU_PARITY is None:
        diff = spconv_dense_parity("cpu")
        _CPU_PARITY = (diff < 1e-4, diff)
    ok, diff = _CPU_PARITY
    if not ok:
        raise RuntimeError(
            "spconv computes wrong sparse convolutions on CPU in this environment "
            f"(max abs diff {diff:.3g} against a dense conv3d reference), so the sparse-voxel encoder "
            "cannot run on CPU here. Run it on a CUDA device, or use the dense 'pointnet2-*' encoders."
        )


def voxelize(points: torch.Tensor, cfg: SparseVoxelConfig) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean-pool ``(B, P, C)`` points into voxels.

    Returns ``features`` ``(N, C)`` float (mean of the points in each voxel) and ``indices``
    ``(N, 4)`` int32 ``[batch, z, y, x]`` of the N occupied voxels (sorted by linear index).
    """
    b, p, c = points.shape
    g = cfg.grid_size
    vox = torch.floor(points[..., :3] / cfg.voxel_size).long() + g // 2  # (B, P, 3) x, y, z
    vox = vox.clamp_(0, g - 1)
    batch = torch.arange(b, device=points.device).view(b, 1).expand(b, p)
    key = ((batch * g + vox[..., 2]) * g + vox[..., 1]) * g + vox[..., 0]  # (B, P)
    uniq, inverse = torch.unique(key.reshape(-1), return_inverse=True)
    n = uniq.shape[0]
    sums = torch.zeros(n, c, dtype=points.dtype, device=points.device).index_add_(0, inverse, points.reshape(-1, c))
    counts = torch.zeros(n, dtype=points.dtype, device=points.device).index_add_(
        0, inverse, torch.ones_like(inverse, dtype=points.dtype)
    )
    feats = sums / counts.unsqueeze(1)
    x = uniq % g
    y = (uniq // g) % g
    z = (uniq // (g * g)) % g
    bi = uniq // (g * g * g)
    indices = torch.stack([bi, z, y, x], dim=1).to(torch.int32).contiguous()
    return feats, indices


class SparseVoxelEncoder(nn.Module):
    """spconv encoder: ``(B, P, 4)`` normalised points -> ``(B, D)`` unit embeddings."""

    def __init__(self, config: PointEncoderConfig) -> None:
        super().__init__()
        bb = config.backbone
        assert isinstance(bb, SparseVoxelConfig)
        spconv = import_spconv()
        native = spconv.ConvAlgo.Native
        self.config = config
        chans = list(bb.channels)
        layers = [
            spconv.SubMConv3d(config.in_channels, chans[0], 3, padding=1, bias=False, indice_key="subm0", algo=native),
            nn.BatchNorm1d(chans[0]),
            nn.ReLU(),
            spconv.SubMConv3d(chans[0], chans[0], 3, padding=1, bias=False, indice_key="subm0", algo=native),
            nn.BatchNorm1d(chans[0]),
            nn.ReLU(),
        ]
        for i in range(1, len(chans)):
            layers += [
                spconv.SparseConv3d(chans[i - 1], chans[i], 3, stride=2, padding=1, bias=False, algo=native),
                nn.BatchNorm1d(chans[i]),
                nn.ReLU(),
                spconv.SubMConv3d(chans[i], chans[i], 3, padding=1, bias=False, indice_key=f"subm{i}", algo=native),
                nn.BatchNorm1d(chans[i]),
                nn.ReLU(),
            ]
        self.backbone = spconv.SparseSequential(*layers)
        self.head = nn.Sequential(
            nn.Linear(chans[-1], bb.head_hidden, bias=False),
            nn.BatchNorm1d(bb.head_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(bb.head_hidden, config.embed_dim),
        )

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        if points.device.type == "cpu":
            _check_cpu_spconv()
        spconv = import_spconv()
        bb = self.config.backbone
        b = points.shape[0]
        feats, indices = voxelize(points, bb)
        x = spconv.SparseConvTensor(feats, indices, [bb.grid_size] * 3, b)
        y = self.backbone(x)
        batch_idx = y.indices[:, 0].long()
        pooled = torch.full((b, y.features.shape[1]), float("-inf"), dtype=y.features.dtype, device=y.features.device)
        pooled = pooled.scatter_reduce(
            0, batch_idx.unsqueeze(1).expand_as(y.features), y.features, reduce="amax", include_self=True
        )
        return F.normalize(self.head(pooled), dim=-1)
