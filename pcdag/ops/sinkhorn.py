"""Sinkhorn-Knopp: balanced soft assignments of points to prototypes (SwAV / DINOv2 / Sonata targets).

With ``n`` points over all ranks and ``K`` prototypes, ``Q = exp(logits / τ)ᵀ`` ``[K, n]`` is scaled so that
every prototype gets the same total mass and every point is a distribution over prototypes:

    Q /= ΣQ                                          (sum all-reduced over ranks)
    repeat ``iterations`` times:
        Q /= row sums (per prototype, all-reduced);  Q /= K
        Q /= column sums (per point, local);         Q /= n
    Q *= n;  return Qᵀ                               (each output row sums to 1)

Computed on scale vectors (``_normalise``): ``Q = diag(b) · E · diag(a)`` with ``E = exp(logits/τ - max)``;
each iteration is two matrix-vector products over ``E`` and writes no new ``[K, n]`` matrix, and ``Q`` is formed
once at the end: about a third of the memory traffic of the literal form (ten passes over the matrix per
iteration, a large part of the clustering losses' GPU time in issue 6's profile). The last step is the point
normalisation, so rows of the output sum to 1 (up to rounding); the prototype totals are only approximately
``n / K`` after a few iterations (exactly ``n / K`` in the limit).

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
from torch import nn

from pcdag.ops.distributed import all_reduce


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
        """The spec's iterations on ``Q = diag(b) · E · diag(a)`` (points × prototypes, ``E = exp(x - peak)``),
        moving only the scale vectors: a row step sets ``a`` from ``bᵀE`` and a column step ``b`` from ``E a``,
        two matrix-vector products per iteration instead of four passes writing a new ``Q``; ``Q`` itself is
        formed once, at the end. The same arithmetic up to float32 rounding."""
        n_local, k = x.shape  # x: [n, K] float32
        peak = x.max() if n_local else torch.full((), float("-inf"), device=x.device)  # (a fill: no host copy)
        peak = all_reduce(peak.reshape(1), "max")  # [1]
        e = torch.exp(x - peak)  # [n, K]
        # total mass and global n in one reduction (float64: n stays exact); tensors, so no host sync
        rows = torch.full((), n_local, dtype=torch.float64, device=x.device)  # a fill, not a copy from the host
        totals = all_reduce(torch.stack([e.sum().double(), rows]))
        n = totals[1].float()  # [] global number of rows
        b = (1.0 / totals[0].float()).expand(n_local)  # [n] point scales: Q = E / ΣE
        a = torch.ones(k, device=x.device)  # [K] prototype scales
        for _ in range(self.iterations):
            per_prototype = all_reduce(a * (b @ e))  # [K] row sums of Q (per prototype, all ranks)
            a = a / (per_prototype * k)
            b = 1.0 / ((e @ a) * n)  # [n]: Q's column sums are b · (E a); each point's mass becomes 1 / n
        return e.mul_(a).mul_((b * n)[:, None])  # [n_local, K] = n · Q
