"""Device neighbour searches (knn_within, nearest_between; the cell grid in ``ops/cell_grid.py``) against a
brute-force cKDTree reference."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree

from pcdag.ops import cell_grid, neighbours
from pcdag.ops.neighbours import knn_within, nearest_between


def make_samples(sizes: list[int], seed: int, dup: float, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenated float32 samples (each with a fraction ``dup`` of exact duplicates) and their offsets."""
    rng = np.random.default_rng(seed)
    parts = []
    for n in sizes:
        pts = rng.uniform(-scale, scale, size=(n, 3))  # [n, 3]
        copies = rng.random(n) < dup
        if n > 1 and copies.any():
            pts[copies] = pts[rng.integers(0, n, size=int(copies.sum()))]
        parts.append(pts)
    coord = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 3), np.float32)
    return torch.from_numpy(coord), torch.cumsum(torch.tensor(sizes, dtype=torch.int64), 0)


samples = st.tuples(
    st.lists(st.integers(0, 40), min_size=1, max_size=4),
    st.integers(0, 2**31 - 1),
    st.sampled_from((0.0, 0.2)),
    st.sampled_from((0.05, 1.0, 30.0)),
)


@settings(max_examples=50, deadline=None)
@given(data=samples, k=st.integers(1, 8), budget=st.sampled_from((1, 7, 1 << 24)))
def test_knn_within_matches_kdtree(data: tuple, k: int, budget: int) -> None:
    sizes = data[0]
    coord, offset = make_samples(*data)
    with mock.patch.object(neighbours, "DISTANCES_PER_CHUNK", budget):  # several chunks per sample too
        index, dist = knn_within(coord, offset, k)
    assert index.shape == (len(coord), k) and index.dtype == torch.int64 and dist.dtype == torch.float32
    pts = coord.numpy().astype(np.float64)
    start = 0
    for n in sizes:
        stop, kk = start + n, min(k, n - 1)
        if n:
            rows = slice(start, stop)
            assert (index[rows, max(kk, 0) :] == -1).all() and torch.isinf(dist[rows, max(kk, 0) :]).all()
        if kk >= 1:
            ref, _ = cKDTree(pts[start:stop]).query(pts[start:stop], k=kk + 1)  # [n, kk + 1], self (or a twin) first
            got_i, got_d = index[start:stop, :kk].numpy(), dist[start:stop, :kk].numpy()
            np.testing.assert_allclose(got_d, ref[:, 1:], rtol=1e-5, atol=1e-6)
            assert ((got_i >= start) & (got_i < stop)).all(), "a neighbour from another sample"
            assert (got_i != np.arange(start, stop)[:, None]).all(), "a point is its own neighbour"
            assert all(len(set(row)) == kk for row in got_i), "a neighbour listed twice"
            actual = np.linalg.norm(pts[got_i] - pts[start:stop, None], axis=2)  # [n, kk]
            np.testing.assert_allclose(got_d, actual, rtol=1e-5, atol=1e-6)
        start = stop


