"""The spconv sparse-voxel encoder: voxelisation, spconv vs a dense conv3d reference.

The CUDA spconv wheel with ConvAlgo.Native must match dense ``conv3d`` on CPU tensors — forward
and backward, with one and with two threads (the CPU-only spconv wheel fails this with more than
one thread). The same checks run on CUDA where a GPU exists (marked gpu).
"""
from __future__ import annotations

import pytest
import torch

from clip2_core.encoders import load_model_config

from clip2_core.encoders.sparse import import_spconv

import_spconv()  # pinned (requirements/core.txt): a machine without spconv fails here instead of skipping


def test_voxelize_worked_example():
    from clip2_core.encoders.sparse import voxelize

    cfg = load_model_config("sparse-voxel-s-v1").backbone  # voxel 0.05, grid 64 (centre voxel index 32)
    pts = torch.tensor([
        [[0.01, 0.01, 0.01, 1.0], [0.02, 0.03, 0.04, 0.0], [0.06, 0.0, 0.0, 0.5], [9.0, -9.0, 0.0, 0.2]],
    ])
    feats, idx = voxelize(pts, cfg)
    # points 0 and 1 share voxel (x,y,z) = (32,32,32); point 2 is in (33,32,32); point 3 clamps to (63,0,32)
    rows = {tuple(r): i for i, r in enumerate(idx.tolist())}
    assert set(rows) == {(0, 32, 32, 32), (0, 32, 32, 33), (0, 32, 0, 63)}  # [b, z, y, x]
    torch.testing.assert_close(feats[rows[(0, 32, 32, 32)]], torch.tensor([0.015, 0.02, 0.025, 0.5]))
    torch.testing.assert_close(feats[rows[(0, 32, 0, 63)]], torch.tensor([9.0, -9.0, 0.0, 0.2]))
    assert idx.dtype == torch.int32


@pytest.mark.parametrize("threads", [1, 2])
def test_spconv_matches_dense_conv3d_on_cpu(threads):
    from clip2_core.encoders.sparse import spconv_dense_parity

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert spconv_dense_parity("cpu", seed=0) < 1e-4
        assert spconv_dense_parity("cpu", seed=1, backward=True) < 1e-4
    finally:
        torch.set_num_threads(old)


@torch.enable_grad()  # independent of global grad mode left behind by other code
def test_sparse_encoder_forward_backward_on_cpu():
    from clip2_core.encoders import create_point_encoder

    torch.manual_seed(0)
    enc = create_point_encoder("sparse-voxel-s-v1")
    x = torch.randn(3, 256, 4) * 0.3
    y = enc(x)
    assert y.shape == (3, 512)
    torch.testing.assert_close(y.norm(dim=1), torch.ones(3))
    y.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())
    enc.eval()
    with torch.no_grad():
        # a sample's embedding does not depend on the rest of the batch
        torch.testing.assert_close(enc(x)[1:2], enc(x[1:2]), atol=1e-5, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_spconv_matches_dense_conv3d_on_cuda():  # pragma: no cover - GPU machines only
    from clip2_core.encoders.sparse import spconv_dense_parity

    assert spconv_dense_parity("cuda") < 1e-4
    assert spconv_dense_parity("cuda", seed=1, backward=True) < 1e-4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@torch.enable_grad()
def test_sparse_encoder_forward_backward_on_cuda():  # pragma: no cover - GPU machines only
    from clip2_core.encoders import create_point_encoder

    enc = create_point_encoder("sparse-voxel-s-v1").cuda()
    x = (torch.randn(4, 256, 4) * 0.3).cuda()
    y = enc(x)
    assert y.shape == (4, 512)
    torch.testing.assert_close(y.norm(dim=1), torch.ones(4, device="cuda"))
    y.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())
