"""Neighbour searches of the training step, on the device, per sample (view) of a batch: the API, its input checks
and the brute force; the cell grid that answers most queries is ``pcdag/ops/cell_grid.py``.

API (the clustering losses and the regularisers rely on exactly these signatures):

    knn_within(coord [M, 3], offset [B], k: int) -> (index [M, k] int64, dist [M, k] float32)
        k nearest other points of the same sample (self excluded), Euclidean distance, ascending;
        samples with fewer than k + 1 points pad with index -1 and dist +inf.
    nearest_between(query [Mq, 3], query_offset [Bq], target [Mt, 3], target_offset [Bt],
                    pairs: LongTensor [P, 2] of (query sample, target sample), radius: float)
        -> (qi [R] int64, ti [R] int64, dist [R] float32)
        for every point of each query sample, its nearest point in the paired target sample, kept when dist < radius.

Indices are rows of the concatenated tensors (not of the sample). Both run without autograd, in float32 with
autocast off, on the device of their inputs; NaN or infinite coordinates raise. Distances are summed from coordinate
differences (x², + y², + z², the same float32 rounding on every path: ``cell_grid.sq_dist``, so the paths agree bit
for bit), never through the matrix-product shortcut ‖a‖² + ‖b‖² − 2ab (which loses millimetres at room-scale
coordinates). ``method`` = "grid" / "brute" forces a path (tests, benchmarks); ``*_stats`` also return what the
search did.

Paths ("auto"): the cell grid, exact; the brute force for the whole call where the grid would not save work
(radius = inf, cells as large as the samples, more candidates than ``cell_grid.GRID_WORK_LIMIT`` of the brute
force's distances), and for the rows whose knn answer the grid cannot certify (isolated points).

Brute force (the fallback and the reference): each query row against every point of its (paired) sample, padded to
the largest sample n_max (a per-sample +inf-padded copy of the points, or gathered rows when samples are very
unequal), in ``[rows, n_max]`` blocks of at most ``DISTANCES_PER_CHUNK`` entries; ``topk`` (k = 1: ``min``).

Memory: O(M) per call, plus grid chunks of consecutive queries holding about ``DISTANCES_PER_CHUNK // 4`` candidates
(more only where one query alone has more), ~80 bytes per candidate with the sort; or brute-force blocks of
``DISTANCES_PER_CHUNK`` entries, ~12 bytes each (gathered rows: ~30).
Host syncs per call, whatever the number of samples or pairs: the offsets (with the pairs and the finiteness
check), the cell side and extents, the candidate total, the chunk bounds (only with several chunks), and the rows
that fall back (knn) or pass the radius (nearest): 4 to 5; kernel launches: a few dozen per chunk.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import attrs
import torch

from pcdag.ops import cell_grid
from pcdag.ops.cell_grid import Samples, samples, sq_dist

DISTANCES_PER_CHUNK = 1 << 24  # entries of a brute-force block; a grid chunk holds a quarter as many candidates
METHODS = ("auto", "grid", "brute")


@attrs.frozen
class SearchStats:
    """What one search did: ``path`` "grid" or "brute", the cell side (0 on the brute path), the grid's candidate
    distances, its chunks, and the rows the knn certificate sent to the brute force."""

    path: str
    cell: float = 0.0
    candidates: int = 0
    chunks: int = 0
    fallback_rows: int = 0


# ---------------------------------------------------------------- input checks


def _points(coord: torch.Tensor, name: str) -> torch.Tensor:
    if coord.ndim != 2 or coord.shape[1] != 3:
        raise ValueError(f"{name} must have shape [M, 3], got {list(coord.shape)}")
    return coord.detach().float()


def _host_ints(device: torch.device, *tensors: torch.Tensor) -> list[list[int]]:
    """The values of small integer tensors on the host, in one sync."""
    flat = [t.detach().reshape(-1).to(device, torch.int64) for t in tensors]
    values = torch.cat(flat).tolist() if flat else []
    out, i = [], 0
    for t in flat:
        out.append(values[i : i + len(t)])
        i += len(t)
    return out


def _check_offset(offset: torch.Tensor, name: str) -> None:
    if offset.ndim != 1:
        raise ValueError(f"{name} must be a 1-d tensor of cumulative counts, got shape {list(offset.shape)}")


def _bounds(ends: list[int], n: int, name: str) -> list[int]:
    """``[0, end_0, end_1, ...]`` from cumulative ``ends``, checked against ``n`` rows."""
    bounds = [0, *ends]
    if any(b < a for a, b in zip(bounds, bounds[1:], strict=False)):
        raise ValueError(f"{name} = {ends} is not non-decreasing (cumulative point counts)")
    if bounds[-1] != n:
        raise ValueError(f"{name} ends at {bounds[-1]} but there are {n} points")
    return bounds


def _check_method(method: str, where: str) -> None:
    if method not in METHODS:
        raise ValueError(f"{where}: method = {method!r} must be one of {METHODS}")


# ---------------------------------------------------------------- the brute force


def _table(cols: torch.Tensor, sample: torch.Tensor, start: torch.Tensor, n_max: int) -> torch.Tensor | None:
    """The points ``cols`` [3, N] per sample, padded with +inf: ``[3, B, n_max]``; ``None`` when the samples are so
    unequal that the padding would exceed the points (the brute force then gathers rows one by one)."""
    if len(start) * n_max > 2 * cols.shape[1] + (1 << 16):
        return None
    table = cols.new_full((3, len(start), n_max), math.inf)  # [3, B, n_max]
    table[:, sample, torch.arange(len(sample), device=cols.device) - start[sample]] = cols
    return table


class _Targets(NamedTuple):
    cols: torch.Tensor  # [3, N] the target points
    table: torch.Tensor | None  # [3, B, n_max] the same per sample, or None
    n_max: int  # points of the largest sample


def _block(
    q_cols: torch.Tensor,
    q_rows: torch.Tensor,
    t: _Targets,
    sample: torch.Tensor,
    start: torch.Tensor,
    count: torch.Tensor,
) -> torch.Tensor:
    """``[r, n_max]`` squared distances from ``q_rows`` [r] to every point of its target sample (+inf pads)."""
    if t.table is not None:
        d2 = t.table[0].index_select(0, sample).sub_(q_cols[0][q_rows, None]).square_()  # [r, n_max]
        tmp = t.table[1].index_select(0, sample).sub_(q_cols[1][q_rows, None]).square_()  # [r, n_max]
        d2 += tmp
        d2 += torch.index_select(t.table[2], 0, sample, out=tmp).sub_(q_cols[2][q_rows, None]).square_()
        return d2  # pads: (inf - x)^2 = inf
    col = torch.arange(t.n_max, device=q_rows.device)  # [n_max]
    rows = (start[:, None] + col).clamp_(max=t.cols.shape[1] - 1)  # [r, n_max]
    return sq_dist(q_cols, q_rows[:, None], t.cols, rows).masked_fill_(col >= count[:, None], math.inf)


def _brute(
    q_cols: torch.Tensor,
    q_rows: torch.Tensor,
    t: _Targets,
    sample: torch.Tensor,
    start: torch.Tensor,
    count: torch.Tensor,
    skip: torch.Tensor | None,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Query rows ``q_rows`` [R] of ``q_cols`` [3, Mq] against every point of their target sample ``sample`` [R]
    (rows ``start`` [R] + [0, ``count`` [R])) but ``skip`` [R] (or None), in ``[rows, n_max]`` blocks of at most
    ``DISTANCES_PER_CHUNK`` entries: ``index`` [R, k] (target rows, -1 pads) and ``d2`` [R, k] (+inf pads)."""
    n_rows, device = len(q_rows), q_rows.device
    index = torch.full((n_rows, k), -1, dtype=torch.int64, device=device)  # [R, k]
    d2_out = torch.full((n_rows, k), math.inf, dtype=torch.float32, device=device)  # [R, k]
    kk, step = min(k, t.n_max), max(1, DISTANCES_PER_CHUNK // max(1, t.n_max))
    for r0 in range(0, n_rows if kk else 0, step):
        r1 = min(n_rows, r0 + step)
        d2 = _block(q_cols, q_rows[r0:r1], t, sample[r0:r1], start[r0:r1], count[r0:r1])  # [r, n_max]
        if skip is not None:
            d2[torch.arange(r1 - r0, device=device), skip[r0:r1] - start[r0:r1]] = math.inf
        if kk == 1:
            dd, at = d2.min(dim=1, keepdim=True)  # [r, 1]; the first (lowest) row among equals
        else:
            dd, at = torch.topk(d2, kk, dim=1, largest=False, sorted=True)  # [r, kk]
        index[r0:r1, :kk] = torch.where(torch.isinf(dd), -1, start[r0:r1, None] + at)
        d2_out[r0:r1, :kk] = dd
    return index, d2_out


# ---------------------------------------------------------------- knn_within


def _knn_brute_rows(t: _Targets, rows: torch.Tensor, s: Samples, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The brute force for ``rows`` [R]: index [R, k], d2 [R, k]."""
    of = s.sample[rows]  # [R]
    return _brute(t.cols, rows, t, of, s.start[of], s.count[of], rows, k)


def _knn(
    pts: torch.Tensor, offset: torch.Tensor, k: int, method: str
) -> tuple[torch.Tensor, torch.Tensor, SearchStats]:
    _check_offset(offset, "knn_within: offset")
    ends, (finite,) = _host_ints(pts.device, offset, torch.isfinite(pts).all())  # sync
    bounds = _bounds(ends, len(pts), "knn_within: offset")
    if not finite:
        raise ValueError("knn_within: coord holds NaN or infinite values")
    index = torch.full((len(pts), k), -1, dtype=torch.int64, device=pts.device)  # [M, k]
    dist = torch.full((len(pts), k), math.inf, dtype=torch.float32, device=pts.device)  # [M, k]
    n_max = max((b - a for a, b in zip(bounds, bounds[1:], strict=False)), default=0)
    if n_max < 2:
        return index, dist, SearchStats("brute")
    s = samples(offset.detach().to(pts.device, torch.int64), len(pts))
    cols = pts.t().contiguous()  # [3, M]
    t = _Targets(cols, _table(cols, s.sample, s.start, n_max), n_max)
    grid = None
    if method != "brute":
        exact = functools.partial(_knn_brute_rows, t, s=s, k=k)
        grid = cell_grid.knn_grid(pts, s, n_max, k, exact, force=method == "grid", budget=DISTANCES_PER_CHUNK // 4)
    if grid is None:
        rows = torch.arange(len(pts), device=pts.device)  # [M]
        stats = SearchStats("brute")
    else:
        index, dist, certified, work = grid
        rows = torch.nonzero(~certified).squeeze(1)  # [R] sync
        stats = SearchStats("grid", *work, fallback_rows=len(rows))
    if len(rows):
        i, d2 = _knn_brute_rows(t, rows, s, k)  # [R, k]
        index[rows], dist[rows] = i, d2.sqrt_()
    return index, dist, stats


@torch.no_grad()
def knn_within_stats(
    coord: torch.Tensor, offset: torch.Tensor, k: int, *, method: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor, SearchStats]:
    """``knn_within`` and what the search did (``SearchStats``); ``method`` "grid" or "brute" forces a path."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"knn_within: k = {k!r} must be a whole number >= 1")
    _check_method(method, "knn_within")
    pts = _points(coord, "knn_within: coord")  # [M, 3]
    with torch.autocast(pts.device.type, enabled=False):
        return _knn(pts, offset, k, method)


def knn_within(
    coord: torch.Tensor, offset: torch.Tensor, k: int, *, method: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest other points of every point within its own sample, nearest first.

    Returns ``index`` ``[M, k]`` int64 (rows of ``coord``) and ``dist`` ``[M, k]`` float32; a sample of ``n``
    points fills the first ``n - 1`` columns and pads the rest with index -1 and distance +inf.
    Exact duplicates of a point are neighbours at distance 0; only the point itself is excluded; among equally
    distant neighbours any may come first.
    """
    index, dist, _ = knn_within_stats(coord, offset, k, method=method)
    return index, dist


# ---------------------------------------------------------------- nearest_between


class _Queries(NamedTuple):
    rows: torch.Tensor  # [R0] query row, grouped by pair in order, ascending within a pair
    target: torch.Tensor  # [R0] paired target sample
    start: torch.Tensor  # [R0] its first row
    count: torch.Tensor  # [R0] its rows


def _queries(pair_list: list[list[int]], qb: list[int], tb: list[int], device: torch.device) -> _Queries:
    """One entry per (pair, query row) of the pairs with points on both sides, from host sizes of the pairs."""
    live = [(q, t) for q, t in pair_list if qb[q + 1] > qb[q] and tb[t + 1] > tb[t]]
    table = torch.tensor(
        [[qb[q], qb[q + 1] - qb[q], t, tb[t], tb[t + 1] - tb[t]] for q, t in live], dtype=torch.int64
    ).reshape(-1, 5)  # [P', 5]: query start, query rows, target sample, target start, target rows
    table = table.to(device)
    total = sum(qb[q + 1] - qb[q] for q, _ in live)
    pair = torch.repeat_interleave(torch.arange(len(live), device=device), table[:, 1], output_size=total)  # [R0]
    first = torch.cumsum(table[:, 1], 0) - table[:, 1]  # [P'] exclusive
    rows = table[pair, 0] + torch.arange(total, device=device) - first[pair]  # [R0]
    return _Queries(rows, table[pair, 2], table[pair, 3], table[pair, 4])


def _check_pairs(pairs: torch.Tensor) -> None:
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"nearest_between: pairs must have shape [P, 2], got {list(pairs.shape)}")


def _pair_list(values: list[int], n_query: int, n_target: int) -> list[list[int]]:
    out = [values[i : i + 2] for i in range(0, len(values), 2)]
    for q, t in out:
        if not (0 <= q < n_query and 0 <= t < n_target):
            raise ValueError(
                f"nearest_between: pair ({q}, {t}) is out of range: {n_query} query and {n_target} target samples"
            )
    return out


def _nearest(
    q_pts: torch.Tensor,
    query_offset: torch.Tensor,
    t_pts: torch.Tensor,
    target_offset: torch.Tensor,
    pairs: torch.Tensor,
    radius: float,
    method: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, SearchStats]:
    device = q_pts.device
    for name, offset in (("query_offset", query_offset), ("target_offset", target_offset)):
        _check_offset(offset, f"nearest_between: {name}")
    _check_pairs(pairs)
    finite = torch.isfinite(q_pts).all() & torch.isfinite(t_pts.to(device)).all()
    q_ends, t_ends, flat, (ok,) = _host_ints(device, query_offset, target_offset, pairs, finite)  # sync
    qb = _bounds(q_ends, len(q_pts), "nearest_between: query_offset")
    tb = _bounds(t_ends, len(t_pts), "nearest_between: target_offset")
    qs = _queries(_pair_list(flat, len(qb) - 1, len(tb) - 1), qb, tb, device)
    if not ok:
        raise ValueError("nearest_between: query or target holds NaN or infinite values")
    if not len(qs.rows):
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return empty, empty.clone(), torch.zeros(0, dtype=torch.float32, device=device), SearchStats("brute")
    s = samples(target_offset.detach().to(device, torch.int64), len(t_pts))
    n_max = max(b - a for a, b in zip(tb, tb[1:], strict=False))
    grid = None
    if method != "brute" and math.isfinite(radius):
        budget = DISTANCES_PER_CHUNK // 4
        grid = cell_grid.nearest_grid(
            q_pts, qs.rows, qs.target, t_pts, s, n_max, radius, force=method == "grid", budget=budget
        )
    if grid is None:
        cols = t_pts.t().contiguous()  # [3, Mt]
        t = _Targets(cols, _table(cols, s.sample, s.start, n_max), n_max)
        row, d2 = _brute(q_pts.t().contiguous(), qs.rows, t, qs.target, qs.start, qs.count, None, 1)  # [R0, 1]
        row, d2, stats = row[:, 0], d2[:, 0], SearchStats("brute")  # [R0], [R0]
    else:
        d2, row, work = grid
        stats = SearchStats("grid", *work)
    dist = d2.sqrt_()  # [R0]
    keep = torch.nonzero(dist < radius).squeeze(1)  # [R] one filter (one sync) for all pairs
    return qs.rows[keep], row[keep], dist[keep], stats


@torch.no_grad()
def nearest_between_stats(
    query: torch.Tensor,
    query_offset: torch.Tensor,
    target: torch.Tensor,
    target_offset: torch.Tensor,
    pairs: torch.Tensor,
    radius: float,
    *,
    method: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, SearchStats]:
    """``nearest_between`` and what the search did (``SearchStats``); ``method`` "grid" (where the radius is
    finite) or "brute" forces a path."""
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not radius > 0:
        raise ValueError(f"nearest_between: radius = {radius!r} must be a number > 0")
    _check_method(method, "nearest_between")
    q_pts = _points(query, "nearest_between: query")  # [Mq, 3]
    t_pts = _points(target, "nearest_between: target")  # [Mt, 3]
    with torch.autocast(q_pts.device.type, enabled=False):
        return _nearest(q_pts, query_offset, t_pts, target_offset, pairs, float(radius), method)


def nearest_between(
    query: torch.Tensor,
    query_offset: torch.Tensor,
    target: torch.Tensor,
    target_offset: torch.Tensor,
    pairs: torch.Tensor,
    radius: float,
    *,
    method: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every point of each paired query sample, its nearest point of the paired target sample.

    Returns ``qi`` [R] (rows of ``query``), ``ti`` [R] (rows of ``target``) and ``dist`` [R] float32, only
    pairs with ``dist < radius``; grouped by ``pairs`` in their order, ascending ``qi`` within a pair.
    A query sample listed in several pairs appears once per pair; an empty sample contributes nothing.
    Among equally near target points, the lowest row.
    """
    qi, ti, dist, _ = nearest_between_stats(query, query_offset, target, target_offset, pairs, radius, method=method)
    return qi, ti, dist
