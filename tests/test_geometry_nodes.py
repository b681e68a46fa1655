"""Property tests of the geometry nodes: GridSample, EstimateNormals, outlier removal."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.graphs.params import ParamError
from pcdag.nodes.geometry.grid_sample import GridSample
from pcdag.nodes.geometry.normals import EstimateNormals
from pcdag.nodes.geometry.outliers import RadiusOutlierRemoval, StatisticalOutlierRemoval
from pcdag.testing import point_clouds, seeds

GRID_SIZES = st.sampled_from((0.01, 0.05, 0.3, 2.0))
RNG = np.random.default_rng(0)  # for nodes that draw nothing


def with_rows(cloud: PointCloud) -> tuple[PointCloud, np.ndarray]:
    """The cloud with an extra ``row`` field (input index of every point) and a copy of its input coords."""
    coord = cloud["coord"].copy()
    cloud["row"] = np.arange(len(cloud))
    return cloud, coord


def voxels(coord: np.ndarray, grid_size: float) -> np.ndarray:
    return np.floor(coord.astype(np.float64) / grid_size).astype(np.int64)  # [N, 3]


def centre_dist2(coord: np.ndarray, grid_size: float) -> np.ndarray:
    scaled = coord.astype(np.float64) / grid_size
    return np.square(scaled - np.floor(scaled) - 0.5).sum(axis=1)  # [N]


def ball(n: int, rng: np.random.Generator, radius: float = 1.0) -> np.ndarray:
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return direction * radius * rng.random((n, 1)) ** (1 / 3)  # [N, 3] uniform in the ball


# ------------------------------------------------------------------------------------------ GridSample


@given(cloud=point_clouds(fields=("segment",)), grid_size=GRID_SIZES, mode=st.sampled_from(("train", "test")))
def test_grid_sample_keeps_exactly_one_input_point_per_occupied_voxel(cloud, grid_size, mode):
    cloud, coord = with_rows(cloud)
    segment = cloud["segment"].copy()
    out = GridSample(grid_size=grid_size, mode=mode).apply(cloud, np.random.default_rng(0))
    rows = out["row"]
    assert len(np.unique(rows)) == len(rows)  # no point kept twice
    np.testing.assert_array_equal(out["coord"], coord[rows])  # kept points are input points, unchanged
    np.testing.assert_array_equal(out["segment"], segment[rows])  # and their fields follow
    kept = voxels(out["coord"], grid_size)
    assert len(np.unique(kept, axis=0)) == len(kept)  # at most one point per voxel
    occupied = np.unique(voxels(coord, grid_size), axis=0)
    np.testing.assert_array_equal(np.unique(kept, axis=0), occupied)  # every occupied voxel represented
    grid = out["grid_coord"]
    assert grid.dtype == np.int32 and grid.min() == 0
    np.testing.assert_array_equal(grid, kept - occupied.min(axis=0))


@given(cloud=point_clouds(fields=()), grid_size=GRID_SIZES, seed=seeds())
def test_grid_sample_train_mode_is_deterministic_under_a_seed(cloud, grid_size, seed):
    node = GridSample(grid_size=grid_size)
    a = node.apply(cloud.copy(), np.random.default_rng(seed))
    b = node.apply(cloud.copy(), np.random.default_rng(seed))
    np.testing.assert_array_equal(a["coord"], b["coord"])
    assert "inverse" not in a.meta


@given(cloud=point_clouds(fields=()), grid_size=GRID_SIZES, seed=seeds())
def test_grid_sample_test_mode_inverse_and_central_choice(cloud, grid_size, seed):
    coord = cloud["coord"].copy()
    out = GridSample(grid_size=grid_size, mode="test").apply(cloud, np.random.default_rng(seed))
    inverse = out.meta["inverse"]
    assert inverse.dtype == np.int64 and inverse.shape == (len(coord),)
    assert inverse.min() >= 0 and inverse.max() < len(out)
    # every input point maps to the kept point of its own voxel ...
    np.testing.assert_array_equal(voxels(out["coord"], grid_size)[inverse], voxels(coord, grid_size))
    # ... and that kept point is the one nearest the voxel centre
    assert np.all(centre_dist2(out["coord"], grid_size)[inverse] <= centre_dist2(coord, grid_size))
    other = GridSample(grid_size=grid_size, mode="test").apply(PointCloud({"coord": coord}), np.random.default_rng())
    np.testing.assert_array_equal(other["coord"], out["coord"])  # no randomness in test mode


def test_grid_sample_train_mode_draws_uniformly_within_a_voxel():
    coord = np.array([[0.01, 0.01, 0.01], [0.02, 0.03, 0.04], [0.05, 0.05, 0.05], [0.09, 0.01, 0.02]], np.float32)
    coord = np.concatenate([coord, [[1.05, 0.0, 0.0]]]).astype(np.float32)  # a second voxel with one point
    node, rng, trials = GridSample(grid_size=0.1), np.random.default_rng(123), 4000
    picks = np.zeros(4)
    for _ in range(trials):
        out = node.apply(PointCloud({"coord": coord.copy(), "row": np.arange(5)}), rng)
        assert len(out) == 2 and 4 in out["row"]
        picks[out["row"][out["row"] < 4]] += 1
    expected, sd = trials / 4, np.sqrt(trials * 0.25 * 0.75)
    assert np.all(np.abs(picks - expected) < 5 * sd), picks


def test_grid_sample_refuses_an_extent_beyond_the_key_space():
    # 5e6 voxels per axis fit int32, but 5e6 ** 3 > 2 ** 63 keys
    huge = PointCloud({"coord": np.array([[0, 0, 0], [1000, 1000, 1000]], np.float32)}, {"scene": "far"})
    with pytest.raises(CloudError, match=r"GridSample\(grid_size=0.0002\).*'far'.*int64"):
        GridSample(grid_size=2e-4).apply(huge, np.random.default_rng(0))
    wide = PointCloud({"coord": np.array([[0, 0, 0], [1e6, 0, 0]], np.float32)})
    with pytest.raises(CloudError, match="int32"):
        GridSample(grid_size=2e-4).apply(wide, np.random.default_rng(0))


def test_grid_sample_rejects_bad_parameters():
    with pytest.raises(ParamError, match="grid_size"):
        GridSample(grid_size=0.0)
    with pytest.raises(ParamError, match="mode"):
        GridSample(mode="eval")


# ------------------------------------------------------------------------------------------ normals


@given(cloud=point_clouds(min_points=3, fields=()), k=st.integers(3, 40), orient=st.sampled_from(("centroid", "none")))
def test_normals_are_unit_float32(cloud, k, orient):
    out = EstimateNormals(k=k, orient=orient).apply(cloud, np.random.default_rng(0))
    normal = out["normal"]
    assert normal.dtype == np.float32 and normal.shape == (len(out), 3)
    np.testing.assert_allclose(np.linalg.norm(normal, axis=1), 1.0, atol=1e-5)


@given(
    n=st.integers(20, 300),
    k=st.integers(8, 64),
    size=st.floats(0.1, 10.0),
    seed=seeds(),
    orient=st.sampled_from(("centroid", "none")),
)
def test_normals_of_a_noisy_plane_are_the_plane_normal(n, k, size, seed, orient):
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(3, 3)))  # random orthonormal frame; column 2 is the plane normal
    uv = rng.uniform(-size, size, size=(n, 2))
    noise = rng.normal(0.0, 1e-4 * size, size=(n, 1))
    coord = uv @ basis[:, :2].T + noise * basis[:, 2] + rng.uniform(-10 * size, 10 * size, size=3)
    out = EstimateNormals(k=k, orient=orient).apply(PointCloud({"coord": coord.astype(np.float32)}), rng)
    assert np.all(np.abs(out["normal"] @ basis[:, 2]) > 0.99)


@given(cloud=point_clouds(min_points=3, fields=()), k=st.integers(3, 40))
def test_normals_point_toward_the_centroid(cloud, k):
    coord = cloud["coord"].astype(np.float64)
    to_centroid = coord.mean(axis=0) - coord  # [N, 3]
    normal = EstimateNormals(k=k).apply(cloud, np.random.default_rng(0))["normal"].astype(np.float64)
    dot = np.einsum("ij,ij->i", normal, to_centroid)
    assert np.all(dot >= -1e-5 * np.linalg.norm(to_centroid, axis=1))
    unoriented = EstimateNormals(k=k, orient="none").apply(PointCloud({"coord": cloud["coord"]}), RNG)["normal"]
    np.testing.assert_allclose(np.abs(np.einsum("ij,ij->i", normal, unoriented)), 1.0, atol=1e-5)  # same axes


@given(cloud=point_clouds(min_points=3, max_points=31, fields=()))
def test_normals_with_fewer_points_than_k_use_all_points(cloud):
    n = len(cloud)
    few = EstimateNormals(k=32).apply(cloud.copy(), np.random.default_rng(0))["normal"]
    exact = EstimateNormals(k=max(n, 3)).apply(cloud, np.random.default_rng(0))["normal"]
    np.testing.assert_array_equal(few, exact)


def test_normals_need_three_points():
    two = PointCloud({"coord": np.zeros((2, 3), np.float32)}, {"scene": "tiny"})
    with pytest.raises(CloudError, match=r"EstimateNormals\(k=32\).*'tiny'.*2 point"):
        EstimateNormals().apply(two, np.random.default_rng(0))


# ------------------------------------------------------------------------------------------ outliers


@given(n=st.integers(20, 200), k=st.integers(0, 1000), seed=seeds(), size=st.floats(0.01, 10.0))
def test_sor_keeps_a_ball_shaped_cluster_whole(n, k, seed, size):
    # With every other point as neighbour (k >= N - 1) the mean distance varies smoothly from the ball's centre
    # (0.75 R) to its surface (1.2 R): a few std at most, so the default 4 std never cuts into a clean cluster.
    coord = (ball(n, np.random.default_rng(seed), size) + 3 * size).astype(np.float32)
    node = StatisticalOutlierRemoval(k=max(k, n - 1))
    assert len(node.apply(PointCloud({"coord": coord}), RNG)) == n
    if n <= 51:  # default k = 50 covers all others
        assert len(StatisticalOutlierRemoval().apply(PointCloud({"coord": coord}), RNG)) == n


@given(n=st.integers(30, 200), k=st.integers(1, 60), seed=seeds(), distance=st.floats(50.0, 1e4))
def test_sor_removes_exactly_an_injected_far_outlier(n, k, seed, distance):
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=3)
    outlier = direction / np.linalg.norm(direction) * distance
    coord = np.concatenate([ball(n, rng), outlier[None]]).astype(np.float32)
    out = StatisticalOutlierRemoval(k=k).apply(PointCloud({"coord": coord, "row": np.arange(n + 1)}), rng)
    np.testing.assert_array_equal(out["row"], np.arange(n))


@given(cloud=point_clouds(fields=()), k=st.integers(1, 30))
def test_sor_never_removes_with_a_ratio_beyond_samuelsons_bound(cloud, k):
    # No value of a sample lies more than sqrt(N - 1) population std from its mean (Samuelson's inequality).
    n = len(cloud)
    node = StatisticalOutlierRemoval(k=k, std_ratio=max(np.sqrt(n - 1), 0.5))
    assert len(node.apply(cloud, RNG)) == n


@given(cloud=point_clouds(fields=(), scale=1.0), k=st.integers(1, 20), ratio=st.floats(0.1, 3.0))
def test_sor_matches_a_brute_force_computation(cloud, k, ratio):
    coord = cloud["coord"].astype(np.float64)
    n = len(coord)
    k_eff = min(k, n - 1)
    dist = np.sort(cdist(coord, coord), axis=1)[:, 1 : k_eff + 1].mean(axis=1) if k_eff else np.zeros(n)
    threshold = dist.mean() + ratio * dist.std()
    cloud["row"] = np.arange(n)
    out = StatisticalOutlierRemoval(k=k, std_ratio=ratio).apply(cloud, RNG)
    kept = np.isin(np.arange(n), out["row"])
    clear = np.abs(dist - threshold) > 1e-7 * max(threshold, 1e-12)  # decisions away from float ties
    np.testing.assert_array_equal(kept[clear], (dist <= threshold)[clear] | (k_eff == 0))


@given(cloud=point_clouds(fields=(), scale=0.5), radius=st.floats(0.01, 1.0), m=st.integers(1, 6))
def test_radius_outlier_removal_matches_a_brute_force_count(cloud, radius, m):
    dist = cdist(cloud["coord"].astype(np.float64), cloud["coord"].astype(np.float64))  # [N, N]
    inner = (dist <= radius * (1 - 1e-9)).sum(axis=1) - 1  # other points within the radius, both ways of
    outer = (dist <= radius * (1 + 1e-9)).sum(axis=1) - 1  # rounding a distance that equals it
    sure = (inner >= m) == (outer >= m)  # [N] points whose fate does not hang on a float tie
    cloud["row"] = np.arange(len(dist))
    node = RadiusOutlierRemoval(radius=radius, min_neighbours=m)
    if not (outer >= m).any():
        with pytest.raises(CloudError, match=rf"RadiusOutlierRemoval\(radius={radius}, min_neighbours={m}\)"):
            node.apply(cloud, RNG)
        return
    if not (inner >= m).any():
        return  # whether anything survives hangs on a tie
    kept = np.isin(np.arange(len(dist)), node.apply(cloud, RNG)["row"])
    np.testing.assert_array_equal(kept[sure], (inner >= m)[sure])


def test_outlier_removal_refuses_to_empty_a_cloud():
    lonely = PointCloud({"coord": np.array([[0, 0, 0], [5, 5, 5]], np.float32)}, {"scene": "sparse"})
    with pytest.raises(CloudError, match=r"min_neighbours=1\) would remove all 2 points of scene 'sparse'"):
        RadiusOutlierRemoval().apply(lonely, RNG)
    single = PointCloud({"coord": np.zeros((1, 3), np.float32)})
    assert len(StatisticalOutlierRemoval().apply(single, RNG)) == 1


@settings(max_examples=5)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 60))
def test_knn_mean_distance_on_a_large_cloud_is_exact(seed: int, k: int) -> None:
    # Leaf-ordered queries on a cloud with dense and sparse parts must give every point its own neighbours.
    from scipy.spatial import cKDTree

    from pcdag.nodes.geometry.outliers import knn_mean_distance

    rng = np.random.default_rng(seed)
    pts = np.concatenate([rng.normal(0, 1, (9000, 3)), rng.uniform(-30, 30, (300, 3))])  # a cluster + sparse far
    dist, _ = cKDTree(pts).query(pts, k=k + 1)
    np.testing.assert_allclose(knn_mean_distance(pts, k), dist[:, 1:].mean(axis=1), rtol=1e-12)