@settings(max_examples=50, deadline=None)
@given(query=samples, target=samples, data=st.data(), budget=st.sampled_from((1, 5, 1 << 24)))
def test_nearest_between_matches_kdtree(query: tuple, target: tuple, data: st.DataObject, budget: int) -> None:
    q, q_off = make_samples(*query)
    t, t_off = make_samples(*target)
    pair = st.tuples(st.integers(0, len(q_off) - 1), st.integers(0, len(t_off) - 1))
    pairs_list = data.draw(st.lists(pair, max_size=5))
    radius = data.draw(st.sampled_from((0.01, 0.3, 5.0, float("inf"))))
    pairs = torch.tensor(pairs_list, dtype=torch.int64).reshape(-1, 2)
    with mock.patch.object(neighbours, "DISTANCES_PER_CHUNK", budget):
        qi, ti, dist = nearest_between(q, q_off, t, t_off, pairs, radius)
    qb, tb = [0, *q_off.tolist()], [0, *t_off.tolist()]
    qn, tn = q.numpy().astype(np.float64), t.numpy().astype(np.float64)
    want_q, want_d, lo, hi = [np.zeros(0, np.int64)], [np.zeros(0)], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for a, b in pairs_list:  # expected: grouped by pair in order, query rows ascending
        if qb[a + 1] == qb[a] or tb[b + 1] == tb[b]:
            continue
        d, _ = cKDTree(tn[tb[b] : tb[b + 1]]).query(qn[qb[a] : qb[a + 1]], k=1)  # [n]
        keep = d < radius
        want_q.append(np.arange(qb[a], qb[a + 1])[keep])
        want_d.append(d[keep])
        lo.append(np.full(int(keep.sum()), tb[b]))
        hi.append(np.full(int(keep.sum()), tb[b + 1]))
    np.testing.assert_array_equal(qi.numpy(), np.concatenate(want_q))
    np.testing.assert_allclose(dist.numpy(), np.concatenate(want_d), rtol=1e-5, atol=1e-6)
    got_t = ti.numpy()
    assert ((got_t >= np.concatenate(lo)) & (got_t < np.concatenate(hi))).all(), "matched outside the paired sample"
    actual = np.linalg.norm(qn[qi.numpy()] - tn[got_t], axis=1)  # [R] the returned target is that near
    np.testing.assert_allclose(dist.numpy(), actual, rtol=1e-5, atol=1e-6)


def test_distances_are_exact_far_from_the_origin() -> None:
    """Room-scale offsets must not cost millimetres (the matrix-product shortcut of cdist would)."""
    base = torch.tensor([[100.0, -80.0, 50.0]])
    steps = torch.tensor([[0.0, 0.0, 0.0], [0.001, 0.0, 0.0], [0.0, 0.003, 0.0], [0.0, 0.0, 0.0064]])
    coord = (base + steps).float()  # [4, 3]
    offset = torch.tensor([4])
    _, dist = knn_within(coord, offset, 1)
    want = np.linalg.norm(coord.double().numpy()[:, None] - coord.double().numpy()[None], axis=2)
    np.fill_diagonal(want, np.inf)
    np.testing.assert_allclose(dist[:, 0].numpy(), want.min(axis=1), rtol=1e-3)
    one, three, pair = torch.tensor([1]), torch.tensor([3]), torch.tensor([[0, 0]])
    qi, _, d = nearest_between(coord[:1], one, coord[1:], three, pair, 0.0011)
    assert qi.tolist() == [0] and abs(float(d[0]) - 0.001) < 2e-5


def test_no_pairs_and_empty_samples_give_empty_results() -> None:
    coord, offset = make_samples([0, 3], 0, 0.0, 1.0)
    qi, ti, d = nearest_between(coord, offset, coord, offset, torch.zeros(0, 2, dtype=torch.int64), 1.0)
    assert qi.shape == ti.shape == d.shape == (0,) and qi.dtype == torch.int64 and d.dtype == torch.float32
    qi, _, _ = nearest_between(coord, offset, coord, offset, torch.tensor([[0, 1], [1, 0]]), 1.0)
    assert len(qi) == 0


def test_bad_input_is_named() -> None:
    coord, offset = make_samples([3, 2], 0, 0.0, 1.0)
    with pytest.raises(ValueError, match="k = 0"):
        knn_within(coord, offset, 0)
    with pytest.raises(ValueError, match="offset ends at 4"):
        knn_within(coord, torch.tensor([3, 4]), 2)
    with pytest.raises(ValueError, match=r"coord must have shape \[M, 3\]"):
        knn_within(coord[:, :2], offset, 2)
    with pytest.raises(ValueError, match="pair \\(0, 2\\) is out of range"):
        nearest_between(coord, offset, coord, offset, torch.tensor([[0, 2]]), 1.0)
    with pytest.raises(ValueError, match="radius"):
        nearest_between(coord, offset, coord, offset, torch.tensor([[0, 1]]), 0.0)


# ---------------------------------------------------------------- the cell grid against the brute force


