"""Segment reductions over sorted or unsorted cluster ids with torch built-ins (no torch_scatter).

Row i of ``values`` belongs to segment ``index[i]`` in 0..size-1; each function returns one row per segment.
Segments that no row belongs to give 0. All three are differentiable through autograd:

  * ``segment_sum`` — ``index_add``; gradient of a segment goes to each of its rows.
  * ``segment_mean`` — sum divided by the row count; gradient / count to each row.
  * ``segment_max`` — ``scatter_reduce(amax, include_self=False)``; the gradient goes to the arg-max row (split
    evenly between rows that tie for the maximum, as torch does).

Values may have any trailing shape ([N], [N, C], [N, C, D] ...); the result is [size, *trailing].
Works on CPU and CUDA. Index values outside 0..size-1 raise ValueError (instead of a device-side assert).

API (the PTv3 model relies on exactly these signatures):

    segment_max(values [N, C], index [N] in 0..M-1, size M) -> [M, C]
    segment_mean(values [N, C], index [N], size M) -> [M, C]
    segment_sum(values [N, C], index [N], size M) -> [M, C]

and one for the per-view losses (the Laplacian, the clustering and the consistency losses):

    mean_over_views(values [R], view [R] in 0..B-1, n_views B) -> scalar
        the mean of each view's values, then the mean over the views that have any; 0 when R = 0.
"""

from __future__ import annotations

import operator

import torch


def segment_sum(values: torch.Tensor, index: torch.Tensor, size: int, check: bool = True) -> torch.Tensor:
    """Sum of the rows of each segment: [N, ...] -> [size, ...]. ``check=False`` skips the range check of
    ``index`` (a device-to-host read, a sync on a GPU) for indices valid by construction."""
    index, size = _check(values, index, size, check)
    out = values.new_zeros((size, *values.shape[1:]))  # [M, ...]
    return out.index_add(0, index, values)


def segment_mean(values: torch.Tensor, index: torch.Tensor, size: int, check: bool = True) -> torch.Tensor:
    """Mean of the rows of each segment (0 for empty segments): [N, ...] -> [size, ...]."""
    if not values.dtype.is_floating_point:
        raise TypeError(f"segment_mean needs floating-point values, got {values.dtype}")
    total = segment_sum(values, index, size, check)  # [M, ...]
    size = total.shape[0]
    # rows per segment by index_add (bincount with minlength reads the largest index to the host: a GPU sync)
    count = total.new_zeros(size).index_add_(0, index.to(torch.int64), total.new_ones(index.shape[0])).clamp_(min=1)
    return total / count.to(values.dtype).view(size, *([1] * (values.dim() - 1)))


def segment_max(values: torch.Tensor, index: torch.Tensor, size: int, check: bool = True) -> torch.Tensor:
    """Element-wise maximum over the rows of each segment (0 for empty segments): [N, ...] -> [size, ...]."""
    index, size = _check(values, index, size, check)
    expanded = index.view(-1, *([1] * (values.dim() - 1))).expand_as(values)  # [N, ...]
    out = values.new_zeros((size, *values.shape[1:]))  # [M, ...]
    return out.scatter_reduce(0, expanded, values, reduce="amax", include_self=False)


def mean_over_views(values: torch.Tensor, view: torch.Tensor, n_views: int) -> torch.Tensor:
    """Mean of ``values`` [R] per view (``view`` [R]), then over the views that have any; 0 when R = 0
    (still connected to ``values``' graph so the backward pass reaches every parameter). No range check of
    ``view`` (no host read): callers pass the batch index of rows they own."""
    sums = values.new_zeros(n_views).index_add(0, view, values)  # [B]
    counts = values.new_zeros(n_views).index_add(0, view, torch.ones_like(values))  # [B]
    present = (counts > 0).to(values.dtype)
    return (sums / counts.clamp_min(1.0)).sum() / present.sum().clamp_min(1.0)


def _check(values: torch.Tensor, index: torch.Tensor, size: int, values_too: bool = True) -> tuple[torch.Tensor, int]:
    """Validate shapes and (``values_too``) the index range; return the index as int64 and the size as an int."""
    if values.dim() < 1:
        raise ValueError("values must have at least one dimension [N, ...]")
    if index.shape != (values.shape[0],):
        raise ValueError(
            f"index must have shape [{values.shape[0]}] (one segment id per row), got {tuple(index.shape)}"
        )
    if index.dtype.is_floating_point or index.dtype == torch.bool:
        raise TypeError(f"index must be an integer tensor, got {index.dtype}")
    try:
        size = operator.index(size)
    except TypeError:
        raise TypeError(f"size must be an int (number of segments), got {size!r}") from None
    if size < 0:
        raise ValueError(f"size must be >= 0 (number of segments), got {size}")
    index = index.to(torch.int64)
    if index.numel() and values_too:
        lo, hi = torch.stack(torch.aminmax(index)).tolist()  # one host read
        if lo < 0 or hi >= size:
            raise ValueError(f"index values must lie in 0..{size - 1}, found {lo}..{hi}")
    return index, size
