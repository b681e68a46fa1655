"""``pcdag.ops.segment.mean_over_views``, the per-view mean the Laplacian, clustering and consistency losses share."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pcdag.ops.segment import mean_over_views


@settings(max_examples=60, deadline=None)
@given(
    n_views=st.integers(1, 6),
    data=st.data(),
    dtype=st.sampled_from((torch.float32, torch.float64)),
)
def test_mean_over_views_is_the_mean_of_the_non_empty_views_means(n_views: int, data, dtype) -> None:
    view = np.array(data.draw(st.lists(st.integers(0, n_views - 1), max_size=40), label="view"), dtype=np.int64)
    values = np.array(data.draw(st.lists(st.floats(-1e3, 1e3), min_size=len(view), max_size=len(view)), label="values"))
    means = [values[view == b].mean() for b in range(n_views) if (view == b).any()]  # loop reference
    want = float(np.mean(means)) if means else 0.0
    got = mean_over_views(torch.tensor(values, dtype=dtype), torch.from_numpy(view), n_views)
    assert got.dtype == dtype and got.shape == ()
    assert float(got) == pytest.approx(want, rel=1e-5, abs=1e-3 if dtype == torch.float32 else 1e-9)


@given(n_views=st.integers(1, 4), rows=st.integers(0, 12), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=30, deadline=None)
def test_gradient_of_a_row_is_one_over_its_views_rows_times_views_present(n_views: int, rows: int, seed: int) -> None:
    view = torch.from_numpy(np.random.default_rng(seed).integers(0, n_views, rows))  # [R]
    values = torch.randn(rows, dtype=torch.float64, requires_grad=True)  # [R]
    mean_over_views(values, view, n_views).backward()  # also with R = 0: still connected to values' graph
    counts = torch.bincount(view, minlength=n_views).double()  # [B]
    present = float((counts > 0).sum())
    want = 1.0 / (counts[view] * present) if rows else torch.zeros(0, dtype=torch.float64)
    torch.testing.assert_close(values.grad, want)
