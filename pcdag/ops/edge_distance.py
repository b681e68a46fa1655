"""``EdgeSquaredDistance``: ``‖f[src] - f[dst]‖²`` per edge of ``LaplacianSmoothness`` (``laplacian.py``), as a
torch autograd function in its own file so that validating a graph does not import torch."""

from __future__ import annotations

from typing import Any

import torch

ENTRIES_PER_CHUNK = 1 << 24  # feature entries gathered at once per edge chunk (64 MiB of float32)


class EdgeSquaredDistance(torch.autograd.Function):
    """``‖f[src] - f[dst]‖²`` per edge, in chunks; the backward scatters into both ends without keeping an
    ``[E, C]`` tensor alive (memory O(E + chunk), whatever the number of edges)."""

    @staticmethod
    def forward(ctx: Any, feat: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(feat, src, dst)
        sq = feat.new_empty(len(src))  # [E]
        for e0, e1 in _chunks(len(src), feat.shape[1]):
            diff = feat[src[e0:e1]] - feat[dst[e0:e1]]  # [e, C]
            sq[e0:e1] = (diff * diff).sum(dim=1)
        return sq

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        feat, src, dst = ctx.saved_tensors
        out = torch.zeros_like(feat)  # [M, C]
        for e0, e1 in _chunks(len(src), feat.shape[1]):
            diff = feat[src[e0:e1]] - feat[dst[e0:e1]]  # [e, C]
            part = (2.0 * grad[e0:e1]).unsqueeze(1) * diff  # d sq / d f_src; the negative for f_dst
            out.index_add_(0, src[e0:e1], part)
            out.index_add_(0, dst[e0:e1], -part)
        return out, None, None


def _chunks(n_edges: int, channels: int) -> list[tuple[int, int]]:
    step = max(1, ENTRIES_PER_CHUNK // max(1, channels))
    return [(e0, min(n_edges, e0 + step)) for e0 in range(0, n_edges, step)]
