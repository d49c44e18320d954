"""A dense PointNet++-style point encoder built only from exportable ops.

PointNet++ normally relies on custom CUDA ops (farthest point sampling, ball query, grouping).
Here every step is plain tensor algebra, so the model exports to ONNX (and from there to
TensorRT) without plugins and runs well on CPU:

* **Sampling** — farthest point sampling unrolled over a fixed number of centroids: each step is
  a gather, a squared distance, a running ``minimum`` and an ``argmax`` (ONNX: Gather/Min/ArgMax).
  ``sampling="stride"`` instead keeps the first M rows (the normaliser already shuffled them, so
  that is a uniform random subset) and skips the loop.
* **Grouping** — the k nearest neighbours of each centroid by ``topk`` on squared distances
  (ONNX TopK) instead of a radius ball query, gathered through one flat index (ONNX Gather).
* **Shared MLPs** — Linear + BatchNorm + ReLU on ``(rows, channels)`` matrices, max-pooled over
  each neighbourhood; :func:`fold_batchnorm` merges BatchNorm into the Linear for inference.
* **Head** — global max-pool, then a two-layer projection to the CLIP embedding size.

Input ``(B, P, 4)`` float32 normalised points (see :mod:`clip2_core.encoders.normalize`);
output ``(B, D)`` float32, L2-normalised.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from clip2_core.encoders.config import PointEncoderConfig, PointNet2Config


def _augmented(a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``[a, |a|^2, 1]`` and ``[-2b, 1, |b|^2]``: their dot product is ``|a - b|^2``."""
    a2 = (a * a).sum(-1, keepdim=True)
    b2 = (b * b).sum(-1, keepdim=True)
    return torch.cat([a, a2, torch.ones_like(a2)], dim=-1), torch.cat([-2.0 * b, torch.ones_like(b2), b2], dim=-1)


def pairwise_sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared distances ``(B, M, N)`` between ``a`` ``(B, M, 3)`` and ``b`` ``(B, N, 3)``.

    One batched matmul of augmented vectors (see :func:`_augmented`), so the (B, M, N) matrix is
    written once instead of by three broadcast passes.
    """
    lhs, rhs = _augmented(a, b)
    return torch.bmm(lhs, rhs.transpose(1, 2))


def batch_row_offsets(idx: torch.Tensor, rows_per_batch: int) -> torch.Tensor:
    """``(B, 1, ..., 1)`` offsets ``b * rows_per_batch`` shaped to broadcast against ``idx`` ``(B, ...)``."""
    off = torch.arange(idx.shape[0], device=idx.device, dtype=idx.dtype) * rows_per_batch
    return off.view((-1,) + (1,) * (idx.dim() - 1))


def gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x`` ``(B, P, C)`` indexed per batch by ``idx`` ``(B, ...)`` -> ``(B, ..., C)``."""
    b, p, c = x.shape
    return x.reshape(-1, c)[idx + batch_row_offsets(idx, p)]


