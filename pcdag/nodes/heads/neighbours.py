"""Neighbour searches of the training step, on the device, per sample (view) of a batch.

API (the clustering losses and the regularisers rely on exactly these signatures):

    knn_within(coord [M, 3], offset [B], k: int) -> (index [M, k] int64, dist [M, k] float32)
        k nearest other points of the same sample (self excluded), Euclidean distance, ascending;
        samples with fewer than k + 1 points pad with index -1 and dist +inf.
    nearest_between(query [Mq, 3], query_offset [Bq], target [Mt, 3], target_offset [Bt],
                    pairs: LongTensor [P, 2] of (query sample, target sample), radius: float)
        -> (qi [R] int64, ti [R] int64, dist [R] float32)
        for every point of each query sample, its nearest point in the paired target sample, kept when dist < radius.

Indices are rows of the concatenated tensors (not of the sample). Both run without autograd, in float32 with
autocast off, on the device of their inputs. Distances are summed from coordinate differences, never through the
matrix-product shortcut ‖a‖² + ‖b‖² − 2ab (which loses millimetres at room-scale coordinates in float32).

Chunk rule: one sample (or query/target pair) at a time; its query rows are cut into chunks of
``max(1, 2**24 // n_target)`` rows, so no distance block holds more than 2**24 entries (64 MiB of float32;
about three such blocks live at once with the temporaries and top-k's workspace), however large the sample:
256 rows at a time for a 65k-point view.
"""

from __future__ import annotations

import math

import torch

DISTANCES_PER_CHUNK = 1 << 24  # entries of one [rows, n_target] distance block


