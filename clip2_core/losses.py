"""CLIP2 losses: align point embeddings with frozen CLIP text and image embeddings.

Both terms are InfoNCE on cosine similarities times a learnable temperature
``s = exp(min(logit_scale, log(max_scale)))`` (initialised at 1/0.07, clamped at 100 as in CLIP).
All embeddings are expected L2-normalised.

**Semantic level** (:class:`SemanticLoss`) — point vs text. ``text_bank`` ``(V, D)`` holds one
embedding per vocabulary entry and ``labels`` ``(B,)`` index into it. Several proxies may share a
label; the text side is never duplicated, so a proxy's own class is never one of its negatives:

* point -> text: ``-log softmax_c(s * p_i . t_c)[y_i]`` averaged over the batch (each proxy picks
  its class among the V entries);
* text -> point (optional, ``symmetric=True``): for every class c present in the batch, with
  positives ``P_c = {i : y_i = c}``,
  ``-log( sum_{i in P_c} exp(s p_i.t_c) / sum_i exp(s p_i.t_c) )`` averaged over the present
  classes — the multi-positive form, so proxies sharing a label are not pushed apart.

**Instance level** (:class:`InstanceLoss`) — point vs the CLIP image embedding of the proxy's own
camera crop: symmetric InfoNCE over the batch, ``(CE(s P I^T, arange) + CE(s I P^T, arange)) / 2``.

:class:`CLIP2Loss` returns ``{"loss", "semantic_loss", "instance_loss", "semantic_scale",
"instance_scale"}`` with ``loss = w_sem * semantic + w_inst * instance``.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch
from torch import nn
from torch.nn import functional as F


class LogitScale(nn.Module):
    """Learnable inverse temperature, stored as a log and clamped at ``max_scale`` when used."""

    def __init__(self, init_scale: float = 1.0 / 0.07, max_scale: float = 100.0, learnable: bool = True) -> None:
        super().__init__()
        if not (init_scale > 0 and max_scale > 0):
            raise ValueError("logit scales must be > 0")
        value = torch.tensor(math.log(init_scale), dtype=torch.float32)
        if learnable:
            self.log_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_scale", value)
        self.max_log = math.log(max_scale)

    def forward(self) -> torch.Tensor:
        return self.log_scale.clamp(max=self.max_log).exp()


def _check_pair(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"{what}: expected (N, D) and (M, D) with equal D, got {tuple(a.shape)} and {tuple(b.shape)}")


class SemanticLoss(nn.Module):
    """Point-text InfoNCE against a vocabulary text bank (see the module docstring)."""

    def __init__(self, init_scale: float = 1.0 / 0.07, max_scale: float = 100.0, symmetric: bool = False,
                 learnable_scale: bool = True) -> None:
        super().__init__()
        self.logit_scale = LogitScale(init_scale, max_scale, learnable_scale)
        self.symmetric = symmetric

    def forward(self, point_emb: torch.Tensor, text_bank: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``point_emb`` ``(B, D)``, ``text_bank`` ``(V, D)``, ``labels`` ``(B,)`` int64 in [0, V)."""
        _check_pair(point_emb, text_bank, "SemanticLoss")
        labels = labels.long()
        if labels.shape != (point_emb.shape[0],):
            raise ValueError(f"labels must be ({point_emb.shape[0]},), got {tuple(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= text_bank.shape[0]):
            raise ValueError(f"labels must index the {text_bank.shape[0]} text-bank rows")
        scale = self.logit_scale()
        logits = scale * point_emb @ text_bank.t()  # (B, V)
        loss = F.cross_entropy(logits, labels)
        if self.symmetric:
            present = torch.unique(labels)  # (Cp,)
            col = logits[:, present].t()  # (Cp, B): class c's text vs every point
            pos = labels.unsqueeze(0) == present.unsqueeze(1)  # (Cp, B)
            log_all = torch.logsumexp(col, dim=1)
            log_pos = torch.logsumexp(col.masked_fill(~pos, float("-inf")), dim=1)
            loss = 0.5 * (loss + (log_all - log_pos).mean())
        return {"loss": loss, "logit_scale": scale.detach()}


class InstanceLoss(nn.Module):
    """Symmetric point-image InfoNCE over the batch (row i of each side is one proxy)."""

    def __init__(self, init_scale: float = 1.0 / 0.07, max_scale: float = 100.0, learnable_scale: bool = True) -> None:
        super().__init__()
        self.logit_scale = LogitScale(init_scale, max_scale, learnable_scale)

    def forward(self, point_emb: torch.Tensor, image_emb: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``point_emb`` ``(B, D)``, ``image_emb`` ``(B, D)``."""
        _check_pair(point_emb, image_emb, "InstanceLoss")
        if point_emb.shape[0] != image_emb.shape[0]:
            raise ValueError(f"InstanceLoss: {point_emb.shape[0]} points vs {image_emb.shape[0]} images")
        scale = self.logit_scale()
        logits = scale * point_emb @ image_emb.t()  # (B, B)
        target = torch.arange(logits.shape[0], device=logits.device)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
        return {"loss": loss, "logit_scale": scale.detach()}


class CLIP2Loss(nn.Module):
    """``semantic_weight * SemanticLoss + instance_weight * InstanceLoss``, as a dict."""

    def __init__(self, semantic_weight: float = 1.0, instance_weight: float = 1.0, symmetric_semantic: bool = False,
                 init_scale: float = 1.0 / 0.07, max_scale: float = 100.0) -> None:
        super().__init__()
        if semantic_weight < 0 or instance_weight < 0 or semantic_weight + instance_weight <= 0:
            raise ValueError("loss weights must be >= 0 and not both 0")
        self.semantic_weight = float(semantic_weight)
        self.instance_weight = float(instance_weight)
        self.semantic = SemanticLoss(init_scale, max_scale, symmetric=symmetric_semantic)
        self.instance = InstanceLoss(init_scale, max_scale)

    def forward(
        self,
        point_emb: torch.Tensor,
        text_bank: torch.Tensor,
        labels: torch.Tensor,
        image_emb: Optional[torch.Tensor] = None,
    ) -> Dict[str, torch.Tensor]:
        """The instance term is skipped (reported as 0) when ``image_emb`` is None or the weight is 0."""
        sem = self.semantic(point_emb, text_bank, labels)
        zero = point_emb.new_zeros(())
        if image_emb is not None and self.instance_weight > 0:
            inst = self.instance(point_emb, image_emb)
        else:
            inst = {"loss": zero, "logit_scale": self.instance.logit_scale().detach()}
        total = self.semantic_weight * sem["loss"] + self.instance_weight * inst["loss"]
        return {
            "loss": total,
            "semantic_loss": sem["loss"].detach(),
            "instance_loss": inst["loss"].detach(),
            "semantic_scale": sem["logit_scale"],
            "instance_scale": inst["logit_scale"],
        }
