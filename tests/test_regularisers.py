"""LAM3C regularisers: Laplacian smoothness (both semantics) and noise consistency, against brute-force references."""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree

from pcdag.graphs.batch import Encoded
from pcdag.graphs.device import StepContext
from pcdag.graphs.params import ParamError
from pcdag.nodes.heads.laplacian import LaplacianSmoothness, huber, laplacian_smoothness
from pcdag.nodes.heads.noise_consistency import NoiseConsistency
from pcdag.ops import edge_distance
from pcdag.ops.edge_distance import EdgeSquaredDistance


def ctx(step: int = 0, total: int = 101) -> StepContext:
    return StepContext(
        step=step, total_steps=total, generator=torch.Generator().manual_seed(0), device=torch.device("cpu")
    )


def cloud(sizes: list[int], seed: int, scale: float, channels: int, feat_scale: float) -> tuple:
    """Views of uniform points with Gaussian features: (feat, coord, offset). Some points are exact duplicates
    of another point of their view, with its features too (so that which twin a kNN tie picks cannot matter)."""
    rng = np.random.default_rng(seed)
    coord = rng.uniform(0.0, scale, size=(sum(sizes), 3))  # [M, 3]
    feat = rng.normal(0.0, feat_scale, size=(len(coord), channels))  # [M, C]
    twins = rng.random(len(coord)) < 0.1
    start = 0
    for n in sizes:  # duplicates within each view
        rows = np.arange(start, start + n)[twins[start : start + n]]
        if n > 1 and len(rows):
            original = rng.integers(start, start + n, size=len(rows))
            coord[rows], feat[rows] = coord[original], feat[original]
        start += n
    offset = torch.cumsum(torch.tensor(sizes, dtype=torch.int64), 0)
    return torch.tensor(feat, dtype=torch.float32), torch.tensor(coord, dtype=torch.float32), offset


