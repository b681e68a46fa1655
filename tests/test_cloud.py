"""PointCloud: contracts, lazy selection bookkeeping, the inverse map through later selections."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pcdag.graphs import CloudError, PointCloud
from pcdag.nodes.geometry.grid_sample import GridSample
from pcdag.testing.strategies import point_clouds


def test_validate_works_with_pending_selections() -> None:
    cloud = PointCloud({"coord": np.zeros((4, 3), np.float32), "segment": np.arange(4, dtype=np.int16)})
    cloud.select(np.array([0, 2]))
    assert cloud.validate() is cloud and cloud["segment"].tolist() == [0, 2]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"coord": np.zeros((0, 3), np.float32)}, "no points"),
        ({"coord": np.full((2, 3), np.nan, np.float32)}, "2 points have NaN"),
        ({"coord": np.zeros((2, 3), np.float64)}, "dtype float64, expected float32"),
        ({"coord": np.zeros((2, 2), np.float32)}, "shape [2, 2], expected [N,3]"),
        ({"coord": np.zeros((2, 3), np.float32), "color": np.zeros((2, 3), np.int64)}, "'color' has dtype int64"),
        ({"coord": np.zeros((2, 3), np.float32), "extra": np.zeros(3)}, "extra field 'extra' must be an array with 2"),
    ],
)
def test_validate_names_the_problem(fields, message) -> None:
    with pytest.raises(CloudError, match=r"scene x: .*" + message.replace("[", r"\[").replace("]", r"\]")):
        PointCloud(fields).validate("scene x")


def test_copy_is_deep_including_meta_arrays() -> None:
    cloud = PointCloud({"coord": np.zeros((3, 3), np.float32)}, {"inverse": np.arange(3)})
    other = cloud.copy()
    other["coord"][0, 0] = 1.0
    other.meta["inverse"][0] = 7
    assert cloud["coord"][0, 0] == 0.0 and cloud.meta["inverse"][0] == 0


@given(point_clouds(min_points=2, max_points=200), st.floats(0.01, 2.0), st.data())
def test_inverse_stays_true_through_later_selections(cloud: PointCloud, size: float, data) -> None:
    coord0 = cloud["coord"].copy()
    GridSample(grid_size=size, mode="test").apply(cloud, np.random.default_rng(0))
    GridSample(grid_size=2 * size, mode="test").apply(cloud, np.random.default_rng(0))
    keep = np.array(data.draw(st.lists(st.integers(0, len(cloud) - 1), min_size=1, unique=True)), dtype=np.int64)
    cloud.select(keep)
    inverse = cloud.meta["inverse"]
    assert inverse.shape == (len(coord0),)
    mapped = inverse >= 0
    assert mapped.any()
    # every original point that still has a representative maps to a point of the same coarse voxel
    vox = lambda c: np.floor(c / (2 * size)).astype(np.int64)  # noqa: E731
    np.testing.assert_array_equal(vox(cloud["coord"][inverse[mapped]]), vox(coord0[mapped]))
