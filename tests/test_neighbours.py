"""Device neighbour searches (knn_within, nearest_between) against a brute-force cKDTree reference."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree

from pcdag.nodes.heads import neighbours
from pcdag.nodes.heads.neighbours import knn_within, nearest_between


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