def laplacian_reference(feat, coord, sizes, k, delta, cutoff, sigma, semantics) -> float:
    """Brute force in float64: cKDTree neighbours, Python loops over points and edges."""
    f, p = feat.double().numpy(), coord.double().numpy()
    neighbours: list[list[tuple[int, float]]] = []
    farthest = []
    start = 0
    for n in sizes:
        kk = min(k, n - 1)
        if kk < 1:
            neighbours += [[] for _ in range(n)]
        else:
            d, idx = cKDTree(p[start : start + n]).query(p[start : start + n], k=kk + 1)
            for a in range(n):
                found = [(start + int(j), float(dd)) for j, dd in zip(idx[a], d[a], strict=True) if j != a][:kk]
                neighbours.append(found)
                farthest.append(found[-1][1])
        start += n
    scale = sorted(farthest)[(len(farthest) - 1) // 2] if farthest else math.nan  # lower median, as torch's
    s = max(scale if sigma == "adaptive" else sigma, 1e-10)
    limit = cutoff if semantics == "paper" else cutoff**2
    per_view: dict[int, list[float]] = {}
    view_of = np.repeat(np.arange(len(sizes)), sizes)
    for i, found in enumerate(neighbours):
        edges = [(j, d) for j, d in found if 1e-10 < d < limit]
        if not edges:
            continue
        if semantics == "paper":
            log_w = [-(d**2) / s**2 for _, d in edges]
        else:
            log_w = [-d / (s if sigma == "adaptive" else s**2) for _, d in edges]
        num = den = 0.0
        for (j, _), lw in zip(edges, log_w, strict=True):
            w = math.exp(lw - max(log_w))  # Σ w ρ / Σ w with every w scaled alike: no 0 / 0 when σ is tiny
            r = float(np.linalg.norm(f[i] - f[j]))
            rho = 0.5 * r * r if r <= delta else delta * (r - delta / 2)
            num, den = num + w * rho, den + w
        per_view.setdefault(int(view_of[i]), []).append(num / den)
    return float(np.mean([np.mean(v) for v in per_view.values()])) if per_view else 0.0


views = st.lists(st.integers(0, 30), min_size=1, max_size=3)


@settings(max_examples=40, deadline=None)
@given(
    sizes=views,
    seed=st.integers(0, 2**31 - 1),
    scale=st.sampled_from((0.1, 0.5, 2.0)),
    feat_scale=st.sampled_from((0.05, 1.0)),
    k=st.integers(1, 8),
    delta=st.sampled_from((0.05, 0.5, 1.0)),
    cutoff=st.sampled_from((0.08, 0.3, 1.0)),
    sigma=st.sampled_from(("adaptive", 0.05, 0.3)),
    semantics=st.sampled_from(("paper", "reference")),
)
def test_laplacian_matches_brute_force(sizes, seed, scale, feat_scale, k, delta, cutoff, sigma, semantics) -> None:
    feat, coord, offset = cloud(sizes, seed, scale, 4, feat_scale)
    got, stats = laplacian_smoothness(
        feat, coord, offset, k=k, delta=delta, cutoff=cutoff, sigma=sigma, semantics=semantics
    )
    want = laplacian_reference(feat, coord, sizes, k, delta, cutoff, sigma, semantics)
    assert got.dtype == torch.float32 and got.ndim == 0
    assert float(got) == pytest.approx(want, rel=1e-4, abs=1e-6)
    assert 0.0 <= float(stats["edge_points"]) <= 1.0


@settings(max_examples=30, deadline=None)
@given(sizes=views, seed=st.integers(0, 2**31 - 1), semantics=st.sampled_from(("paper", "reference")))
def test_laplacian_is_zero_for_constant_features(sizes, seed, semantics) -> None:
    _, coord, offset = cloud(sizes, seed, 0.3, 3, 1.0)
    feat = torch.tensor([[0.3, -2.0, 7.0]]).expand(len(coord), 3).contiguous()
    loss, _ = laplacian_smoothness(feat, coord, offset, k=8, cutoff=0.3, semantics=semantics)
    assert float(loss) == 0.0


@settings(max_examples=30, deadline=None)
@given(sizes=views, seed=st.integers(0, 2**31 - 1), shift=st.floats(-5.0, 5.0))
def test_laplacian_ignores_a_common_translation_of_features(sizes, seed, shift) -> None:
    feat, coord, offset = cloud(sizes, seed, 0.3, 4, 1.0)
    a, _ = laplacian_smoothness(feat, coord, offset, k=6, cutoff=0.3)
    b, _ = laplacian_smoothness(feat + shift, coord, offset, k=6, cutoff=0.3)
    assert float(b) == pytest.approx(float(a), rel=1e-4, abs=1e-5)


def test_semantics_differ_as_the_spec_says() -> None:
    # Cutoff: an edge at d = 0.05 m is kept by the paper (0.05 < 0.08), dropped by the reference (0.05 > 0.0064).
    coord = torch.tensor([[0.0, 0.0, 0.0], [0.05, 0.0, 0.0]])
    feat = torch.tensor([[0.0], [0.2]])
    offset = torch.tensor([2])
    paper, ps = laplacian_smoothness(feat, coord, offset, k=1, cutoff=0.08, semantics="paper")
    ref, rs = laplacian_smoothness(feat, coord, offset, k=1, cutoff=0.08, semantics="reference")
    assert float(ps["edges"]) == 2 and float(paper) == pytest.approx(0.5 * 0.2**2)
    assert float(rs["edges"]) == 0 and float(ref) == 0.0
    # Weights: three points on a line at 0, 1, 3 mm; k = 2; median 2nd-neighbour distance m = 3 mm.
    coord = torch.tensor([[0.0, 0.0, 0.0], [0.001, 0.0, 0.0], [0.003, 0.0, 0.0]])
    feat = torch.tensor([[0.0], [0.1], [0.3]])
    offset = torch.tensor([3])
    m = 0.003
    d = {(0, 1): 0.001, (0, 2): 0.003, (1, 2): 0.002}
    rho = {e: 0.5 * (float(feat[e[0]]) - float(feat[e[1]])) ** 2 for e in d}

    def expected(kernel) -> float:
        per_point = []
        for i in range(3):
            edges = [e for e in d if i in e]
            w = [kernel(d[e]) for e in edges]
            per_point.append(sum(wi * rho[e] for wi, e in zip(w, edges, strict=True)) / sum(w))
        return sum(per_point) / 3

    paper, ps = laplacian_smoothness(feat, coord, offset, k=2, cutoff=0.08, semantics="paper")
    ref, rs = laplacian_smoothness(feat, coord, offset, k=2, cutoff=0.08, semantics="reference")
    assert float(ps["sigma"]) == pytest.approx(m) and float(rs["sigma"]) == pytest.approx(m)
    assert float(paper) == pytest.approx(expected(lambda x: math.exp(-(x**2) / m**2)), rel=1e-5)
    assert float(ref) == pytest.approx(expected(lambda x: math.exp(-x / m)), rel=1e-5)
    assert abs(float(paper) - float(ref)) > 1e-4 * float(paper)


def test_huber_switches_branch_at_delta() -> None:
    delta = 0.5
    r = torch.tensor([0.0, 0.25, 0.5, 0.5 + 1e-4, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    rho = huber(r**2, delta)
    want = [0.0, 0.5 * 0.25**2, 0.125, delta * (0.5 + 1e-4 - 0.25), delta * 0.75, delta * 1.75]
    np.testing.assert_allclose(rho.detach().numpy(), want, rtol=1e-12)
    (grad,) = torch.autograd.grad(rho.sum(), r)
    np.testing.assert_allclose(grad.numpy(), [0.0, 0.25, 0.5, delta, delta, delta], rtol=1e-6, atol=1e-12)
    # and inside the loss: two points, one edge each way, r = 1 > delta
    coord, offset = torch.tensor([[0.0, 0.0, 0.0], [0.01, 0.0, 0.0]]), torch.tensor([2])
    feat = torch.tensor([[0.0], [1.0]])
    loss, _ = laplacian_smoothness(feat, coord, offset, k=1, delta=delta)
    assert float(loss) == pytest.approx(delta * (1.0 - delta / 2))


def test_gradient_reaches_both_ends_of_an_edge() -> None:
    # k = 1 on a line at 0, 10, 25 mm: edges 0->1, 1->0, 2->1. Points 0 and 1 share a feature, so only the
    # edge 2->1 has a gradient: point 1 gets it only as the far end of that edge.
    coord = torch.tensor([[0.0, 0.0, 0.0], [0.01, 0.0, 0.0], [0.025, 0.0, 0.0]])
    feat = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.8, 0.1]], requires_grad=True)  # r = 0.22 < delta
    loss, _ = laplacian_smoothness(feat, coord, torch.tensor([3]), k=1)
    loss.backward()
    g = feat.grad
    assert torch.count_nonzero(g[0]) == 0
    assert torch.count_nonzero(g[1]) == 2 and torch.allclose(g[1], -g[2])
    np.testing.assert_allclose(g[2].numpy(), (feat[2] - feat[1]).detach().numpy() / 3, rtol=1e-6)


