"""The cell grid of the neighbour searches (``pcdag/ops/neighbours.py`` is the API, the checks and the brute force).

Cubic cells of side h from each sample's lowest corner, keys (sample, cx, cy, cz) packed into one int64 and sorted.
The 27 cells around a query's cell are 9 runs of 3 consecutive keys, so ``searchsorted`` gives 9 ranges of sorted
points per query; the candidates are expanded into one flat list (``repeat_interleave`` with a known size) and
their distances computed pairwise: work ~ M × candidates per point, not n². Per query:
  - ``nearest_grid``: h = radius (1 + 1e-5); the segment minimum (``scatter_reduce`` amin), then the lowest target
    row at it (the brute force's ``min`` keeps the first). Exact with no fallback: a target outside the 27 cells is
    at least h away. h ≥ half the largest sample, or more candidates than ``GRID_WORK_LIMIT`` of the brute force's
    distances: ``None`` unless forced, and the caller takes the brute force for the whole call.
  - ``knn_grid``: one sort by (query << 32 | float32 bits of d²: they order like d² ≥ 0), the first k of each
    query's segment. Certificate: a point outside the 27 cells is at least b = h · min over axes of
    min(1 + u, 2 − u) away (u in [0, 1): the query's place in its cell), so a query whose k-th candidate is below
    b (1 − 1e-5), or whose candidates are its whole sample, has its exact answer; the others (isolated points) are
    returned uncertified for the caller's brute force. h = ``CELL_FACTOR`` × the ``CELL_QUANTILE`` quantile of the
    k-th neighbour distance of ``ESTIMATE_ROWS`` evenly spaced rows (by the caller's exact search): on room views at
    0.08 m (k = 24) about 200 candidates per point and under 1 % of the rows fall back. Strongly uneven densities
    (one h for a whole call) cost more candidates or more fallback rows, never exactness.
Cell coordinates are computed in float64 (exact differences of float32 values), so the certificate's margin only
has to cover the float32 rounding of distances (relative ~4e-7); h is floored so that the keys fit an int64.
Queries are taken in chunks of consecutive sorted positions holding about ``budget`` candidates each (more only
where one query alone has more), ~80 bytes per candidate with the knn sort.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from pcdag.graphs.batch import batch_index
from pcdag.ops.segment import segment_max

ESTIMATE_ROWS = 256  # rows whose k-th neighbour distance sets knn_grid's cell side
CELL_QUANTILE = 0.9  # cell side = this quantile of those distances ...
CELL_FACTOR = 1.25  # ... times this
GRID_WORK_LIMIT = 0.1  # unless forced, no grid when its candidates exceed this share of the brute force's entries
MARGIN = 1e-5  # relative safety of the certificate against float32 rounding of distances
SHIFT = 3  # cells are stored from 3 so that clamped query cells and their neighbours stay >= 0


class Samples(NamedTuple):
    sample: torch.Tensor  # [N] sample of each row
    start: torch.Tensor  # [B] first row of each sample
    count: torch.Tensor  # [B] rows of each sample


class Work(NamedTuple):
    """What a grid search did: the cell side, the candidate distances it computed, its chunks."""

    cell: float
    candidates: int
    chunks: int


class _Grid(NamedTuple):
    keys: torch.Tensor  # [N] sorted cell keys
    order: torch.Tensor  # [N] row of each sorted key
    cols: torch.Tensor  # [3, N] coordinates in sorted order
    dim: int  # cells per axis of the key, padding included


def samples(ends: torch.Tensor, n: int) -> Samples:
    """Per-row sample and per-sample rows from cumulative ``ends`` [B] (checked on the host) of ``n`` rows."""
    count = torch.diff(ends, prepend=ends.new_zeros(1))  # [B]
    return Samples(batch_index(ends, n), ends - count, count)


def sq_dist(a_cols: torch.Tensor, a_rows: torch.Tensor, b_cols: torch.Tensor, b_rows: torch.Tensor) -> torch.Tensor:
    """Squared distances between points ``a_cols[:, a_rows]`` and ``b_cols[:, b_rows]`` (``[3, N]`` columns;
    ``a_rows`` broadcasts to ``b_rows``'s shape, the result's), summed from coordinate differences: exact for
    near points far from the origin. (b − a)² is bit for bit (a − b)². Both paths use it, so they agree bit for
    bit."""
    d2 = b_cols[0][b_rows].sub_(a_cols[0][a_rows]).square_()
    tmp = b_cols[1][b_rows].sub_(a_cols[1][a_rows]).square_()
    d2 += tmp
    d2 += torch.take(b_cols[2], b_rows).sub_(a_cols[2][a_rows]).square_()
    return d2


# ---------------------------------------------------------------- building the grid


def _boxes(pts: torch.Tensor, sample: torch.Tensor, count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample lowest corner ``[B, 3]`` float64 of points ``[N, 3]`` in samples ``[N]`` of ``count`` ``[B]``
    points, and the largest extent over samples and axes (0-d float64)."""
    lo = -segment_max(-pts, sample, len(count), check=False)  # [B, 3]; empty samples 0, masked below
    hi = segment_max(pts, sample, len(count), check=False)  # [B, 3]
    extent = torch.where(count[:, None] > 0, hi.double() - lo.double(), 0.0).amax()  # exact for float32 corners
    return lo.double(), extent


