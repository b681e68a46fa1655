"""Sinkhorn-Knopp: balanced soft assignments of points to prototypes (SwAV / DINOv2 / Sonata targets).

With ``n`` points over all ranks and ``K`` prototypes, ``Q = exp(logits / τ)ᵀ`` ``[K, n]`` is scaled so that
every prototype gets the same total mass and every point is a distribution over prototypes:

    Q /= ΣQ                                          (sum all-reduced over ranks)
    repeat ``iterations`` times:
        Q /= row sums (per prototype, all-reduced);  Q /= K
        Q /= column sums (per point, local);         Q /= n
    Q *= n;  return Qᵀ                               (each output row sums to 1)

The last step is the point normalisation, so rows of the output sum to 1 exactly; the prototype totals are
only approximately ``n / K`` after a few iterations (exactly ``n / K`` in the limit).

Before the exponential the logits are shifted by their global maximum (an extra all-reduce). In exact
arithmetic the first normalisation cancels any constant factor, so the result is the spec's; the shift only
keeps ``exp`` from overflowing on large ``logits / τ``. (The first row step would cancel ``Q /= ΣQ`` as well;
it stays, as in the spec.) What no shift can save: a point whose best ``logit / τ`` lies more than about
``87 − ln(n·K)`` below the global best underflows to a zero column and comes out NaN, as in the reference;
cosine logits at τ ≥ 0.04 are far inside that (range 2 / τ ≤ 50). Collectives per call: 2 + ``iterations``.

Distributed: when ``torch.distributed`` is initialised every rank must call this the same number of times,
also with no rows of its own (``n_local = 0``): the collectives run in the same order on every rank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (``sum`` or ``max``) over the default group when distributed; identity otherwise."""
    if _distributed():
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t


class SinkhornKnopp(nn.Module):
    """Sinkhorn-Knopp normalisation of teacher logits into balanced targets, float32, no gradient."""

    def __init__(self, iterations: int = 3) -> None:
        super().__init__()
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"SinkhornKnopp: iterations = {iterations!r} must be a whole number ≥ 1")
        self.iterations = iterations

    def extra_repr(self) -> str:
        return f"iterations={self.iterations}"

    @torch.no_grad()
    def forward(self, logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """``logits`` ``[n, K]`` (this rank's rows) → targets ``[n, K]`` float32, each row summing to 1."""
        if logits.ndim != 2:
            raise ValueError(f"SinkhornKnopp: logits must be [n, K], got shape {list(logits.shape)}")
        if not temperature > 0:
            raise ValueError(f"SinkhornKnopp: temperature = {temperature!r} must be > 0")
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self._normalise(logits.detach().float() / temperature)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        n_local, k = x.shape  # x: [n, K] float32
        peak = x.max() if n_local else torch.full((), float("-inf"), device=x.device)  # (a fill: no host copy)
        peak = _all_reduce(peak.reshape(1), "max")  # [1]
        q = torch.exp(x - peak).t()  # [K, n]
        # total mass and global n in one reduction (float64: n stays exact); tensors, so no host sync
        rows = torch.full((), n_local, dtype=torch.float64, device=q.device)  # a fill, not a copy from the host
        totals = _all_reduce(torch.stack([q.sum().double(), rows]))
        n = totals[1].float()  # [] global number of rows
        q = q / totals[0].float()
        for _ in range(self.iterations):
            per_prototype = _all_reduce(q.sum(dim=1, keepdim=True))  # [K, 1]
            q = q / per_prototype / k
            q = q / q.sum(dim=0, keepdim=True) / n  # [K, n]; columns are this rank's points
        return (q * n).t().contiguous()  # [n_local, K]
