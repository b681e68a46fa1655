"""The collective the losses' small modules share (Sinkhorn-Knopp, logit centering): an in-place all-reduce that is
the identity when torch.distributed is not initialised (one process, CPU tests), so each module keeps its
distributed reduction inside it."""

from __future__ import annotations

import torch
import torch.distributed as dist


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (``sum`` or ``max``) over the default group when distributed; identity otherwise."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t