def farthest_point_sample(xyz: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Farthest point sampling: ``(B, M)`` int64 indices of ``num_samples`` rows of ``xyz`` ``(B, P, 3)``.

    Row 0 first, then repeatedly the point farthest from those chosen so far (ties resolve to the
    lowest index, as argmax does). Each unrolled step gathers the chosen point's augmented vector,
    computes its squared distances to all points with one small batched matmul and updates the
    running minimum: Gather, MatMul, Min, ArgMax in ONNX, O(P) memory per step.
    """
    b, p, _ = xyz.shape
    lhs, rhs = _augmented(xyz, xyz)  # (B, P, 5) each
    lhs_flat = lhs.reshape(-1, 5)  # (B*P, 5)
    rhs_t = rhs.transpose(1, 2)  # (B, 5, P)
    farthest = torch.zeros_like(xyz[:, :1, 0], dtype=torch.long)  # (B, 1)
    offset = batch_row_offsets(farthest, p)  # (B, 1)
    dist = torch.bmm(lhs_flat[farthest + offset], rhs_t)  # (B, 1, P)
    chosen: List[torch.Tensor] = [farthest]
    for _ in range(num_samples - 1):  # kept 3-D throughout: no Squeeze/Unsqueeze per step
        farthest = torch.argmax(dist, dim=-1)  # (B, 1)
        chosen.append(farthest)
        dist = torch.minimum(dist, torch.bmm(lhs_flat[farthest + offset], rhs_t))
    return torch.cat(chosen, dim=1)


class SharedMLP(nn.Sequential):
    """Per-row MLP on ``(N, C_in)``: [Linear -> BatchNorm1d -> ReLU] per width."""

    def __init__(self, in_channels: int, widths: List[int]) -> None:
        layers: List[nn.Module] = []
        c = in_channels
        for w in widths:
            layers += [nn.Linear(c, w, bias=False), nn.BatchNorm1d(w), nn.ReLU(inplace=True)]
            c = w
        super().__init__(*layers)
        self.out_channels = c

    def rest(self, x: torch.Tensor) -> torch.Tensor:
        """Apply every layer after the first Linear (used when that Linear was applied by hand)."""
        for layer in list(self._modules.values())[1:]:
            x = layer(x)
        return x


class SetAbstraction(nn.Module):
    """Sample M centroids, group k neighbours, shared MLP on [relative xyz, features], max-pool."""

    def __init__(self, num_centroids: int, num_neighbors: int, in_features: int, widths: List[int], sampling: str):
        super().__init__()
        self.num_centroids = num_centroids
        self.num_neighbors = num_neighbors
        self.sampling = sampling
        self.mlp = SharedMLP(3 + in_features, widths)
        self.out_channels = self.mlp.out_channels

    def forward(self, xyz: torch.Tensor, feats: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        # xyz (B, P, 3), feats (B, P, C) -> new_xyz (B, M, 3), new_feats (B, M, C')
        b = xyz.shape[0]
        if self.sampling == "fps":
            new_xyz = gather_rows(xyz, farthest_point_sample(xyz, self.num_centroids))  # (B, M, 3)
        else:
            new_xyz = xyz[:, : self.num_centroids]
        rows = pairwise_sq_dist(new_xyz, xyz)  # (B, M, P) distances centroid -> points
        idx = torch.topk(rows, self.num_neighbors, dim=-1, largest=False, sorted=False).indices  # (B, M, k)
        # First layer on [p_j - c_i, f_j] computed as W [p_j, f_j] - W_xyz c_i: the linear part is
        # evaluated once per point (P rows) instead of once per neighbour (M*k rows).
        first = self.mlp[0]
        per_point = F.linear(torch.cat([xyz, feats], dim=-1), first.weight, first.bias)  # (B, P, W0)
        per_centre = F.linear(new_xyz, first.weight[:, :3])  # (B, M, W0)
        x = gather_rows(per_point, idx) - per_centre.unsqueeze(2)  # (B, M, k, W0)
        x = self.mlp.rest(x.reshape(-1, x.shape[-1]))  # (B*M*k, C')
        x = x.reshape(b, self.num_centroids, self.num_neighbors, -1).amax(dim=2)
        return new_xyz, x


class PointNet2Encoder(nn.Module):
    """PointNet++-style encoder: ``(B, P, 4)`` normalised points -> ``(B, D)`` unit embeddings."""

    def __init__(self, config: PointEncoderConfig) -> None:
        super().__init__()
        bb = config.backbone
        assert isinstance(bb, PointNet2Config)
        self.config = config
        levels = []
        c = config.in_channels - 3
        for sa in bb.set_abstraction:
            level = SetAbstraction(sa.num_centroids, sa.num_neighbors, c, sa.mlp, bb.sampling)
            levels.append(level)
            c = level.out_channels
        self.levels = nn.ModuleList(levels)
        self.global_mlp = SharedMLP(3 + c, bb.global_mlp)
        g = self.global_mlp.out_channels
        self.head = nn.Sequential(
            nn.Linear(g, bb.head_hidden, bias=False),
            nn.BatchNorm1d(bb.head_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(bb.head_hidden, config.embed_dim),
        )

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        xyz = points[..., :3]
        feats = points[..., 3:]
        for level in self.levels:
            xyz, feats = level(xyz, feats)
        b, m, _ = xyz.shape
        x = torch.cat([xyz, feats], dim=-1)
        x = self.global_mlp(x.reshape(b * m, -1)).reshape(b, m, -1).amax(dim=1)
        return F.normalize(self.head(x), dim=-1)

    def flops_per_cluster(self) -> int:
        """Floating-point operations (2 x multiply-adds) of one cluster's forward pass.

        Counts the dense layers as evaluated here (the first layer of each level once per
        point, the rest once per neighbour), the distance matrices and the FPS row minima;
        element-wise activations, gathers and top-k are not counted.
        """
        bb = self.config.backbone
        assert isinstance(bb, PointNet2Config)
        p = self.config.normalization.num_points
        total = 0
        for level, sa in zip(self.levels, bb.set_abstraction):
            first = level.mlp[0]
            total += 2 * p * first.in_features * first.out_features  # per-point first layer
            total += 2 * sa.num_centroids * 3 * first.out_features  # per-centre correction
            total += 2 * sa.num_centroids * sa.num_neighbors * (_mlp_macs(level.mlp) - first.in_features * first.out_features)
            total += 2 * sa.num_centroids * p * 5  # centroid -> point distances (augmented matmul)
            if bb.sampling == "fps":
                total += sa.num_centroids * p * (2 * 5 + 1)  # one distance row + running minimum per step
            p = sa.num_centroids
        total += 2 * p * _mlp_macs(self.global_mlp)
        total += 2 * _mlp_macs(self.head)
        return int(total)


def _mlp_macs(seq: nn.Module) -> int:
    return sum(m.in_features * m.out_features for m in seq.modules() if isinstance(m, nn.Linear))


@torch.no_grad()
def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Merge every eval-mode BatchNorm1d that directly follows a Linear into that Linear.

    Returns ``module`` (modified in place): the BatchNorm becomes ``nn.Identity``. Outputs are
    unchanged up to float rounding. For inference and export only; call on an eval() model.
    """
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules.keys())
        for a, b in zip(names, names[1:]):
            lin, bn = seq._modules[a], seq._modules[b]
            if isinstance(lin, nn.Linear) and isinstance(bn, nn.BatchNorm1d):
                if bn.training:
                    raise RuntimeError("fold_batchnorm needs an eval() model")
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                bias = lin.bias if lin.bias is not None else torch.zeros_like(bn.running_mean)
                fused = nn.Linear(lin.in_features, lin.out_features, bias=True)
                fused.weight.copy_(lin.weight * scale[:, None])
                fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
                seq._modules[a] = fused
                seq._modules[b] = nn.Identity()
    return module