def cloud(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, 3]`` float64 points: ``uniform`` in a 2 m cube; ``surface``: a floor and three walls grid-sampled at
    0.08 m with 4 mm jitter (a room view); ``blobs``: tight clusters near (100, -80, 120) with exact duplicates."""
    if kind == "uniform":
        return rng.uniform(-1, 1, size=(n, 3))
    if kind == "surface":
        side = max(2, int(np.ceil(np.sqrt(n / 4))))  # four planes of side² points
        u, v = np.meshgrid(np.arange(side) * 0.08, np.arange(side) * 0.08, indexing="ij")
        u, v, zero = u.ravel(), v.ravel(), np.zeros(side * side)
        top = side * 0.08
        planes = [(u, v, zero), (zero, u, v), (u, zero, v), (u, np.full_like(u, top), v)]
        pts = np.concatenate([np.stack(p, axis=1) for p in planes])  # [4 side², 3]
        pts = pts[rng.permutation(len(pts))[:n]] + rng.normal(0, 0.004, size=(n, 3))
        return pts + rng.uniform(-5, 5, size=3)
    centres = np.array([100.0, -80.0, 120.0]) + rng.uniform(-3, 3, size=(max(1, n // 20 + 1), 3))
    pts = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 0.05, size=(n, 3))
    copies = rng.random(n) < 0.3
    if n > 1 and copies.any():
        pts[copies] = pts[rng.integers(0, n, size=int(copies.sum()))]
    return pts


def clouds(kind: str, sizes: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    parts = [cloud(kind, n, rng) for n in sizes]
    coord = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 3), np.float32)
    return torch.from_numpy(coord), torch.cumsum(torch.tensor(sizes, dtype=torch.int64), 0)


sizes = st.lists(st.one_of(st.integers(0, 3), st.integers(4, 400)), min_size=1, max_size=5)
kinds = st.sampled_from(("uniform", "surface", "blobs"))


def check_knn(coord: torch.Tensor, offset: torch.Tensor, index: torch.Tensor, dist: torch.Tensor, k: int) -> None:
    """Equal to the brute force's distances bit for bit; each neighbour is another point of the sample at the
    distance given, listed once (ties may pick different points)."""
    ref_i, ref_d = knn_within(coord, offset, k, method="brute")
    assert torch.equal(dist, ref_d), f"largest difference {(dist - ref_d).abs().nan_to_num().max()}"
    assert torch.equal(index < 0, ref_i < 0)
    bounds = [0, *offset.tolist()]
    sample = np.repeat(np.arange(len(bounds) - 1), np.diff(bounds))  # [M]
    got = index.numpy()
    real = got >= 0
    rows = np.broadcast_to(np.arange(len(coord))[:, None], got.shape)
    assert (sample[got[real]] == sample[rows[real]]).all(), "a neighbour from another sample"
    assert (got[real] != rows[real]).all(), "a point is its own neighbour"
    assert all(len(set(r[r >= 0])) == (r >= 0).sum() for r in got), "a neighbour listed twice"
    pts = coord.double().numpy()
    actual = np.linalg.norm(pts[got[real]] - pts[rows[real]], axis=1)
    np.testing.assert_allclose(dist.numpy()[real], actual, rtol=1e-5, atol=1e-6)
    for start, stop in zip(bounds, bounds[1:], strict=False):  # and the brute force against a k-d tree
        kk = min(k, stop - start - 1)
        if kk >= 1:
            ref, _ = cKDTree(pts[start:stop]).query(pts[start:stop], k=kk + 1)  # [n, kk + 1], self (or a twin) first
            np.testing.assert_allclose(dist[start:stop, :kk].numpy(), ref[:, 1:], rtol=1e-5, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    kind=kinds,
    sizes=sizes,
    seed=st.integers(0, 2**31 - 1),
    k=st.sampled_from((1, 2, 5, 12, 24)),
    budget=st.sampled_from((1, 64, 1 << 24)),
    quantile=st.sampled_from((0.05, 0.9)),
)
def test_knn_grid_equals_brute_force(kind: str, sizes: list[int], seed: int, k: int, budget: int, quantile: float):
    """Small cells (quantile 0.05) send most rows through the certificate's edge and the fallback; a tiny budget
    cuts the grid into many chunks."""
    coord, offset = clouds(kind, sizes, seed)
    with (
        mock.patch.object(neighbours, "DISTANCES_PER_CHUNK", budget),
        mock.patch.object(cell_grid, "CELL_QUANTILE", quantile),
    ):
        index, dist, stats = neighbours.knn_within_stats(coord, offset, k, method="grid")
    assert index.shape == dist.shape == (len(coord), k)
    assert stats.path == ("grid" if max(sizes) >= 2 else "brute")
    if budget == 1 and stats.path == "grid":
        assert stats.chunks > 1
    check_knn(coord, offset, index, dist, k)


def test_knn_isolated_point_falls_back_and_stays_exact() -> None:
    coord, _ = clouds("surface", [500], 3)
    far = coord[:1] + torch.tensor([[40.0, 0.0, 0.0]])  # one point 40 m from its sample's surfaces
    coord, offset = torch.cat([coord, far, coord[:300]]), torch.tensor([501, 801])
    index, dist, stats = neighbours.knn_within_stats(coord, offset, 8, method="grid")
    assert stats.fallback_rows >= 1
    check_knn(coord, offset, index, dist, 8)
    assert index[500].min() >= 0 and float(dist[500, 0]) > 39.0


def test_knn_cell_size_keeps_fallback_rare_and_candidates_few() -> None:
    """On a room-like view at 0.08 m (k = 24, as the Laplacian): under 5 % of the rows fall back to the brute
    force, and the grid computes under a tenth of the brute force's distances."""
    coord, offset = clouds("surface", [3000, 2500], 7)
    index, dist, stats = neighbours.knn_within_stats(coord, offset, 24)
    assert stats.path == "grid"
    assert stats.fallback_rows < 0.05 * len(coord), stats
    assert stats.candidates < 0.1 * len(coord) * 3000, stats
    check_knn(coord, offset, index, dist, 24)


