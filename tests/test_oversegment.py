"""Felzenszwalb–Huttenlocher oversegmentation (``pcdag/ops/felzenszwalb.py``) and the ``Oversegment`` node: against
a slow, obviously-correct reference, permutation invariance, separation, monotonicity in ``k_thresh``, the size
floor, and real ScanNet scans (segment count and purity against the semantic labels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcdag.compiler import validate
from pcdag.graphs import PointCloud
from pcdag.graphs.graph import Graph
from pcdag.nodes.geometry.oversegment import Oversegment
from pcdag.ops import felzenszwalb as fz
from pcdag.ops.normals import estimate_normals, orient_toward
from pcdag.testing.strategies import point_clouds

RNG = np.random.default_rng(0)

# ------------------------------------------------------------------ the slow reference


def reference_segments(n: int, edges: list[tuple[int, int, float]], k: float, min_points: int) -> set[frozenset]:
    """Felzenszwalb–Huttenlocher with explicit component sets: edges sorted by weight (ties in the given order), a
    merge when ``w <= min(Int(C1) + k/|C1|, Int(C2) + k/|C2|)``, then small components merged in the same order."""
    comps = [{i} for i in range(n)]
    internal = [0.0] * n  # Int(C): the largest weight merged into component i

    def owner(x: int) -> int:
        return next(i for i, c in enumerate(comps) if x in c)

    def join(a: int, b: int, w: float) -> None:
        comps[a] |= comps[b]
        internal[a] = max(internal[a], internal[b], w)
        del comps[b], internal[b]

    ordered = sorted(edges, key=lambda e: e[2])  # stable: ties keep the given order
    for x, y, w in ordered:
        a, b = owner(x), owner(y)
        if a != b and w <= internal[a] + k / len(comps[a]) and w <= internal[b] + k / len(comps[b]):
            join(a, b, w)
    for x, y, _ in ordered:
        a, b = owner(x), owner(y)
        if a != b and (len(comps[a]) < min_points or len(comps[b]) < min_points):
            join(a, b, 0.0)
    return {frozenset(c) for c in comps}


def partition(labels: np.ndarray) -> set[frozenset]:
    return {frozenset(np.flatnonzero(labels == s).tolist()) for s in np.unique(labels)}


def reference_weights(coord: np.ndarray, normal: np.ndarray, pairs: set[tuple[int, int]]) -> list[tuple]:
    """ScanNet's weight of each pair, in a loop: 1 - n_i.n_j, squared when the edge is convex (symmetric test)."""
    out = []
    for i, j in sorted(pairs):
        ni, nj = normal[i].astype(np.float64), normal[j].astype(np.float64)
        w = max(0.0, 1.0 - float(ni @ nj))
        if float((ni - nj) @ (coord[i].astype(np.float64) - coord[j])) > 0:  # convex: squared
            w = w * w
        out.append((i, j, w))
    return out


def reference_cloud_edges(coord: np.ndarray, normal: np.ndarray, k: int) -> list[tuple[int, int, float]]:
    """All pairs by brute force: each point's k nearest others, undirected, weighted as ScanNet (symmetric)."""
    n, edges = len(coord), set()
    for i in range(n):
        dist = [(float(np.sum((coord[i].astype(np.float64) - coord[j]) ** 2)), j) for j in range(n) if j != i]
        edges |= {(min(i, j), max(i, j)) for _, j in sorted(dist)[:k]}
    return reference_weights(coord, normal, edges)


# ------------------------------------------------------------------ the kernel against the reference

WEIGHTS = st.one_of(st.sampled_from([0.0, 0.005, 0.01, 0.02, 0.5]), st.floats(0.0, 2.0))  # ties on purpose


@st.composite
def edge_lists(draw: st.DrawFn, connected: bool = False):
    n = draw(st.integers(1, 30))
    pairs = st.tuples(st.integers(0, n - 1), st.integers(0, n - 1), WEIGHTS)
    edges = draw(st.lists(pairs, max_size=90))
    if connected:  # a random spanning tree first, so the graph is connected
        order = draw(st.permutations(range(n)))
        edges += [(order[i], order[draw(st.integers(0, i - 1))], draw(WEIGHTS)) for i in range(1, n)]
        edges = draw(st.permutations(edges))
    return n, edges


def _run(n: int, edges: list, k: float, min_points: int) -> np.ndarray:
    u, v, w = (np.array([e[i] for e in edges], dtype=d) for i, d in enumerate((np.int64, np.int64, np.float64)))
    return fz.segment_graph(n, u, v, w, k, min_points)


