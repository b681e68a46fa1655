"""TwoViewGenerator and its overlap: pairs within the radius, the same physical points, dense segment ids, collation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcdag.graphs import registry
from pcdag.graphs.batch import collate_views
from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.nodes.views.parts.overlap import find_overlap


def scene(seed: int, n: int, segments: int) -> PointCloud:
    """A random room-sized cloud on a 2 cm grid (distinct points) with ``segments`` superpoints, some -1."""
    rng = np.random.default_rng(seed)
    cells = rng.choice(60 * 60 * 20, n, replace=False)
    coord = np.stack(np.unravel_index(cells, (60, 60, 20)), 1).astype(np.float32) * 0.02  # [n, 3]
    superpoint = rng.integers(-1, segments, n) if segments > 1 else np.zeros(n, dtype=np.int64)
    normal = rng.normal(size=(n, 3)).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    color = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    return PointCloud({"coord": coord, "color": color, "normal": normal, "superpoint": superpoint}, {"scene": "s"})


def generator(**params):
    return registry.get("TwoViewGenerator")(min_points=10, **params)


def check_views(sample, cloud: PointCloud, radius: float, method: str) -> None:
    a, b = sample.global_views
    P, K = sample.meta["scene_ids"]["overlap_segment"], sample.meta["scene_ids"]["pair"]
    for v in (a, b):  # dense ids: every segment 0..P-1 appears in both views, pair ids 0..K-1 once each
        assert sorted(set(v["overlap_segment"][v["overlap_segment"] >= 0].tolist())) == list(range(P))
        assert sorted(v["pair"][v["pair"] >= 0].tolist()) == list(range(K))
        assert (v["overlap_segment"] >= -1).all() and (v["pair"] >= -1).all()
        assert (v["superpoint"][v["overlap_segment"] >= 0] >= 0).all()
    for s in range(P):  # one segment id is one superpoint, the same in both views
        ids = {int(x) for v in (a, b) for x in v["superpoint"][v["overlap_segment"] == s]}
        assert len(ids) == 1
    ra, rb = (np.argsort(np.where(v["pair"] >= 0, v["pair"], K))[:K] for v in (a, b))  # [K] rows of pair k
    gap = np.linalg.norm(a["origin_coord"][ra] - b["origin_coord"][rb], axis=1)  # [K] the k-th pair's two points
    assert (gap <= (radius if method == "radius" else 0.0) + 1e-6).all()
    assert (a["overlap_segment"][ra] >= 0).all() and (b["overlap_segment"][rb] >= 0).all()
    for v in (a, b):  # origin_coord rows are points of the scene
        rows = {tuple(r) for r in cloud["coord"].tolist()}
        assert all(tuple(r) in rows for r in v["origin_coord"].tolist())


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(50, 800),
    segments=st.integers(1, 30),
    method=st.sampled_from(["radius", "index"]),
    radius=st.sampled_from([0.01, 0.03, 0.05]),
    samples=st.integers(1, 300),
)
def test_views_overlap_properties(seed, n, segments, method, radius, samples):
    cloud = scene(seed, n, segments)
    node = generator(overlap=method, radius=radius, samples=samples, jitter_sigma=0.0)
    sample = node.run(np.random.default_rng(seed), cloud=cloud)["views"]
    check_views(sample, cloud, radius, method)
    assert sample.meta["scene_ids"]["pair"] <= samples
    if segments == 1:
        assert sample.meta["scene_ids"]["overlap_segment"] <= 1


def test_no_overlap_and_single_segment():
    rng = np.random.default_rng(0)
    origin = (np.zeros((5, 3), np.float32), np.full((4, 3), 9.0, np.float32))
    rows = (np.arange(5), np.arange(5, 9))
    found = find_overlap(rows, origin, (np.zeros(5, np.int64), np.zeros(4, np.int64)), 16, rng)
    assert (found.segments, found.pairs) == (0, 0)
    assert all((s == -1).all() for s in found.segment) and all((p == -1).all() for p in found.pair)
    same = (np.zeros((6, 3), np.float32) + np.arange(6)[:, None], np.zeros((6, 3), np.float32) + np.arange(6)[:, None])
    found = find_overlap((np.arange(6), np.arange(6)), same, (np.full(6, 4), np.full(6, 4)), 16, rng, "index")
    assert (found.segments, found.pairs) == (1, 6) and all((s == 0).all() for s in found.segment)
    unsegmented = find_overlap((np.arange(6), np.arange(6)), same, (np.full(6, -1), np.full(6, -1)), 16, rng)
    assert (unsegmented.segments, unsegmented.pairs) == (0, 0)


def test_collate_offsets_scene_ids():
    node = generator(samples=64)
    samples = [node.run(np.random.default_rng(s), cloud=scene(s, 600, 12))["views"] for s in range(3)]
    batch = collate_views(samples)
    counts = [s.meta["scene_ids"]["pair"] for s in samples]
    assert batch.id_ends["pair"] == tuple(np.cumsum(counts).tolist())
    pair, offset = batch.global_views.extra["pair"], batch.global_views.offset.tolist()
    starts = [0, *offset[:-1]]
    for s in range(3):
        lo = batch.id_ends["pair"][s] - counts[s]
        for v in range(2):
            ids = pair[starts[2 * s + v] : offset[2 * s + v]]
            assert sorted(ids[ids >= 0].tolist()) == list(range(lo, lo + counts[s]))
    assert batch.id_count("overlap_segment") == sum(s.meta["scene_ids"]["overlap_segment"] for s in samples)
    with pytest.raises(KeyError, match="no scene-local ids 'nope'"):
        batch.id_count("nope")


def test_refuses_scene_without_superpoint():
    cloud = scene(0, 200, 5)
    del cloud["superpoint"]
    with pytest.raises(CloudError, match="TwoViewGenerator.*no superpoint"):
        generator().run(np.random.default_rng(0), cloud=cloud)


def test_eval_sample_has_the_training_channels():
    cloud = scene(1, 300, 5)
    for features, width in (("coord_color_normal", 9), ("color_normal", 6)):
        node = generator(features=features)
        assert node.eval_sample(cloud).global_views[0]["feat"].shape[1] == width
        assert node.run(np.random.default_rng(0), cloud=cloud)["views"].global_views[0]["feat"].shape[1] == width
