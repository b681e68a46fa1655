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
autocast off, on the device of their inputs; NaN or infinite coordinates raise. Distances are summed from coordinate
differences (x², + y², + z², the same float32 rounding on every path, so the paths agree bit for bit), never
through the matrix-product shortcut ‖a‖² + ‖b‖² − 2ab (which loses millimetres at room-scale coordinates).
``method`` = "grid" / "brute" forces a path (tests, benchmarks); ``*_stats`` also return what the search did.

Cell grid (the default): cubic cells of side h from each sample's lowest corner, keys (sample, cx, cy, cz) packed
into one int64 and sorted. The 27 cells around a query's cell are 9 runs of 3 consecutive keys, so ``searchsorted``
gives 9 ranges of sorted points per query; the candidates are expanded into one flat list (``repeat_interleave``
with a known size) and their distances computed pairwise: work ~ M × candidates per point, not n². Per query:
  - nearest_between: h = radius (1 + 1e-5); the segment minimum (``scatter_reduce`` amin), then the lowest target
    row at it (the brute force's ``min`` keeps the first). Exact with no fallback: a target outside the 27 cells is
    at least h away. radius = inf, h ≥ half the largest sample, or more candidates than ``GRID_WORK_LIMIT`` of the
    brute force's distances: the brute force for the whole call ("auto").
  - knn_within: one sort by (query << 32 | float32 bits of d²: they order like d² ≥ 0), the first k of each query's
    segment. Certificate: a point outside the 27 cells is at least b = h · min over axes of min(1 + u, 2 − u) away
    (u in [0, 1): the query's place in its cell), so a query whose k-th candidate is below b (1 − 1e-5), or whose
    candidates are its whole sample, has its exact answer; the others (isolated points) go to the brute force,
    restricted to their rows. h = ``CELL_FACTOR`` × the ``CELL_QUANTILE`` quantile of the k-th neighbour distance of
    ``ESTIMATE_ROWS`` evenly spaced rows (brute force): on room views at 0.08 m (k = 24) about 200 candidates per
    point and under 1 % of the rows fall back. Strongly uneven densities (one h for a whole call) cost more
    candidates or more fallback rows, never exactness.
Cell coordinates are computed in float64 (exact differences of float32 values), so the certificate's margin only
has to cover the float32 rounding of distances (relative ~4e-7); h is floored so that the keys fit an int64.

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

import math
from typing import NamedTuple

import attrs
import torch

from pcdag.graphs.batch import batch_index
from pcdag.ops.segment import segment_max

DISTANCES_PER_CHUNK = 1 << 24  # entries of a brute-force block; a grid chunk holds a quarter as many candidates
ESTIMATE_ROWS = 256  # rows whose k-th neighbour distance sets knn_within's cell side
CELL_QUANTILE = 0.9  # cell side = this quantile of those distances ...
CELL_FACTOR = 1.25  # ... times this
GRID_WORK_LIMIT = 0.1  # "auto" takes the brute force when the grid's candidates exceed this share of its entries
MARGIN = 1e-5  # relative safety of the certificate against float32 rounding of distances
SHIFT = 3  # cells are stored from 3 so that clamped query cells and their neighbours stay >= 0
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


class _Grid(NamedTuple):
    keys: torch.Tensor  # [N] sorted cell keys
    order: torch.Tensor  # [N] row of each sorted key
    cols: torch.Tensor  # [3, N] coordinates in sorted order
    dim: int  # cells per axis of the key, padding included


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


# ---------------------------------------------------------------- shared numerics


def _sq_dist(a_cols: torch.Tensor, a_rows: torch.Tensor, b_cols: torch.Tensor, b_rows: torch.Tensor) -> torch.Tensor:
    """Squared distances between points ``a_cols[:, a_rows]`` and ``b_cols[:, b_rows]`` (``[3, N]`` columns;
    ``a_rows`` broadcasts to ``b_rows``'s shape, the result's), summed from coordinate differences: exact for
    near points far from the origin. (b − a)² is bit for bit (a − b)²."""
    d2 = b_cols[0][b_rows].sub_(a_cols[0][a_rows]).square_()
    tmp = b_cols[1][b_rows].sub_(a_cols[1][a_rows]).square_()
    d2 += tmp
    d2 += torch.take(b_cols[2], b_rows).sub_(a_cols[2][a_rows]).square_()
    return d2


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
    return _sq_dist(q_cols, q_rows[:, None], t.cols, rows).masked_fill_(col >= count[:, None], math.inf)


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


def _chunks(per_query: torch.Tensor, total: int) -> list[tuple[int, int, int]]:
    """``(first query, end, candidates)`` of consecutive query chunks of about ``DISTANCES_PER_CHUNK // 4``
    candidates each (more when one query alone has more), from a device cumsum; one sync with several chunks."""
    budget = max(1, DISTANCES_PER_CHUNK // 4)
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


# ---------------------------------------------------------------- knn_within


class _Samples(NamedTuple):
    sample: torch.Tensor  # [N] sample of each row
    start: torch.Tensor  # [B] first row of each sample
    count: torch.Tensor  # [B] rows of each sample


def _samples(ends: torch.Tensor, n: int) -> _Samples:
    """Per-row sample and per-sample rows from cumulative ``ends`` [B] (checked on the host) of ``n`` rows."""
    count = torch.diff(ends, prepend=ends.new_zeros(1))  # [B]
    return _Samples(batch_index(ends, n), ends - count, count)


def _knn_brute_rows(t: _Targets, rows: torch.Tensor, s: _Samples, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The brute force for ``rows`` [R]: index [R, k], d2 [R, k]."""
    of = s.sample[rows]  # [R]
    return _brute(t.cols, rows, t, of, s.start[of], s.count[of], rows, k)


def _knn_cell_estimate(t: _Targets, s: _Samples, k: int) -> torch.Tensor:
    """``[2]``: ``CELL_QUANTILE`` and the largest of the k-th neighbour distance (or the last one, in samples of at
    most k + 1 points) of ``ESTIMATE_ROWS`` evenly spaced rows in samples of two points or more."""
    n = t.cols.shape[1]
    rows = torch.arange(min(ESTIMATE_ROWS, n), device=t.cols.device) * n // min(ESTIMATE_ROWS, n)  # [S]
    _, d2 = _knn_brute_rows(t, rows, s, k)  # [S, k]
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
    d2 = _sq_dist(g.cols, c0 + qloc, g.cols, pos)  # [T]
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


def _knn_grid(
    pts: torch.Tensor, t: _Targets, s: _Samples, k: int, force: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, SearchStats] | None:
    """Grid results (index, dist, certified [N], stats), or ``None`` when ``force`` is off and the brute force
    would compute fewer distances."""
    n_samples = len(s.count)
    origin, extent = _boxes(pts, s.sample, s.count)
    quantile, largest, extent_h = torch.cat([_knn_cell_estimate(t, s, k).double(), extent[None]]).tolist()  # sync
    h = quantile * CELL_FACTOR if quantile > 0 else largest if largest > 0 else max(extent_h, 1.0)
    h, n_cells, dim = _cell_plan(h, extent_h, n_samples)
    cell, reach = _cells(pts, origin[s.sample], h, n_cells)  # [N, 3], [N]
    g = _grid(pts, s.sample, cell, dim)
    lo, count = _ranges(g, cell[g.order], s.sample[g.order])  # [N, 9] in sorted order
    per_query = count.sum(dim=1)  # [N]
    total = int(per_query.sum())  # sync
    if not force and total > GRID_WORK_LIMIT * len(pts) * t.n_max:
        return None
    n_rows = s.count[s.sample[g.order]]  # [N] size of each sorted query's sample
    need = (n_rows - 1).clamp(max=k)  # [N]
    reach2 = (reach[g.order] * (1 - MARGIN)).square()  # [N]
    whole = per_query == n_rows  # [N] the candidates are the whole sample: nothing to certify
    index = torch.empty(len(pts), k, dtype=torch.int64, device=pts.device)  # [N, k]
    dist = torch.empty(len(pts), k, dtype=torch.float32, device=pts.device)  # [N, k]
    certified = torch.empty(len(pts), dtype=torch.bool, device=pts.device)  # [N]
    chunks = _chunks(per_query, total)
    for c0, c1, n in chunks:
        i, d, ok = _knn_grid_chunk(g, lo[c0:c1], count[c0:c1], n, c0, k, need[c0:c1], reach2[c0:c1])
        rows = g.order[c0:c1]  # [Qc]
        index[rows], dist[rows], certified[rows] = i, d, ok | whole[c0:c1]
    return index, dist, certified, SearchStats("grid", h, total, len(chunks))


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
    s = _samples(offset.detach().to(pts.device, torch.int64), len(pts))
    cols = pts.t().contiguous()  # [3, M]
    t = _Targets(cols, _table(cols, s.sample, s.start, n_max), n_max)
    grid = None if method == "brute" else _knn_grid(pts, t, s, k, method == "grid")
    if grid is None:
        rows = torch.arange(len(pts), device=pts.device)  # [M]
        stats = SearchStats("brute")
    else:
        index, dist, certified, stats = grid
        rows = torch.nonzero(~certified).squeeze(1)  # [R] sync
        stats = attrs.evolve(stats, fallback_rows=len(rows))
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


def _nearest_grid_chunk(
    g: _Grid, q_cols: torch.Tensor, q_rows: torch.Tensor, lo: torch.Tensor, count: torch.Tensor, total: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries ``q_rows`` [Qc] with ranges ``lo``/``count`` [Qc, 9]: nearest d² [Qc] (+inf: no candidate) and the
    lowest target row at that distance [Qc]."""
    qloc, pos = _expand(lo, count, total)  # [T], [T]
    d2 = _sq_dist(q_cols, q_rows[qloc], g.cols, pos)  # [T]
    best = d2.new_full((len(q_rows),), math.inf).scatter_reduce_(0, qloc, d2, "amin")  # [Qc]
    rows = torch.where(d2 == best[qloc], g.order[pos], len(g.order))  # [T]
    row = rows.new_full((len(q_rows),), len(g.order)).scatter_reduce_(0, qloc, rows, "amin")  # [Qc]
    return best, row


def _nearest_grid(
    q_pts: torch.Tensor, t_pts: torch.Tensor, s: _Samples, qs: _Queries, n_max: int, radius: float, force: bool
) -> tuple[torch.Tensor, torch.Tensor, SearchStats] | None:
    """d² [R0] and target row [R0] of every query entry by the grid, with stats; ``None`` when not worth it."""
    origin, extent = _boxes(t_pts, s.sample, s.count)
    extent_h = float(extent)  # sync
    h, n_cells, dim = _cell_plan(radius * (1 + MARGIN), extent_h, len(s.count))
    if not force and h * 2 >= extent_h:  # every query would see its whole target sample
        return None
    t_cell, _ = _cells(t_pts, origin[s.sample], h, n_cells)  # [Mt, 3]
    g = _grid(t_pts, s.sample, t_cell, dim)
    q_cell, _ = _cells(q_pts[qs.rows], origin[qs.target], h, n_cells)  # [R0, 3]
    walk = torch.argsort(_key(qs.target, q_cell[:, 0], q_cell[:, 1], q_cell[:, 2], dim))  # [R0] near ones together
    lo, count = _ranges(g, q_cell[walk], qs.target[walk])  # [R0, 9]
    per_query = count.sum(dim=1)  # [R0]
    total = int(per_query.sum())  # sync
    if not force and total > GRID_WORK_LIMIT * len(qs.rows) * n_max:
        return None
    d2 = torch.empty(len(qs.rows), dtype=torch.float32, device=q_pts.device)  # [R0]
    row = torch.empty(len(qs.rows), dtype=torch.int64, device=q_pts.device)  # [R0]
    q_cols, q_rows = q_pts.t().contiguous(), qs.rows[walk]  # [3, Mq], [R0]
    chunks = _chunks(per_query, total)
    for c0, c1, n in chunks:
        best, at = _nearest_grid_chunk(g, q_cols, q_rows[c0:c1], lo[c0:c1], count[c0:c1], n)
        d2[walk[c0:c1]], row[walk[c0:c1]] = best, at
    return d2, row, SearchStats("grid", h, total, len(chunks))


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
    s = _samples(target_offset.detach().to(device, torch.int64), len(t_pts))
    n_max = max(b - a for a, b in zip(tb, tb[1:], strict=False))
    grid = None
    if method != "brute" and math.isfinite(radius):
        grid = _nearest_grid(q_pts, t_pts, s, qs, n_max, radius, method == "grid")
    if grid is None:
        cols = t_pts.t().contiguous()  # [3, Mt]
        t = _Targets(cols, _table(cols, s.sample, s.start, n_max), n_max)
        row, d2 = _brute(q_pts.t().contiguous(), qs.rows, t, qs.target, qs.start, qs.count, None, 1)  # [R0, 1]
        row, d2, stats = row[:, 0], d2[:, 0], SearchStats("brute")  # [R0], [R0]
    else:
        d2, row, stats = grid
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
