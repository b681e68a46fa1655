"""Cross-entropy against soft targets at a temperature, in one autograd function that keeps less for the backward.

Per row ``i`` of logits ``s`` ``[P, K]`` and targets ``q`` ``[P, K]`` (no gradient), with ``z = s / τ``:

    ℓ_i = −Σ_k q_ik log softmax(z_i)_k  =  logsumexp(z_i) · Σ_k q_ik  −  Σ_k q_ik z_ik
    ∂ℓ_i / ∂s_ik = (softmax(z_i)_k · Σ_k q_ik − q_ik) / τ

The plain form (``log_softmax`` then a product) keeps the float32 log-softmax ``[P, K]`` and the targets for its
backward: 8 bytes per entry. This keeps the logits in their own dtype (2 bytes under bf16 autocast), the targets,
and per row a log-sum-exp and the target mass, and recomputes the softmax in the backward: 6 bytes per entry, and
no ``[P, K]`` log-softmax is ever written in the forward. Both compute in float32; they agree to float32
rounding (tested).
"""

from __future__ import annotations

from typing import Any

import torch


class _SoftCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
        z = logits.float() / temperature  # [P, K]
        lse = torch.logsumexp(z, dim=-1)  # [P]
        mass = targets.sum(dim=-1)  # [P]
        loss = lse * mass - (targets * z).sum(dim=-1)  # [P]
        ctx.save_for_backward(logits, targets, lse, mass)
        ctx.temperature = temperature
        return loss

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        logits, targets, lse, mass = ctx.saved_tensors
        t = ctx.temperature
        p = torch.exp(logits.float() / t - lse[:, None])  # [P, K] softmax, recomputed
        g = (p * mass[:, None] - targets) * (grad[:, None] / t)  # [P, K]
        return g.to(logits.dtype), None, None


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """``[P]`` loss per row: ``−Σ_k targets · log softmax(logits / temperature)``; no gradient to ``targets``."""
    if logits.shape != targets.shape or logits.dim() != 2:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must both be [P, K]")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return _SoftCrossEntropy.apply(logits, targets.detach().float(), float(temperature))