@settings(max_examples=150, deadline=None)
@given(graph=edge_lists(), k=st.sampled_from([0.0, 0.01, 0.1, 1.0, 5.0]), min_points=st.integers(1, 8))
def test_segment_graph_matches_the_reference(graph, k: float, min_points: int) -> None:
    n, edges = graph
    labels = _run(n, edges, k, min_points)
    assert partition(labels) == reference_segments(n, edges, k, min_points)
    first = [int(np.flatnonzero(labels == s)[0]) for s in range(labels.max() + 1)]
    assert first == sorted(first)  # ids 0..S-1 ordered by each segment's smallest vertex


@settings(max_examples=100, deadline=None)
@given(graph=edge_lists(connected=True), k=st.sampled_from([0.0, 0.01, 1.0]), min_points=st.integers(1, 40))
def test_every_segment_reaches_min_points_on_a_connected_graph(graph, k: float, min_points: int) -> None:
    n, edges = graph
    sizes = np.bincount(_run(n, edges, k, min_points))
    assert sizes.min() >= min(min_points, n)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 40), k=st.integers(1, 8), seed=st.integers(0, 2**32 - 1), flat=st.booleans())
def test_oversegment_matches_the_reference_on_small_clouds(n: int, k: int, seed: int, flat: bool) -> None:
    rng = np.random.default_rng(seed)
    coord = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
    normal = rng.normal(size=(n, 3)) + (np.array([0.0, 0.0, 8.0]) if flat else 0.0)  # near-parallel or random
    normal = (normal / np.linalg.norm(normal, axis=1, keepdims=True)).astype(np.float32)
    for k_thresh, min_points in ((0.01, 3), (0.5, 1), (0.002, 20)):
        got = fz.oversegment(coord, normal, k=k, k_thresh=k_thresh, min_points=min_points)
        want = reference_segments(n, reference_cloud_edges(coord, normal, k), k_thresh, min_points)
        assert partition(got) == want


def test_chunked_passes_give_the_same_superpoints(monkeypatch) -> None:
    coord = RNG.uniform(0, 1, (600, 3)).astype(np.float32)
    normal = RNG.normal(size=(600, 3)) + np.array([0.0, 0.0, 3.0])
    normal = (normal / np.linalg.norm(normal, axis=1, keepdims=True)).astype(np.float32)
    whole = fz.oversegment(coord, normal, k_thresh=0.05, min_points=10)
    monkeypatch.setattr(fz, "ROWS_PER_CHUNK", 7)
    monkeypatch.setattr(fz, "EDGES_PER_CHUNK", 13)
    assert np.array_equal(fz.oversegment(coord, normal, k_thresh=0.05, min_points=10), whole)
    assert 1 < whole.max() + 1 < 600  # the example merges some points and not all


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 30), n_faces=st.integers(0, 40), seed=st.integers(0, 2**32 - 1))
def test_oversegment_on_mesh_faces_matches_the_reference_and_ignores_point_order(n, n_faces, seed) -> None:
    rng = np.random.default_rng(seed)
    coord = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
    normal = rng.normal(size=(n, 3)) + np.array([0.0, 0.0, 4.0])
    normal = (normal / np.linalg.norm(normal, axis=1, keepdims=True)).astype(np.float32)
    faces = np.array([rng.choice(n, 3, replace=False) for _ in range(n_faces)], dtype=np.int64).reshape(-1, 3)
    got = fz.oversegment(coord, normal, faces=faces, k_thresh=0.05, min_points=3)
    sides = {(min(a, b), max(a, b)) for f in faces.tolist() for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0]))}
    assert partition(got) == reference_segments(n, reference_weights(coord, normal, sides), 0.05, 3)
    perm = rng.permutation(n)
    where = np.empty(n, dtype=np.int64)
    where[perm] = np.arange(n)  # old index -> new index
    moved = fz.oversegment(coord[perm], normal[perm], faces=where[faces], k_thresh=0.05, min_points=3)
    assert np.array_equal(moved, got[perm])


def test_mesh_edges_are_the_sides_of_the_faces() -> None:
    u, v = fz.mesh_edges(np.array([[0, 1, 2], [2, 1, 3], [3, 3, 1]]), 4)
    assert sorted(zip(u.tolist(), v.tolist(), strict=True)) == [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)]
    with pytest.raises(ValueError, match="lie in"):
        fz.mesh_edges(np.array([[0, 1, 4]]), 4)


# ------------------------------------------------------------------ invariances and separation


@settings(max_examples=60, deadline=None)
@given(cloud=point_clouds(min_points=1, max_points=120, fields=("normal", "color")), seed=st.integers(0, 2**32 - 1))
def test_permuting_the_points_permutes_the_superpoints(cloud: PointCloud, seed: int) -> None:
    perm = np.random.default_rng(seed).permutation(len(cloud))
    coord, normal, color = cloud["coord"], cloud["normal"], cloud["color"]
    for params in ({"k_thresh": 0.05, "min_points": 4}, {"k": 3, "color_weight": 0.5}):
        base = fz.oversegment(coord, normal, color=color, **params)
        shuffled = fz.oversegment(coord[perm], normal[perm], color=color[perm], **params)
        assert np.array_equal(shuffled, base[perm])  # same ids, not only the same partition


