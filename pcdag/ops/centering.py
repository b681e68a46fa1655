"""DINO-style centering of teacher logits: a running centre ``c`` ``[K]`` subtracted before the softmax.

    centred = logits − c                                   (``forward``, the centre as it is)
    c ← λ·c + (1 − λ)·mean_i logits_i                       (``update``, after the targets are made)

The mean is over the rows of every rank: the row sums and the row count are all-reduced (one collective of
K + 1 numbers), so the buffer stays the same on every rank without relying on DDP's buffer broadcast. When
``torch.distributed`` is initialised every rank must call ``update`` the same number of times, also with no rows
of its own; a step where no rank has a row leaves the centre unchanged. ``enabled=False`` makes both calls
identities (the no-centering ablation), still with the buffer in the state dict.
"""

from __future__ import annotations

import torch
from torch import nn

from pcdag.ops.distributed import all_reduce


class LogitCentering(nn.Module):
    """Running centre of teacher logits over all ranks (module doc); float32 buffer ``center`` ``[K]``."""

    def __init__(self, size: int, momentum: float = 0.9, enabled: bool = True) -> None:
        super().__init__()
        if size < 1 or not 0.0 <= momentum <= 1.0:
            raise ValueError(f"LogitCentering: size {size} must be >= 1 and momentum {momentum} in [0, 1]")
        self.momentum, self.enabled = float(momentum), bool(enabled)
        self.register_buffer("center", torch.zeros(size))

    def extra_repr(self) -> str:
        return f"size={self.center.numel()}, momentum={self.momentum}, enabled={self.enabled}"

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` ``[n, K]`` minus the centre (float32)."""
        return logits.float() - self.center if self.enabled else logits.float()

    @torch.no_grad()
    def update(self, logits: torch.Tensor) -> None:
        """Move the centre towards the mean row of ``logits`` ``[n, K]`` over all ranks (collective)."""
        if not self.enabled:
            return
        total = torch.cat([logits.detach().float().sum(0), logits.new_full((1,), logits.shape[0], dtype=torch.float)])
        all_reduce(total)
        if total[-1] > 0:
            self.center.mul_(self.momentum).add_(total[:-1] / total[-1], alpha=1.0 - self.momentum)