def _rows_per_chunk(n_target: int) -> int:
    return max(1, DISTANCES_PER_CHUNK // max(1, n_target))


def _points(coord: torch.Tensor, name: str) -> torch.Tensor:
    if coord.ndim != 2 or coord.shape[1] != 3:
        raise ValueError(f"{name} must have shape [M, 3], got {list(coord.shape)}")
    return coord.detach().float()


def _bounds(offset: torch.Tensor, n: int, name: str) -> list[int]:
    """``[0, end_0, end_1, ...]`` from cumulative ``offset`` ``[B]``, checked against ``n`` rows."""
    if offset.ndim != 1:
        raise ValueError(f"{name} must be a 1-d tensor of cumulative counts, got shape {list(offset.shape)}")
    ends = [int(e) for e in offset.tolist()]
    bounds = [0, *ends]
    if any(b < a for a, b in zip(bounds, bounds[1:], strict=False)):
        raise ValueError(f"{name} = {ends} is not non-decreasing (cumulative point counts)")
    if bounds[-1] != n:
        raise ValueError(f"{name} ends at {bounds[-1]} but there are {n} points")
    return bounds


def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[R, 3]`` x ``[T, 3]`` -> ``[R, T]`` squared distances summed from coordinate differences (exact for
    near points far from the origin, unlike ‖a‖² + ‖b‖² − 2ab; and several times faster than ``torch.cdist``'s
    difference kernel on GPUs). Peak memory: two ``[R, T]`` blocks."""
    d2 = (a[:, None, 0] - b[None, :, 0]).square_()  # [R, T]
    d2 += (a[:, None, 1] - b[None, :, 1]).square_()
    d2 += (a[:, None, 2] - b[None, :, 2]).square_()
    return d2


@torch.no_grad()
def knn_within(coord: torch.Tensor, offset: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest other points of every point within its own sample, nearest first.

    Returns ``index`` ``[M, k]`` int64 (rows of ``coord``) and ``dist`` ``[M, k]`` float32; a sample of ``n``
    points fills the first ``n - 1`` columns and pads the rest with index -1 and distance +inf.
    Exact duplicates of a point are neighbours at distance 0; only the point itself is excluded.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"knn_within: k = {k!r} must be a whole number >= 1")
    pts = _points(coord, "knn_within: coord")  # [M, 3]
    bounds = _bounds(offset, len(pts), "knn_within: offset")
    index = torch.full((len(pts), k), -1, dtype=torch.int64, device=pts.device)  # [M, k]
    dist = torch.full((len(pts), k), math.inf, dtype=torch.float32, device=pts.device)  # [M, k]
    with torch.autocast(pts.device.type, enabled=False):
        for start, stop in zip(bounds, bounds[1:], strict=False):
            n = stop - start
            kk = min(k, n - 1)
            if kk < 1:
                continue
            sample = pts[start:stop]  # [n, 3]
            rows = _rows_per_chunk(n)
            for r0 in range(0, n, rows):
                r1 = min(n, r0 + rows)
                d2 = _sq_dist(sample[r0:r1], sample)  # [R, n]
                own = torch.arange(r0, r1, device=pts.device)  # [R] column of each row's own point
                d2[own - r0, own] = math.inf
                dd, ii = torch.topk(d2, kk, dim=1, largest=False, sorted=True)  # [R, kk]
                index[start + r0 : start + r1, :kk] = ii + start
                dist[start + r0 : start + r1, :kk] = dd.sqrt_()
    return index, dist


def _pairs(pairs: torch.Tensor, n_query: int, n_target: int) -> list[tuple[int, int]]:
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"nearest_between: pairs must have shape [P, 2], got {list(pairs.shape)}")
    out = [(int(q), int(t)) for q, t in pairs.tolist()]
    for q, t in out:
        if not (0 <= q < n_query and 0 <= t < n_target):
            raise ValueError(
                f"nearest_between: pair ({q}, {t}) is out of range: {n_query} query and {n_target} target samples"
            )
    return out


@torch.no_grad()
def nearest_between(
    query: torch.Tensor,
    query_offset: torch.Tensor,
    target: torch.Tensor,
    target_offset: torch.Tensor,
    pairs: torch.Tensor,
    radius: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every point of each paired query sample, its nearest point of the paired target sample.

    Returns ``qi`` [R] (rows of ``query``), ``ti`` [R] (rows of ``target``) and ``dist`` [R] float32, only
    pairs with ``dist < radius``; grouped by ``pairs`` in their order, ascending ``qi`` within a pair.
    A query sample listed in several pairs appears once per pair; an empty sample contributes nothing.
    """
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not radius > 0:
        raise ValueError(f"nearest_between: radius = {radius!r} must be a number > 0")
    q_pts = _points(query, "nearest_between: query")  # [Mq, 3]
    t_pts = _points(target, "nearest_between: target")  # [Mt, 3]
    qb = _bounds(query_offset, len(q_pts), "nearest_between: query_offset")
    tb = _bounds(target_offset, len(t_pts), "nearest_between: target_offset")
    device = q_pts.device
    qi, ti, dist = [], [], []
    with torch.autocast(device.type, enabled=False):
        for qs, ts in _pairs(pairs, len(qb) - 1, len(tb) - 1):
            (q0, q1), (t0, t1) = (qb[qs], qb[qs + 1]), (tb[ts], tb[ts + 1])
            if q1 == q0 or t1 == t0:
                continue
            rows = _rows_per_chunk(t1 - t0)
            for r0 in range(q0, q1, rows):
                r1 = min(q1, r0 + rows)
                d2min, amin = _sq_dist(q_pts[r0:r1], t_pts[t0:t1]).min(dim=1)  # [R], [R]
                qi.append(torch.arange(r0, r1, device=device))
                ti.append(amin + t0)
                dist.append(d2min.sqrt_())
    if not qi:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return empty, empty.clone(), torch.zeros(0, dtype=torch.float32, device=device)
    qi_all, ti_all, d_all = torch.cat(qi), torch.cat(ti), torch.cat(dist)  # [R'] each
    keep = d_all < radius  # one filter (one device sync) for all pairs
    return qi_all[keep], ti_all[keep], d_all[keep]
