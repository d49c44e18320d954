"""Point encoders: configs, input normalisation, the exportable PointNet++-style encoder."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clip2_core.encoders import (
    DEFAULT_ENCODER,
    NormalizationConfig,
    PointEncoderConfig,
    create_point_encoder,
    list_models,
    load_model_config,
    normalize_cluster,
    normalize_clusters,
)
from clip2_core.encoders.normalize import principal_heading, sample_indices
from clip2_core.encoders.pointnet2 import (
    PointNet2Encoder,
    farthest_point_sample,
    fold_batchnorm,
    gather_rows,
    pairwise_sq_dist,
)


# ---------------------------------------------------------------- configs


def test_list_models_and_configs_parse():
    names = list_models()
    assert {"pointnet2-s-v1", "pointnet2-tiny-v1", "sparse-voxel-s-v1"} <= set(names)
    assert DEFAULT_ENCODER in names
    for n in names:
        cfg = load_model_config(n)
        assert cfg.name == n and cfg.embed_dim > 0
        # round trip through a dict (what checkpoints store)
        assert PointEncoderConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_default_encoder_matches_clip_vit_b32():
    assert load_model_config(DEFAULT_ENCODER).embed_dim == 512  # open_clip ViT-B/32 embedding size


def test_bad_configs_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown point encoder"):
        load_model_config("no-such-model-v9")
    d = load_model_config("pointnet2-tiny-v1").to_dict()
    d["backbone"]["bogus"] = 1
    with pytest.raises(ValueError, match="unknown pointnet2 backbone keys"):
        PointEncoderConfig.from_dict(d)
    d = load_model_config("pointnet2-tiny-v1").to_dict()
    d["normalization"]["num_points"] = 8  # fewer than the 16 centroids of level 1
    with pytest.raises(ValueError, match="num_points"):
        PointEncoderConfig.from_dict(d)
    d = load_model_config("pointnet2-tiny-v1").to_dict()
    d["arch"] = "transformer"
    with pytest.raises(ValueError, match="unknown arch"):
        PointEncoderConfig.from_dict(d)
    # a config file given by path works
    p = tmp_path / "custom.json"
    good = load_model_config("pointnet2-tiny-v1").to_dict()
    good.pop("name")
    p.write_text(json.dumps(good))
    assert load_model_config(p).name == "custom"


def test_embed_dim_override():
    enc = create_point_encoder("pointnet2-tiny-v1", embed_dim=48).eval()
    assert enc(torch.zeros(2, 64, 4)).shape == (2, 48)


# ---------------------------------------------------------------- normalisation


def test_normalize_worked_example():
    # 4 points of a 2 m x 1 m x 1 m block, intensities 0..255; box centre (11, 20.5, 0.5)
    pts = np.array([[10, 20, 0, 0], [12, 20, 0, 255], [10, 21, 1, 51], [12, 21, 1, 510]], dtype=np.float32)
    cfg = NormalizationConfig(num_points=4, center="box", metric_scale=2.0, intensity_max=255.0)
    out = normalize_cluster(pts, cfg, rng=0)
    assert out.shape == (4, 4) and out.dtype == np.float32
    # every input row appears exactly once (K == P: a permutation)
    expected = np.array([[-0.5, -0.25, -0.25, 0.0], [0.5, -0.25, -0.25, 1.0],
                         [-0.5, 0.25, 0.25, 0.2], [0.5, 0.25, 0.25, 1.0]], dtype=np.float32)  # 510 clipped to 1
    got = out[np.lexsort(out.T[::-1])]
    want = expected[np.lexsort(expected.T[::-1])]
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_normalize_centroid_box_and_heading():
    pts = np.array([[0, 0, 0], [4, 0, 0], [4, 0, 0], [4, 0, 0]], dtype=np.float64)
    c = normalize_cluster(pts, NormalizationConfig(num_points=4, center="centroid", metric_scale=1.0), rng=1)
    assert sorted(c[:, 0].tolist()) == [-3.0, 1.0, 1.0, 1.0]  # centroid x = 3
    b = normalize_cluster(pts, NormalizationConfig(num_points=4, center="box", metric_scale=1.0), rng=1)
    assert sorted(b[:, 0].tolist()) == [-2.0, 2.0, 2.0, 2.0]  # extent centre x = 2
    assert np.all(b[:, 3] == 0.0)  # no intensity column -> zero channel
    # canonical heading: a line along 45 degrees ends up along +x
    line = np.stack([np.arange(5.0), np.arange(5.0), np.zeros(5)], axis=1)
    h = normalize_cluster(line, NormalizationConfig(num_points=5, canonical_heading=True, metric_scale=1.0), rng=0)
    np.testing.assert_allclose(h[:, 1], 0.0, atol=1e-6)
    np.testing.assert_allclose(sorted(h[:, 0]), np.sqrt(2) * np.arange(-2, 3), atol=1e-5)
    # an explicit box yaw wins over the principal axis
    box = np.array([2, 2, 0, 1, 1, 1, np.pi / 2])
    hb = normalize_cluster(line, NormalizationConfig(num_points=5, canonical_heading=True, metric_scale=1.0),
                           rng=0, box=box)
    # rotating (1, 1) by -90 degrees gives (1, -1)
    np.testing.assert_allclose(sorted(hb[:, 0]), [-2, -1, 0, 1, 2], atol=1e-6)


def test_metric_scale_keeps_size():
    small = np.random.default_rng(0).uniform(-0.5, 0.5, (100, 4))
    big = small * np.array([5, 5, 5, 1])
    cfg = NormalizationConfig(num_points=64)
    a = normalize_cluster(small, cfg, rng=0)
    b = normalize_cluster(big, cfg, rng=0)
    np.testing.assert_allclose(b[:, :3], 5 * a[:, :3], rtol=1e-5, atol=1e-6)


def test_sampling_deterministic_and_with_replacement():
    rng_pts = np.random.default_rng(0).normal(size=(10, 4))
    cfg = NormalizationConfig(num_points=32)
    a = normalize_cluster(rng_pts, cfg, rng=7)
    b = normalize_cluster(rng_pts, cfg, rng=7)
    np.testing.assert_array_equal(a, b)
    idx = sample_indices(10, 32, np.random.default_rng(3))
    assert set(idx.tolist()) == set(range(10)) and idx.shape == (32,)  # every point kept, rest repeats
    idx = sample_indices(100, 32, np.random.default_rng(3))
    assert len(set(idx.tolist())) == 32  # no repeats when enough points
    batch = normalize_clusters([rng_pts, rng_pts[:3]], cfg, seed=5)
    assert batch.shape == (2, 32, 4)
    # a cluster's input does not depend on its neighbours in the batch
    np.testing.assert_array_equal(normalize_clusters([rng_pts], cfg, seed=5)[0], batch[0])


def test_normalize_bad_input():
    cfg = NormalizationConfig(num_points=8)
    with pytest.raises(ValueError, match="empty"):
        normalize_cluster(np.zeros((0, 4)), cfg)
    with pytest.raises(ValueError, match="shape"):
        normalize_cluster(np.zeros((5, 2)), cfg)
    with pytest.raises(ValueError, match="NaN"):
        normalize_cluster(np.array([[np.nan, 0, 0, 0]]), cfg)
    with pytest.raises(ValueError, match="center"):
        NormalizationConfig(center="median")
    with pytest.raises(ValueError, match="metric_scale"):
        NormalizationConfig(metric_scale=0)


def test_principal_heading():
    xy = np.array([[0, 0], [1, 2], [2, 4], [3, 6]], dtype=float)
    assert principal_heading(xy) == pytest.approx(np.arctan2(2, 1))
    assert principal_heading(-xy) == pytest.approx(np.arctan2(2, 1))  # sign-free axis
    assert principal_heading(np.zeros((1, 2))) == 0.0


# ---------------------------------------------------------------- building blocks


def test_farthest_point_sample_worked_example():
    # points on a line at x = 0, 1, 2, 10: start at row 0 -> farthest is 10 (row 3) -> then 2? no:
    # distances to {0, 10}: 1 -> 1, 2 -> 2 (to 0) ... so row 2 (x=2, min dist 2) comes next.
    xyz = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [10.0, 0, 0]]])
    idx = farthest_point_sample(xyz, 3)
    assert idx.tolist() == [[0, 3, 2]]


def test_pairwise_and_gather():
    a = torch.tensor([[[0.0, 0, 0], [1.0, 1, 1]]])
    b = torch.tensor([[[0.0, 0, 2], [1.0, 0, 0], [3.0, 1, 1]]])
    d = pairwise_sq_dist(a, b)
    torch.testing.assert_close(d, torch.tensor([[[4.0, 1.0, 11.0], [3.0, 2.0, 4.0]]]))
    x = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    idx = torch.tensor([[2, 0], [1, 1]])
    torch.testing.assert_close(gather_rows(x, idx), torch.stack([x[0, [2, 0]], x[1, [1, 1]]]))


def _naive_set_abstraction(level, xyz, feats):
    """PointNet++ grouping written the textbook way: concat [p_j - c_i, f_j] per neighbour, full MLP."""
    b, p, _ = xyz.shape
    out_xyz, out_f = [], []
    for i in range(b):
        d = ((xyz[i, :, None, :] - xyz[i, None, :, :]) ** 2).sum(-1)
        chosen = [0]
        mind = d[0].clone()
        for _ in range(level.num_centroids - 1):
            j = int(torch.argmax(mind))
            chosen.append(j)
            mind = torch.minimum(mind, d[j])
        c = xyz[i, chosen]  # (M, 3)
        dc = ((c[:, None, :] - xyz[i, None, :, :]) ** 2).sum(-1)
        nn_idx = torch.argsort(dc, dim=1)[:, : level.num_neighbors]
        rel = xyz[i][nn_idx] - c[:, None, :]
        x = torch.cat([rel, feats[i][nn_idx]], dim=-1)  # (M, k, 3 + C)
        h = level.mlp(x.reshape(-1, x.shape[-1])).reshape(level.num_centroids, level.num_neighbors, -1)
        out_xyz.append(c)
        out_f.append(h.amax(dim=1))
    return torch.stack(out_xyz), torch.stack(out_f)


def test_set_abstraction_equals_textbook_form(tiny_encoder):
    model = tiny_encoder
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 64, 4, generator=g)
    level = model.levels[0]
    with torch.no_grad():
        got_xyz, got_f = level(x[..., :3], x[..., 3:])
        ref_xyz, ref_f = _naive_set_abstraction(level, x[..., :3], x[..., 3:])
    torch.testing.assert_close(got_xyz, ref_xyz)
    torch.testing.assert_close(got_f, ref_f, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- the encoder


def test_encoder_output_shape_norm_and_batch_independence(tiny_encoder):
    model = tiny_encoder
    x = torch.randn(5, 64, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x)
        y1 = model(x[2:3])
    assert y.shape == (5, 32) and y.dtype == torch.float32
    torch.testing.assert_close(y.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(y[2:3], y1, atol=1e-6, rtol=1e-5)


def test_encoder_permutation_invariant(tiny_encoder):
    # FPS starts at row 0, so keep row 0 first and permute the rest: same neighbourhoods
    model = tiny_encoder
    x = torch.randn(1, 64, 4, generator=torch.Generator().manual_seed(2))
    perm = torch.cat([torch.tensor([0]), 1 + torch.randperm(63, generator=torch.Generator().manual_seed(3))])
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x[:, perm]), atol=1e-5, rtol=1e-5)


def test_fold_batchnorm_preserves_outputs(tiny_encoder):
    model = tiny_encoder
    x = torch.randn(4, 64, 4, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = model(x)
        import copy

        fused = fold_batchnorm(copy.deepcopy(model))
        assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in fused.modules())
        torch.testing.assert_close(fused(x), ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match="eval"):
        fold_batchnorm(copy.deepcopy(model).train())


@torch.enable_grad()  # independent of global grad mode left behind by other code
def test_encoder_trains():
    torch.manual_seed(0)
    model = create_point_encoder("pointnet2-tiny-v1")
    x = torch.randn(8, 64, 4)
    target = torch.nn.functional.normalize(torch.randn(8, 32), dim=-1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = 1 - (model(x) * target).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_default_encoder_budget():
    m = create_point_encoder(DEFAULT_ENCODER)
    assert isinstance(m, PointNet2Encoder)
    # the design budget for 2-core CPU throughput: <= ~50 MFLOP per cluster
    assert m.flops_per_cluster() < 50e6
    assert 5e4 < sum(p.numel() for p in m.parameters()) < 5e6


def test_normalize_clusters_batch_kernel():
    """The batch path (one compiled pass) samples rows of each crop the way normalize_cluster does:
    a subset without repeats when the crop is large enough, every row when it is not; the rows are
    normalised exactly as normalize_cluster normalises them; numba and plain Python give the same bits."""
    from clip2_core import _kernels

    rng = np.random.default_rng(4)
    crops = [(rng.normal(size=(k, 5)) * 8).astype(np.float32) for k in (3, 40, 300)]
    crops[1][0, 3], crops[2][5, 3], crops[2][6, 3] = np.nan, np.inf, -7.0
    boxes = [rng.normal(size=7), None, rng.normal(size=7)]
    for center in ("box", "centroid"):
        cfg = NormalizationConfig(num_points=64, center=center)
        batch = normalize_clusters(crops, cfg, seed=3, boxes=boxes)
        for i, c in enumerate(crops):  # every row of the crop, normalised one cluster at a time
            every = normalize_cluster(c, NormalizationConfig(num_points=len(c), center=center), rng=0, box=boxes[i])
            rows = {tuple(r) for r in every.tolist()}
            got = [tuple(r) for r in batch[i].tolist()]
            assert all(r in rows for r in got), (center, i)
            assert len(set(got)) == min(len(c), 64)  # no repeats unless the crop is smaller than P
    assert batch[2, :, 3].min() >= 0 and batch[2, :, 3].max() <= 1
    # the same bits without numba (the kernel's plain Python body)
    flat = np.concatenate([c[:, :4] for c in crops]).astype(np.float64)
    args = (flat, np.array([0, 3, 43]), np.array([3, 40, 300]), np.zeros((3, 3)), np.array([1, 2, 1]),
            np.ones(3, bool), 64, 9, 4.0, 255.0)
    a, b = np.zeros((3, 64, 4), np.float32), np.zeros((3, 64, 4), np.float32)
    _kernels.sample_normalize_kernel(*args, a)
    getattr(_kernels.sample_normalize_kernel, "py_func", _kernels.sample_normalize_kernel)(*args, b)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="NaN or inf"):
        normalize_clusters([crops[0], np.array([[np.inf, 0, 0, 0]])], NormalizationConfig(num_points=8))