@settings(max_examples=40, deadline=None)
@given(sizes=st.tuples(st.integers(10, 60), st.integers(10, 60)), seed=st.integers(0, 2**32 - 1))
def test_two_far_apart_blobs_are_never_joined(sizes: tuple[int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 0.1, (sizes[0], 3))
    b = rng.normal(0.0, 0.1, (sizes[1], 3)) + np.array([100.0, 0.0, 0.0])
    coord = np.concatenate([a, b]).astype(np.float32)
    normal = np.tile(np.float32([0, 0, 1]), (len(coord), 1))  # one normal: everything within a blob merges
    labels = fz.oversegment(coord, normal, k=8, k_thresh=100.0, min_points=500)
    assert set(labels[: sizes[0]]).isdisjoint(labels[sizes[0] :])
    assert len(np.unique(labels)) == 2


# ------------------------------------------------------------------ real ScanNet scans

SCAN = "train/scene0000_00"


@pytest.fixture(scope="module")
def scan(shared_data: Path) -> dict[str, np.ndarray]:
    """A 50k-point scannet-mini scan with normals from the project's normals op (k 32, toward the centroid)."""
    root = shared_data / "scannet-mini" / SCAN
    coord = np.load(root / "coord.npy")
    normal = orient_toward(estimate_normals(coord, 32), coord, coord.astype(np.float64).mean(axis=0))
    return {
        "coord": coord,
        "normal": normal,
        "color": np.load(root / "color.npy"),
        "label": np.load(root / "segment20.npy"),
    }


def purity(superpoint: np.ndarray, label: np.ndarray) -> float:
    """Share of labelled points whose segment's majority class is their own (point-weighted)."""
    keep = label >= 0
    seg, cls = superpoint[keep], label[keep].astype(np.int64)
    counts = np.zeros((seg.max() + 1, cls.max() + 1), dtype=np.int64)
    np.add.at(counts, (seg, cls), 1)
    return float(counts.max(axis=1).sum() / keep.sum())


def test_a_scannet_scan_gives_plausible_mostly_single_class_segments(scan) -> None:
    # measured on scene0000_00 (defaults k 8, k_thresh 0.01, min_points 20): 516 segments, median 56 points,
    # purity 0.894 against segment20; one segment per scene would score ~0.3
    out = Oversegment().apply(PointCloud({"coord": scan["coord"], "normal": scan["normal"]}, {"scene": SCAN}), RNG)
    superpoint = out["superpoint"]
    sizes = np.bincount(superpoint)
    assert 350 <= len(sizes) <= 750 and sizes.min() >= 20
    assert out.meta["report"]["Oversegment"] == {"segments": len(sizes), "median_points": float(np.median(sizes))}
    assert purity(superpoint, scan["label"]) >= 0.85
    # colour (measured: 693 segments, purity 0.923 at color_weight 0.5) splits more and does not mix classes more
    coloured = Oversegment(color_weight=0.5).apply(
        PointCloud({"coord": scan["coord"], "normal": scan["normal"], "color": scan["color"]}), RNG
    )["superpoint"]
    assert coloured.max() > superpoint.max() and purity(coloured, scan["label"]) >= 0.85


def test_a_larger_k_thresh_gives_fewer_segments_on_a_scan(scan) -> None:
    counts = [
        len(np.unique(fz.oversegment(scan["coord"], scan["normal"], k_thresh=t))) for t in (0.002, 0.01, 0.05, 0.5)
    ]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1], counts


# ------------------------------------------------------------------ the node


def test_node_refusals_name_the_node_and_the_parameter() -> None:
    coord = RNG.uniform(0, 1, (30, 3)).astype(np.float32)
    normal = np.tile(np.float32([0, 0, 1]), (30, 1))
    with pytest.raises(Exception, match=r"Oversegment.*color_weight"):
        Oversegment(color_weight=1.0).apply(PointCloud({"coord": coord, "normal": normal}), RNG)
    float_color = {"coord": coord, "normal": normal, "color": np.zeros((30, 3), np.float32)}
    with pytest.raises(Exception, match=r"Oversegment.*uint8"):
        Oversegment(color_weight=1.0).apply(PointCloud(float_color), RNG)
    with pytest.raises(Exception, match=r"k_thresh"):
        Oversegment(k_thresh=0.0)


def test_a_graph_without_normals_names_the_node_that_adds_them() -> None:
    g = Graph("g")
    store = g.add("store", "Store", params={"path": "stores/x", "fields": ["color"]})
    g.add("superpoints", "Oversegment", cloud=store)
    (p,) = [p for p in validate(g) if p.code == "missing-field"]
    assert p.node == "superpoints" and "'normal'" in p.message and "EstimateNormals" in p.fix