def test_knn_auto_uses_the_brute_force_for_tiny_samples() -> None:
    coord, offset = clouds("uniform", [6, 5, 0, 7], 1)
    index, dist, stats = neighbours.knn_within_stats(coord, offset, 3)
    assert stats.path == "brute"
    check_knn(coord, offset, index, dist, 3)


@settings(max_examples=40, deadline=None)
@given(
    kind=kinds,
    q_sizes=sizes,
    t_sizes=sizes,
    seed=st.integers(0, 2**31 - 1),
    data=st.data(),
    budget=st.sampled_from((1, 64, 1 << 24)),
)
def test_nearest_grid_equals_brute_force(kind, q_sizes, t_sizes, seed, data, budget) -> None:
    """Rows, matches and distances bit for bit (equally near targets: the lowest row on both paths)."""
    q, q_off = clouds(kind, q_sizes, seed)
    t, t_off = clouds(kind, t_sizes, seed + 1)
    if data.draw(st.booleans(), label="targets share query points"):
        t = torch.cat([q[: len(t) // 2], t])[: len(t)]  # exact twins: distance 0 and ties
    pair = st.tuples(st.integers(0, len(q_sizes) - 1), st.integers(0, len(t_sizes) - 1))
    pairs = torch.tensor(data.draw(st.lists(pair, max_size=6), label="pairs"), dtype=torch.int64).reshape(-1, 2)
    radius = data.draw(st.sampled_from((0.02, 0.12, 0.5, 3.0, 1e3, float("inf"))), label="radius")
    with mock.patch.object(neighbours, "DISTANCES_PER_CHUNK", budget):
        qi, ti, d, stats = neighbours.nearest_between_stats(q, q_off, t, t_off, pairs, radius, method="grid")
        ref = nearest_between(q, q_off, t, t_off, pairs, radius, method="brute")
    assert torch.equal(qi, ref[0]) and torch.equal(ti, ref[1]) and torch.equal(d, ref[2])
    qb, tb = [0, *q_off.tolist()], [0, *t_off.tolist()]
    live = any(qb[a + 1] > qb[a] and tb[b + 1] > tb[b] for a, b in pairs.tolist())
    assert stats.path == ("grid" if live and radius < float("inf") else "brute")
    want = []
    for a, b in pairs.tolist():  # every query point of every live pair, in pair order
        if tb[b + 1] > tb[b]:
            dd, _ = cKDTree(t[tb[b] : tb[b + 1]].double().numpy()).query(q[qb[a] : qb[a + 1]].double().numpy())
            want.append(np.arange(qb[a], qb[a + 1])[dd < radius * (1 - 1e-5)])
    kept = qi.numpy()
    for rows in want:  # the clear cases (not within float rounding of the radius) are kept, in order
        assert np.isin(rows, kept).all()


def test_nearest_grid_is_used_at_the_training_radius() -> None:
    q, off = clouds("surface", [2000, 1500], 5)
    t = q + 0.01
    pairs = torch.tensor([[0, 0], [1, 1], [0, 0], [1, 0]])
    qi, ti, d, stats = neighbours.nearest_between_stats(q, off, t, off, pairs, 0.12)
    assert stats.path == "grid" and stats.candidates < 0.1 * 7000 * 2000
    ref = nearest_between(q, off, t, off, pairs, 0.12, method="brute")
    assert torch.equal(qi, ref[0]) and torch.equal(ti, ref[1]) and torch.equal(d, ref[2])
    assert len(qi) == 2000 + 1500 + 2000  # every point of the matching views (pair [1, 0] is far apart)


def test_non_finite_points_and_bad_method_are_named() -> None:
    coord, offset = make_samples([3, 2], 0, 0.0, 1.0)
    coord[1, 2] = float("nan")
    with pytest.raises(ValueError, match="knn_within: coord holds NaN"):
        knn_within(coord, offset, 2)
    with pytest.raises(ValueError, match="nearest_between: query or target holds NaN"):
        nearest_between(coord, offset, coord, offset, torch.tensor([[0, 1]]), 1.0)
    with pytest.raises(ValueError, match="method = 'fast'"):
        knn_within(coord, offset, 2, method="fast")


def count_syncs(fn) -> int:
    """Device-to-host reads (the host syncs on a GPU) made by ``fn()``: ``tolist``, ``item``, ``int``/``float``/
    ``bool`` of a tensor and ``torch.nonzero``, counted on the CPU."""
    calls = [0]

    def counted(original):
        def wrapper(*args, **kwargs):
            calls[0] += 1
            return original(*args, **kwargs)

        return wrapper

    names = ("tolist", "item", "__int__", "__float__", "__bool__", "__index__")
    patches = [mock.patch.object(torch.Tensor, name, counted(getattr(torch.Tensor, name))) for name in names]
    patches.append(mock.patch.object(torch, "nonzero", counted(torch.nonzero)))
    for p in patches:
        p.start()
    try:
        fn()
    finally:
        for p in patches:
            p.stop()
    return calls[0]


@pytest.mark.parametrize("n_samples", [2, 12])
def test_host_syncs_per_call_do_not_grow_with_samples(n_samples: int) -> None:
    """At most 5 host reads per call (offsets, cell side, candidate total, chunk bounds, fallback / radius filter),
    with several samples, pairs and chunks."""
    coord, offset = clouds("surface", [400] * n_samples, 11)
    views = torch.arange(n_samples)
    pairs = torch.cat([torch.stack([views, views], 1), torch.stack([views, views.roll(1)], 1)])  # [2B, 2]
    out = {}
    with mock.patch.object(neighbours, "DISTANCES_PER_CHUNK", 1 << 14):  # several chunks
        knn = count_syncs(lambda: out.update(knn=neighbours.knn_within_stats(coord, offset, 24, method="grid")))
        near = count_syncs(
            lambda: out.update(near=neighbours.nearest_between_stats(coord, offset, coord + 0.01, offset, pairs, 0.12))
        )
    assert out["knn"][-1].chunks > 1 and out["near"][-1].chunks > 1
    assert knn <= 5 and near <= 5, (knn, near)