def test_edge_distance_gradient_matches_autograd() -> None:
    torch.manual_seed(0)
    feat = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    src, dst = torch.tensor([0, 1, 2, 6, 6, 3]), torch.tensor([1, 0, 5, 2, 4, 3])
    with mock.patch.object(edge_distance, "ENTRIES_PER_CHUNK", 8):  # several edge chunks
        assert torch.autograd.gradcheck(lambda f: EdgeSquaredDistance.apply(f, src, dst), (feat,))
        sq = EdgeSquaredDistance.apply(feat, src, dst)
    np.testing.assert_allclose(sq.detach().numpy(), ((feat[src] - feat[dst]) ** 2).sum(1).detach().numpy())


def test_no_edge_gives_zero_connected_to_the_graph() -> None:
    coord = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    feat = torch.randn(3, 4, requires_grad=True)
    loss, stats = laplacian_smoothness(feat, coord, torch.tensor([2, 3]), k=2)
    assert float(loss) == 0.0 and float(stats["edges"]) == 0 and loss.requires_grad
    loss.backward()
    assert torch.count_nonzero(feat.grad) == 0


def encoded(feat, coord, offset, origin=None) -> Encoded:
    return Encoded(feat=feat, coord=coord, origin_coord=coord if origin is None else origin, offset=offset, level=2)


def test_laplacian_node_weight_schedule_and_logs() -> None:
    node = LaplacianSmoothness()
    feat, coord, offset = cloud([20, 15], 3, 0.3, 8, 1.0)
    for step, want in ((0, 2.0e-4), (10, 3.0e-3), (100, 1.5e-3), (55, (3.0e-3 + 1.5e-3) / 2)):
        c = ctx(step)
        out = node.forward(c, None, features=encoded(feat.to(torch.bfloat16), coord, offset))["loss"]
        assert out.weight == pytest.approx(want) and out.value.dtype == torch.float32
        assert {"edges", "edge_points", "sigma"} <= set(out.terms)  # the trainer logs them as NODE/term
    with pytest.raises(ParamError, match="sigma"):
        LaplacianSmoothness(sigma="median")
    with pytest.raises(ValueError, match="coord"):
        node.forward(ctx(), None, features=encoded(feat, coord[:-1], offset))


# ------------------------------------------------------------------------------------------ noise consistency


def test_noise_consistency_is_zero_for_identical_features() -> None:
    feat, coord, offset = cloud([20, 12], 1, 0.5, 6, 1.0)
    out = NoiseConsistency().forward(
        ctx(), None, student=encoded(feat, coord, offset), teacher=encoded(feat, coord, offset)
    )
    assert float(out["loss"].value) == pytest.approx(0.0, abs=1e-6) and out["loss"].weight == pytest.approx(0.05)


