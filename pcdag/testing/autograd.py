"""What autograd keeps for the backward pass: a measuring tool for memory tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def saved_bytes(fn: Callable[[], Any]) -> tuple[Any, int]:
    """``(fn(), bytes)``: the result and the bytes of the distinct storages autograd saved for backward while
    ``fn`` ran (each storage counted once however many tensors view it). Storages saved inside a checkpointed
    region are invisible here: the checkpoint's own hooks replace these."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(storages.values())