def _cells(pts: torch.Tensor, origin: torch.Tensor, h: float, n_cells: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell ``[N, 3]`` int64 (clamped to ``[-2, n_cells + 1]``, then shifted by ``SHIFT``) of points ``[N, 3]``
    relative to their sample's ``origin`` ``[N, 3]`` float64, and ``reach`` ``[N]`` float64: the distance under
    which every point lies in the 27 cells around (h · min over axes of min(1 + u, 2 − u), u inside the cell)."""
    x = (pts.double() - origin) / h  # [N, 3], exact differences of float32 values
    cell = torch.floor(x)  # [N, 3]
    u = x - cell  # [N, 3] in [0, 1)
    reach = torch.minimum(u + 1.0, 2.0 - u).amin(dim=1) * h  # [N]
    return cell.clamp_(-2, n_cells + 1).long() + SHIFT, reach


def _key(sample: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, cz: torch.Tensor, dim: int) -> torch.Tensor:
    return ((sample * dim + cx) * dim + cy) * dim + cz


def _grid(pts: torch.Tensor, sample: torch.Tensor, cell: torch.Tensor, dim: int) -> _Grid:
    keys, order = torch.sort(_key(sample, cell[:, 0], cell[:, 1], cell[:, 2], dim), stable=True)  # [N], [N]
    return _Grid(keys, order, pts[order].t().contiguous(), dim)


_AROUND = [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]


def _ranges(grid: _Grid, cell: torch.Tensor, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First sorted position ``[Q, 9]`` and count ``[Q, 9]`` of the grid points in the 27 cells around each query
    cell ``[Q, 3]`` of sample ``[Q]``: per (dx, dy), the keys of cz − 1 .. cz + 1 are one run."""
    around = torch.tensor(_AROUND, dtype=torch.int64, device=cell.device)  # [9, 2]
    cx, cy = cell[:, None, 0] + around[:, 0], cell[:, None, 1] + around[:, 1]  # [Q, 9]
    first = _key(sample[:, None], cx, cy, cell[:, None, 2] - 1, grid.dim)  # [Q, 9]
    at = torch.searchsorted(grid.keys, torch.stack([first, first + 3], dim=2))  # [Q, 9, 2]
    return at[..., 0], at[..., 1] - at[..., 0]


def _expand(lo: torch.Tensor, count: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The flat candidate list of queries ``[Qc]`` with ranges ``lo``/``count`` ``[Qc, 9]`` holding ``total``
    entries: query of each ``[T]`` (grouped, ascending) and sorted grid position ``[T]``."""
    flat = count.reshape(-1)  # [Qc * 9]
    seg = torch.repeat_interleave(torch.arange(len(flat), device=lo.device), flat, output_size=total)  # [T]
    first = torch.cumsum(flat, 0) - flat  # [Qc * 9] exclusive
    pos = lo.reshape(-1)[seg] + torch.arange(total, device=lo.device) - first[seg]  # [T]
    return torch.div(seg, 9, rounding_mode="floor"), pos


def _chunks(per_query: torch.Tensor, total: int, budget: int) -> list[tuple[int, int, int]]:
    """``(first query, end, candidates)`` of consecutive query chunks of about ``budget`` candidates each (more
    when one query alone has more), from a device cumsum; one sync with several chunks."""
    budget = max(1, budget)
    if total <= budget:
        return [(0, len(per_query), total)]
    cum = torch.cumsum(per_query, 0)  # [Q]
    marks = budget * torch.arange(1, -(-total // budget), device=cum.device)  # [C - 1]
    cuts = torch.searchsorted(cum, marks, right=True)  # [C - 1] queries of the first c chunks
    at = torch.cat([cuts, cum[(cuts - 1).clamp(min=0)] * (cuts > 0)])
    host = at.tolist()
    ends = [0, *host[: len(cuts)], len(per_query)]
    sums = [0, *host[len(cuts) :], total]
    return [(a, b, t1 - t0) for a, b, t0, t1 in zip(ends, ends[1:], sums, sums[1:], strict=False) if b > a]


def _cell_plan(h: float, extent: float, n_samples: int) -> tuple[float, int, int]:
    """Cell side (floored so that the key fits an int64), cells per axis of a sample, and the key's axis size."""
    cap = int((2**62 / n_samples) ** (1 / 3)) - 2 * SHIFT - 4
    h = max(h, extent / cap)
    n_cells = int(extent / h) + 2
    dim = n_cells + 2 * SHIFT
    if n_samples * dim**3 >= 2**63:
        raise RuntimeError(f"neighbours: {n_samples} samples of {dim}³ cells do not fit an int64 key")
    return h, n_cells, dim


# ---------------------------------------------------------------- k nearest within a sample

ExactRows = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # rows [S] -> (index [S, k], d2 [S, k])


def _knn_cell_estimate(exact: ExactRows, n: int, s: Samples, k: int) -> torch.Tensor:
    """``[2]``: ``CELL_QUANTILE`` and the largest of the k-th neighbour distance (or the last one, in samples of at
    most k + 1 points) of ``ESTIMATE_ROWS`` evenly spaced rows of ``n`` in samples of two points or more."""
    rows = torch.arange(min(ESTIMATE_ROWS, n), device=s.sample.device) * n // min(ESTIMATE_ROWS, n)  # [S]
    _, d2 = exact(rows)  # [S, k]
    last = (s.count[s.sample[rows]] - 1).clamp(max=k)  # [S] columns filled
    kth = d2.gather(1, (last - 1).clamp(min=0)[:, None])[:, 0].sqrt()  # [S]
    kth = torch.where(last > 0, kth, math.nan)
    return torch.stack([torch.nanquantile(kth, CELL_QUANTILE), kth.nan_to_num(nan=-1.0).amax()])


def _knn_grid_chunk(
    g: _Grid,
    lo: torch.Tensor,
    count: torch.Tensor,
    total: int,
    c0: int,
    k: int,
    need: torch.Tensor,
    reach2: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries ``c0 ..`` (sorted positions) with ranges ``lo``/``count`` [Qc, 9]: index [Qc, k], dist [Qc, k] and
    whether the answer is certified ``[Qc]``; ``need`` [Qc] neighbours wanted, ``reach2`` [Qc] the squared reach."""
    qloc, pos = _expand(lo, count, total)  # [T], [T]
    d2 = sq_dist(g.cols, c0 + qloc, g.cols, pos)  # [T]
    d2.masked_fill_(pos == c0 + qloc, math.inf)  # the query itself sorts last
    key = (qloc << 32) | d2.view(torch.int32).long()  # [T]; float bits order like the floats for d2 >= 0
    key, perm = torch.sort(key)  # [T], segments keep their places
    sorted_d2 = (key & 0xFFFFFFFF).to(torch.int32).view(torch.float32)  # [T]
    per_query = count.sum(dim=1)  # [Qc] candidates, the query included
    first = torch.cumsum(per_query, 0) - per_query  # [Qc]
    col = torch.arange(k, device=lo.device)  # [k]
    at = (first[:, None] + col).clamp_(max=total - 1)  # [Qc, k]
    filled = col < need[:, None]  # [Qc, k]
    index = torch.where(filled, g.order[pos[perm[at]]], -1)  # [Qc, k]
    dist = torch.where(filled, sorted_d2[at].sqrt(), math.inf)  # [Qc, k]
    kth2 = sorted_d2[(first + need - 1).clamp(min=0, max=total - 1)].double()  # [Qc]
    return index, dist, (per_query - 1 >= need) & (kth2 < reach2)


def knn_grid(
    pts: torch.Tensor, s: Samples, n_max: int, k: int, exact: ExactRows, *, force: bool, budget: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Work] | None:
    """The ``k`` nearest other points of every row of ``pts`` [N, 3] within its sample (largest: ``n_max`` points)
    on the grid: index [N, k], dist [N, k], whether each row's answer is certified [N] (the caller searches the
    others exactly) and the work done; ``None`` when ``force`` is off and the brute force would compute fewer
    distances. ``exact(rows)`` is the exact search for a few rows (the cell side's estimate)."""
    n_samples = len(s.count)
    origin, extent = _boxes(pts, s.sample, s.count)
    quantile, largest, extent_h = torch.cat([_knn_cell_estimate(exact, len(pts), s, k).double(), extent[None]]).tolist()
    h = quantile * CELL_FACTOR if quantile > 0 else largest if largest > 0 else max(extent_h, 1.0)
    h, n_cells, dim = _cell_plan(h, extent_h, n_samples)
    cell, reach = _cells(pts, origin[s.sample], h, n_cells)  # [N, 3], [N]
    g = _grid(pts, s.sample, cell, dim)
    lo, count = _ranges(g, cell[g.order], s.sample[g.order])  # [N, 9] in sorted order
    per_query = count.sum(dim=1)  # [N]
    total = int(per_query.sum())  # sync
    if not force and total > GRID_WORK_LIMIT * len(pts) * n_max:
        return None
    n_rows = s.count[s.sample[g.order]]  # [N] size of each sorted query's sample
    need = (n_rows - 1).clamp(max=k)  # [N]
    reach2 = (reach[g.order] * (1 - MARGIN)).square()  # [N]
    whole = per_query == n_rows  # [N] the candidates are the whole sample: nothing to certify
    index = torch.empty(len(pts), k, dtype=torch.int64, device=pts.device)  # [N, k]
    dist = torch.empty(len(pts), k, dtype=torch.float32, device=pts.device)  # [N, k]
    certified = torch.empty(len(pts), dtype=torch.bool, device=pts.device)  # [N]
    chunks = _chunks(per_query, total, budget)
    for c0, c1, n in chunks:
        i, d, ok = _knn_grid_chunk(g, lo[c0:c1], count[c0:c1], n, c0, k, need[c0:c1], reach2[c0:c1])
        rows = g.order[c0:c1]  # [Qc]
        index[rows], dist[rows], certified[rows] = i, d, ok | whole[c0:c1]
    return index, dist, certified, Work(h, total, len(chunks))


# ---------------------------------------------------------------- nearest in a paired sample


def _nearest_grid_chunk(
    g: _Grid, q_cols: torch.Tensor, q_rows: torch.Tensor, lo: torch.Tensor, count: torch.Tensor, total: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries ``q_rows`` [Qc] with ranges ``lo``/``count`` [Qc, 9]: nearest d² [Qc] (+inf: no candidate) and the
    lowest target row at that distance [Qc]."""
    qloc, pos = _expand(lo, count, total)  # [T], [T]
    d2 = sq_dist(q_cols, q_rows[qloc], g.cols, pos)  # [T]
    best = d2.new_full((len(q_rows),), math.inf).scatter_reduce_(0, qloc, d2, "amin")  # [Qc]
    rows = torch.where(d2 == best[qloc], g.order[pos], len(g.order))  # [T]
    row = rows.new_full((len(q_rows),), len(g.order)).scatter_reduce_(0, qloc, rows, "amin")  # [Qc]
    return best, row


def nearest_grid(
    q_pts: torch.Tensor,
    q_rows: torch.Tensor,
    q_target: torch.Tensor,
    t_pts: torch.Tensor,
    s: Samples,
    n_max: int,
    radius: float,
    *,
    force: bool,
    budget: int,
) -> tuple[torch.Tensor, torch.Tensor, Work] | None:
    """For query rows ``q_rows`` [R0] of ``q_pts`` and their target sample ``q_target`` [R0] among ``t_pts``
    (samples ``s``, the largest of ``n_max`` points): the nearest d² [R0] (+inf: none within ``radius``) and target
    row [R0] by the grid, with the work done; ``None`` when ``force`` is off and the grid is not worth it."""
    origin, extent = _boxes(t_pts, s.sample, s.count)
    extent_h = float(extent)  # sync
    h, n_cells, dim = _cell_plan(radius * (1 + MARGIN), extent_h, len(s.count))
    if not force and h * 2 >= extent_h:  # every query would see its whole target sample
        return None
    t_cell, _ = _cells(t_pts, origin[s.sample], h, n_cells)  # [Mt, 3]
    g = _grid(t_pts, s.sample, t_cell, dim)
    q_cell, _ = _cells(q_pts[q_rows], origin[q_target], h, n_cells)  # [R0, 3]
    walk = torch.argsort(_key(q_target, q_cell[:, 0], q_cell[:, 1], q_cell[:, 2], dim))  # [R0] near ones together
    lo, count = _ranges(g, q_cell[walk], q_target[walk])  # [R0, 9]
    per_query = count.sum(dim=1)  # [R0]
    total = int(per_query.sum())  # sync
    if not force and total > GRID_WORK_LIMIT * len(q_rows) * n_max:
        return None
    d2 = torch.empty(len(q_rows), dtype=torch.float32, device=q_pts.device)  # [R0]
    row = torch.empty(len(q_rows), dtype=torch.int64, device=q_pts.device)  # [R0]
    q_cols, walked = q_pts.t().contiguous(), q_rows[walk]  # [3, Mq], [R0]
    chunks = _chunks(per_query, total, budget)
    for c0, c1, n in chunks:
        best, at = _nearest_grid_chunk(g, q_cols, walked[c0:c1], lo[c0:c1], count[c0:c1], n)
        d2[walk[c0:c1]], row[walk[c0:c1]] = best, at
    return d2, row, Work(h, total, len(chunks))