def test_noise_consistency_hand_example_is_two_minus_two_cos() -> None:
    coord = torch.tensor([[0.0, 0.0, 0.0]])
    s = torch.tensor([[2.0, 0.0]], requires_grad=True)
    t = torch.tensor([[3.0, 3.0]], requires_grad=True)
    out = NoiseConsistency().forward(
        ctx(), None, student=encoded(s, coord, torch.tensor([1])), teacher=encoded(t, coord + 0.1, torch.tensor([1]))
    )["loss"]
    assert float(out.value) == pytest.approx(2 - 2 / math.sqrt(2), rel=1e-6)
    out.value.backward()
    assert s.grad is not None and torch.count_nonzero(s.grad) > 0 and t.grad is None  # the teacher gets no gradient


def test_noise_consistency_radius_semantics_and_view_means() -> None:
    # View 0: two student points, one 0.2 m from the teacher point (kept by paper 0.32, dropped by reference
    # 0.1024), one 0.05 m (kept by both). View 1: one pair. Mean per view first, then over views.
    s_coord = torch.tensor([[0.2, 0.0, 0.0], [0.0, 0.05, 0.0], [5.0, 5.0, 5.0]])
    t_coord = torch.tensor([[0.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    s_feat = torch.tensor([[0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    t_feat = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    student = encoded(s_feat, s_coord, torch.tensor([2, 3]))
    teacher = encoded(t_feat, t_coord, torch.tensor([1, 2]))
    per = [2.0, 2 - 2 / math.sqrt(2), 4.0]  # 2 - 2 cos for each student point
    paper = NoiseConsistency().forward(ctx(), None, student=student, teacher=teacher)["loss"]
    ref = NoiseConsistency(semantics="reference").forward(ctx(), None, student=student, teacher=teacher)["loss"]
    assert float(paper.value) == pytest.approx(((per[0] + per[1]) / 2 + per[2]) / 2, rel=1e-6)
    assert float(ref.value) == pytest.approx((per[1] + per[2]) / 2, rel=1e-6)
    assert float(paper.terms["pairs"]) == 3 and float(ref.terms["pairs"]) == 2


@settings(max_examples=30, deadline=None)
@given(sizes=views, seed=st.integers(0, 2**31 - 1), radius=st.sampled_from((0.05, 0.32)))
def test_noise_consistency_matches_brute_force(sizes, seed, radius) -> None:
    feat, coord, offset = cloud(sizes, seed, 0.5, 5, 1.0)
    rng = np.random.default_rng(seed + 1)
    t_coord = coord + torch.tensor(rng.normal(0.0, 0.05, size=coord.shape), dtype=torch.float32)
    t_feat = feat + torch.tensor(rng.normal(0.0, 0.5, size=feat.shape), dtype=torch.float32)
    out = NoiseConsistency(radius=radius).forward(
        ctx(), None, student=encoded(feat, coord, offset), teacher=encoded(t_feat, t_coord, offset)
    )["loss"]
    means, start = [], 0
    for n in sizes:
        if n:
            d, j = cKDTree(t_coord[start : start + n].double().numpy()).query(coord[start : start + n].double().numpy())
            s = feat[start : start + n].double().numpy()
            t = t_feat[start : start + n].double().numpy()[j]
            s, t = s / np.linalg.norm(s, axis=1, keepdims=True), t / np.linalg.norm(t, axis=1, keepdims=True)
            per = ((s - t) ** 2).sum(axis=1)[d < radius]
            if len(per):
                means.append(per.mean())
        start += n
    assert float(out.value) == pytest.approx(float(np.mean(means)) if means else 0.0, rel=1e-4, abs=1e-6)


def test_noise_consistency_refuses_mismatched_views() -> None:
    feat, coord, offset = cloud([5, 5], 0, 0.5, 3, 1.0)
    with pytest.raises(ValueError, match="student has 2 views, teacher 1"):
        NoiseConsistency().forward(
            ctx(), None, student=encoded(feat, coord, offset), teacher=encoded(feat[:5], coord[:5], offset[:1])
        )
    no_origin = Encoded(feat=feat, coord=coord, origin_coord=None, offset=offset)
    with pytest.raises(ValueError, match="teacher features carry no origin_coord"):
        NoiseConsistency().forward(ctx(), None, student=encoded(feat, coord, offset), teacher=no_origin)
