"""CLIP2 losses on small hand-worked cases."""
from __future__ import annotations

import math

import pytest
import torch

from clip2_core.losses import CLIP2Loss, InstanceLoss, LogitScale, SemanticLoss

E1 = [1.0, 0.0]
E2 = [0.0, 1.0]
L1 = math.log(1 + math.exp(-1))  # CE of logits [1, 0] with target 0 = 0.313262


def test_semantic_two_orthogonal_classes():
    loss = SemanticLoss(init_scale=1.0, learnable_scale=False)
    out = loss(torch.tensor([E1, E2]), torch.tensor([E1, E2]), torch.tensor([0, 1]))
    assert out["loss"].item() == pytest.approx(L1, abs=1e-6)
    assert out["logit_scale"].item() == pytest.approx(1.0)


def test_semantic_wrong_label_costs_more():
    loss = SemanticLoss(init_scale=1.0, learnable_scale=False)
    out = loss(torch.tensor([E1]), torch.tensor([E1, E2]), torch.tensor([1]))
    assert out["loss"].item() == pytest.approx(math.log(1 + math.e), abs=1e-6)  # logits [1, 0], target 1


def test_semantic_shared_label_symmetric_worked_example():
    # points e1, e1, e2 with labels 0, 0, 1; text bank [e1, e2]; scale 1
    # point->text: every row is "logits [1, 0] or [0, 1], right class" -> L1 each
    # text->point, class 0: column [1, 1, 0], positives {0, 1}: -log(2e / (2e + 1)) = log(1 + 1/(2e))
    #              class 1: column [0, 0, 1], positive {2}:     -log(e / (e + 2))  = log(1 + 2/e)
    t2p = 0.5 * (math.log(1 + 1 / (2 * math.e)) + math.log(1 + 2 / math.e))
    want = 0.5 * (L1 + t2p)
    loss = SemanticLoss(init_scale=1.0, symmetric=True, learnable_scale=False)
    out = loss(torch.tensor([E1, E1, E2]), torch.tensor([E1, E2]), torch.tensor([0, 0, 1]))
    assert out["loss"].item() == pytest.approx(want, abs=1e-6)
    # proxies sharing a label are never each other's negatives: two aligned class-0 proxies give a
    # text->point term of -log(1) = 0 (a batch-wise InfoNCE with the text duplicated per proxy would
    # instead charge log 2 for the "wrong" duplicate), so the total is half the point->text term
    same = loss(torch.tensor([E1, E1]), torch.tensor([E1, E2]), torch.tensor([0, 0]))["loss"].item()
    assert same == pytest.approx(0.5 * L1, abs=1e-6)


def test_semantic_rejects_bad_labels():
    loss = SemanticLoss()
    with pytest.raises(ValueError, match="index"):
        loss(torch.tensor([E1]), torch.tensor([E1, E2]), torch.tensor([2]))
    with pytest.raises(ValueError, match="labels must be"):
        loss(torch.tensor([E1, E2]), torch.tensor([E1, E2]), torch.tensor([0]))
    with pytest.raises(ValueError, match="equal D"):
        loss(torch.tensor([[1.0, 0, 0]]), torch.tensor([E1, E2]), torch.tensor([0]))


def test_instance_matched_and_swapped():
    loss = InstanceLoss(init_scale=1.0, learnable_scale=False)
    matched = loss(torch.tensor([E1, E2]), torch.tensor([E1, E2]))["loss"].item()
    swapped = loss(torch.tensor([E1, E2]), torch.tensor([E2, E1]))["loss"].item()
    assert matched == pytest.approx(L1, abs=1e-6)
    assert swapped == pytest.approx(math.log(1 + math.e), abs=1e-6)


def test_instance_is_symmetric_in_its_arguments():
    g = torch.Generator().manual_seed(0)
    p = torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=-1)
    i = torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=-1)
    loss = InstanceLoss()
    assert loss(p, i)["loss"].item() == pytest.approx(loss(i, p)["loss"].item(), abs=1e-6)
    with pytest.raises(ValueError, match="points vs"):
        loss(p, i[:4])


@torch.enable_grad()  # independent of global grad mode left behind by other code
def test_logit_scale_is_clamped_and_learnable():
    s = LogitScale(init_scale=1000.0, max_scale=100.0)
    assert s().item() == pytest.approx(100.0, rel=1e-6)
    s2 = LogitScale()  # 1/0.07
    assert s2().item() == pytest.approx(1 / 0.07, rel=1e-6)
    loss = SemanticLoss()
    p = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1).requires_grad_()
    t = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    loss(p, t, torch.tensor([0, 1, 2, 0]))["loss"].backward()
    assert loss.logit_scale.log_scale.grad is not None and loss.logit_scale.log_scale.grad.abs() > 0
    assert p.grad is not None


def test_clip2_loss_weights_and_dict():
    p = torch.tensor([E1, E2])
    crit = CLIP2Loss(semantic_weight=0.5, instance_weight=2.0, init_scale=1.0)
    out = crit(p, torch.tensor([E1, E2]), torch.tensor([0, 1]), image_emb=torch.tensor([E2, E1]))
    assert set(out) == {"loss", "semantic_loss", "instance_loss", "semantic_scale", "instance_scale"}
    assert out["semantic_loss"].item() == pytest.approx(L1, abs=1e-6)
    assert out["instance_loss"].item() == pytest.approx(math.log(1 + math.e), abs=1e-6)
    assert out["loss"].item() == pytest.approx(0.5 * L1 + 2.0 * math.log(1 + math.e), abs=1e-5)
    no_img = crit(p, torch.tensor([E1, E2]), torch.tensor([0, 1]))
    assert no_img["instance_loss"].item() == 0.0
    assert no_img["loss"].item() == pytest.approx(0.5 * L1, abs=1e-6)
    with pytest.raises(ValueError):
        CLIP2Loss(semantic_weight=0.0, instance_weight=0.0)


@torch.enable_grad()
def test_losses_drive_alignment():
    """A few optimiser steps on free embeddings reduce both terms."""
    torch.manual_seed(0)
    pts = torch.randn(6, 16, requires_grad=True)
    text = torch.nn.functional.normalize(torch.randn(3, 16), dim=-1)
    imgs = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    crit = CLIP2Loss(symmetric_semantic=True)
    opt = torch.optim.SGD([pts, *crit.parameters()], lr=0.5)
    first = None
    for _ in range(30):
        out = crit(torch.nn.functional.normalize(pts, dim=-1), text, labels, imgs)
        first = first or out["loss"].item()
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert out["loss"].item() < 0.5 * first
