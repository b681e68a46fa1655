"""Device view nodes: GridMasking (cells, ratio, schedules, jitter) and CoordinateNoise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pcdag.graphs.batch import MultiViewBatch, ViewSample, collate_views
from pcdag.graphs.device import StepContext
from pcdag.nodes.views.coordinate_noise import CoordinateNoise
from pcdag.nodes.views.masking import GridMasking


def ctx(seed: int = 0, step: int = 0, total: int = 101) -> StepContext:
    gen = torch.Generator().manual_seed(seed)
    return StepContext(step=step, total_steps=total, generator=gen, device=torch.device("cpu"))


def batch(sizes: list[int], seed: int, extent: float = 2.0, n_local: int = 1) -> MultiViewBatch:
    """Scenes of two global views (``sizes`` points each, in scene-major order) and ``n_local`` local views."""
    rng = np.random.default_rng(seed)

    def view(n: int) -> dict[str, np.ndarray]:
        coord = (rng.uniform(0.0, extent, size=(n, 3)) + rng.uniform(-5.0, 5.0, size=3)).astype(np.float32)
        feat = rng.normal(size=(n, 9)).astype(np.float32)
        grid = np.floor(coord / 0.02).astype(np.int32)
        return {"coord": coord, "origin_coord": coord.copy(), "feat": feat, "grid_coord": grid - grid.min(0)}

    scenes = [
        ViewSample(f"s{i}", [view(a), view(b)], [view(7) for _ in range(n_local)])
        for i, (a, b) in enumerate(zip(sizes[::2], sizes[1::2], strict=False))
    ]
    return collate_views(scenes)


def cells_numpy(coord: np.ndarray, offset: np.ndarray, size: float) -> np.ndarray:
    """``[N, 4]`` (view, cell x, y, z) computed independently with numpy."""
    view = np.repeat(np.arange(len(offset)), np.diff(offset, prepend=0))
    lo = np.stack([coord[view == v].min(0) if (view == v).any() else np.zeros(3) for v in range(len(offset))])
    return np.concatenate([view[:, None], np.floor((coord - lo[view]) / size).astype(np.int64)], axis=1)


even_sizes = st.lists(st.integers(1, 120), min_size=2, max_size=6).map(lambda s: s[: len(s) // 2 * 2])


@settings(max_examples=40, deadline=None)
@given(sizes=even_sizes, seed=st.integers(0, 2**31 - 1), size=st.sampled_from((0.1, 0.4, 1.0)), ratio=st.floats(0, 1))
def test_masked_cells_are_whole_within_one_view_and_count_as_the_ratio(sizes, seed, size, ratio) -> None:
    b = batch(sizes, seed)
    node = GridMasking(size=size, ratio=ratio)
    out = node.forward(ctx(seed), None, views=b)["views"].global_views
    mask = out.mask.numpy()
    cells = cells_numpy(b.global_views.coord.numpy(), b.global_views.offset.numpy(), size)
    _, cell_id = np.unique(cells, axis=0, return_inverse=True)
    cell_id = cell_id.reshape(-1)
    n_cells = int(cell_id.max()) + 1
    per_cell = np.zeros(n_cells, dtype=np.int64)
    np.add.at(per_cell, cell_id, mask.astype(np.int64))
    counts = np.bincount(cell_id, minlength=n_cells)
    assert ((per_cell == 0) | (per_cell == counts)).all(), "a cell is masked in part"
    assert int((per_cell > 0).sum()) == math.floor(ratio * n_cells)


def test_cells_never_span_views() -> None:
    # Two views with identical coordinates: a shared cell id would mask both or neither every time.
    b = batch([50, 50], 0)
    g = b.global_views
    g2 = g.replace(coord=torch.cat([g.coord[:50], g.coord[:50]]))
    differ = 0
    for seed in range(20):
        mask = GridMasking(size=0.5, ratio=0.5).forward(ctx(seed), None, views=b.replace(global_views=g2))["views"]
        differ += int((mask.global_views.mask[:50] != mask.global_views.mask[50:]).any())
    assert differ > 0


def test_schedules_give_the_spec_values() -> None:
    node = GridMasking()
    b = batch([200, 200], 1)
    for step, size, ratio in ((0, 0.1, 0.3), (5, 0.4, 0.7), (100, 0.4, 0.7), (2, 0.22, 0.46)):
        c = ctx(step=step)  # progress = step / 100
        node.forward(c, None, views=b)
        assert c.metrics["size"] == pytest.approx(size)
        assert c.metrics["ratio"] == pytest.approx(ratio)
        assert 0.0 < float(c.metrics["masked_points"]) < 1.0


def test_input_batch_is_not_modified_and_only_global_views_change() -> None:
    b = batch([80, 60, 70, 90], 2)
    g = b.global_views
    before = {k: getattr(g, k).clone() for k in ("coord", "feat", "origin_coord", "grid_coord", "offset")}
    out = GridMasking(size=0.3, ratio=0.5).forward(ctx(), None, views=b)["views"]
    for k, v in before.items():
        assert torch.equal(getattr(g, k), v), f"input {k} modified"
    assert g.mask is None
    og = out.global_views
    assert og.feat is g.feat and og.origin_coord is g.origin_coord and og.offset is g.offset
    assert og.grid_coord is None and og.coord is not g.coord
    assert out.local_views is b.local_views and out.scenes == b.scenes


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), sides=st.sampled_from(("above", "both")))
def test_jitter_only_on_masked_points_and_clipped(seed, sides) -> None:
    b = batch([300, 300], seed)
    out = GridMasking(size=0.3, ratio=0.6, noise=0.02, clip=0.02, clip_sides=sides).forward(ctx(seed), None, views=b)
    g = out["views"].global_views
    shift = (g.coord - b.global_views.coord).numpy()  # [N, 3]
    mask = g.mask.numpy()
    assert (shift[~mask] == 0).all()
    assert (shift[mask] <= 0.02 + 1e-6).all()
    below = shift[mask] < -0.0201
    assert below.any() if sides == "above" else not below.any()  # reference: clipped above only
    assert shift[mask].std() > 0.005


def test_same_seed_same_mask_and_jitter_other_seed_differs() -> None:
    b = batch([200, 150], 3)
    node = GridMasking(size=0.2, ratio=0.5)
    a = node.forward(ctx(7), None, views=b)["views"].global_views
    again = node.forward(ctx(7), None, views=b)["views"].global_views
    other = node.forward(ctx(8), None, views=b)["views"].global_views
    assert torch.equal(a.mask, again.mask) and torch.equal(a.coord, again.coord)
    assert not torch.equal(a.mask, other.mask)


def test_coordinate_noise_has_sigma_std_and_keeps_the_rest() -> None:
    b = batch([6000, 4000], 4)
    b = b.replace(global_views=b.global_views.replace(mask=torch.ones(10000, dtype=torch.bool)))
    before = b.global_views.coord.clone()
    out = CoordinateNoise(sigma=0.01).forward(ctx(3), None, views=b)["views"]
    g = out.global_views
    shift = (g.coord - before).numpy()  # [N, 3]
    assert torch.equal(b.global_views.coord, before)  # input untouched
    assert np.allclose(shift.std(axis=0), 0.01, rtol=0.05) and np.allclose(shift.mean(axis=0), 0.0, atol=5e-4)
    assert g.mask is None and g.grid_coord is None and g.feat is b.global_views.feat
    assert g.origin_coord is b.global_views.origin_coord and out.local_views is b.local_views
    again = CoordinateNoise(sigma=0.01).forward(ctx(3), None, views=b)["views"].global_views
    assert torch.equal(again.coord, g.coord)
