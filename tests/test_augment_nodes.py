"""Property tests of the augmentation nodes: rotation, scale, flip, jitter, colour normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.spatial.distance import pdist

from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.graphs.params import ParamError
from pcdag.nodes.augment.color import NormalizeColor
from pcdag.nodes.augment.flip import RandomFlip
from pcdag.nodes.augment.jitter import RandomJitter
from pcdag.nodes.augment.rotate import RandomRotate, bbox_centre
from pcdag.nodes.augment.scale import RandomScale
from pcdag.testing import point_clouds, seeds

AXIS = st.sampled_from(("x", "y", "z"))
ANGLES = st.tuples(st.floats(-math.pi, math.pi), st.floats(-math.pi, math.pi)).map(sorted)
SMALL = point_clouds(max_points=120, fields=("normal", "origin_coord"))


def plane_cloud(rng: np.random.Generator, n: int = 50) -> tuple[PointCloud, np.ndarray]:
    """Points on a random plane through a random offset, with the plane normal in ``normal``; and that normal."""
    basis, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    coord = rng.uniform(-2, 2, size=(n, 2)) @ basis[:, :2].T + rng.uniform(-5, 5, size=3)
    normal = np.tile(basis[:, 2], (n, 1))
    return PointCloud({"coord": coord.astype(np.float32), "normal": normal.astype(np.float32)}), basis[:, 2]


def assert_normals_fit_plane(cloud: PointCloud, tol: float = 1e-4) -> None:
    """Every difference of two points is perpendicular to every normal (the cloud is planar)."""
    coord = cloud["coord"].astype(np.float64)
    diffs = coord - coord[0]  # [N, 3]
    scale = np.abs(diffs).max() + 1e-12
    assert np.abs(diffs @ cloud["normal"].astype(np.float64).T).max() < tol * scale


# ------------------------------------------------------------------------------------------ rotate


@given(cloud=SMALL, axis=AXIS, angle=ANGLES, center=st.sampled_from(("origin", "bbox")), seed=seeds())
def test_rotation_preserves_distances_normal_lengths_and_origin_coord(cloud, axis, angle, center, seed):
    coord, normal, origin = cloud["coord"].copy(), cloud["normal"].copy(), cloud["origin_coord"].copy()
    out = RandomRotate(axis=axis, angle=angle, center=center).apply(cloud, np.random.default_rng(seed))
    extent = float(np.abs(coord).max()) + 1.0
    np.testing.assert_allclose(
        pdist(out["coord"].astype(np.float64)), pdist(coord.astype(np.float64)), atol=1e-5 * extent
    )
    np.testing.assert_allclose(np.linalg.norm(out["normal"], axis=1), np.linalg.norm(normal, axis=1), atol=1e-6)
    np.testing.assert_array_equal(out["origin_coord"], origin)
    i = "xyz".index(axis)
    np.testing.assert_allclose(out["coord"][:, i], coord[:, i], atol=1e-6 * extent)  # the axis coordinate stays
    np.testing.assert_allclose(out["normal"][:, i], normal[:, i], atol=1e-6)


@given(seed=seeds(), axis=AXIS, angle=ANGLES)
def test_rotation_turns_normals_with_the_points(seed, axis, angle):
    cloud, _ = plane_cloud(np.random.default_rng(seed))
    out = RandomRotate(axis=axis, angle=angle, center="bbox").apply(cloud, np.random.default_rng(seed))
    assert_normals_fit_plane(out)


@given(cloud=point_clouds(fields=()), axis=AXIS, angle=ANGLES, seed=seeds())
def test_rotation_about_the_bbox_centre_keeps_the_centre(cloud, axis, angle, seed):
    coord = cloud["coord"]
    centre = bbox_centre(coord).astype(np.float32)
    cloud = PointCloud({"coord": np.concatenate([coord, centre[None]])})  # inside the box: the box is unchanged
    out = RandomRotate(axis=axis, angle=angle, center="bbox").apply(cloud, np.random.default_rng(seed))
    extent = float(np.abs(coord).max()) + 1.0
    np.testing.assert_allclose(out["coord"][-1], centre, atol=2e-6 * extent)


@given(cloud=SMALL, axis=AXIS, center=st.sampled_from(("origin", "bbox")), seed=seeds())
def test_rotation_by_a_zero_angle_range_or_probability_is_identity(cloud, axis, center, seed):
    coord, normal = cloud["coord"].copy(), cloud["normal"].copy()
    out = RandomRotate(axis=axis, angle=[0.0, 0.0], center=center).apply(cloud, np.random.default_rng(seed))
    np.testing.assert_allclose(out["coord"], coord, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out["normal"], normal)
    skipped = RandomRotate(axis=axis, p=0.0).apply(PointCloud({"coord": coord}), np.random.default_rng(seed))
    np.testing.assert_array_equal(skipped["coord"], coord)


def test_rotation_angle_is_drawn_from_the_rng_and_in_range():
    node = RandomRotate(axis="z", angle=[0.5, 1.0])
    coord = np.array([[1.0, 0.0, 0.0]], np.float32)
    angles = []
    for seed in range(200):
        out = node.apply(PointCloud({"coord": coord.copy()}), np.random.default_rng(seed))
        angles.append(math.atan2(out["coord"][0, 1], out["coord"][0, 0]))  # right-handed: x turns toward y
        again = node.apply(PointCloud({"coord": coord.copy()}), np.random.default_rng(seed))
        np.testing.assert_array_equal(out["coord"], again["coord"])
    assert 0.5 - 1e-6 <= min(angles) < 0.55 and 0.95 < max(angles) <= 1.0 + 1e-6


def test_rotation_rejects_degrees():
    with pytest.raises(ParamError, match="angle"):
        RandomRotate(angle=[-180, 180])


# ------------------------------------------------------------------------------------------ scale


@given(
    cloud=point_clouds(min_points=2, fields=("normal",)), lo=st.floats(0.1, 3.0), width=st.floats(0, 2.0), seed=seeds()
)
def test_isotropic_scale_multiplies_the_extent_by_one_factor(cloud, lo, width, seed):
    coord, normal = cloud["coord"].astype(np.float64), cloud["normal"].copy()
    out = RandomScale(scale=[lo, lo + width]).apply(cloud, np.random.default_rng(seed))
    scaled = out["coord"].astype(np.float64)
    nonzero = np.abs(coord) > 1e-3
    factors = scaled[nonzero] / coord[nonzero]
    if factors.size:
        assert lo * (1 - 1e-5) <= factors.min() and factors.max() <= (lo + width) * (1 + 1e-5)
        np.testing.assert_allclose(factors, factors[0], rtol=1e-4)
        np.testing.assert_allclose(np.ptp(scaled, axis=0), np.ptp(coord, axis=0) * factors[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(out["normal"], normal)  # an isotropic scale leaves normal directions


@given(seed=seeds(), lo=st.floats(0.2, 2.0), width=st.floats(0.1, 3.0))
def test_anisotropic_scale_keeps_normals_perpendicular_and_unit(seed, lo, width):
    cloud, _ = plane_cloud(np.random.default_rng(seed))
    box = np.ptp(cloud["coord"].astype(np.float64), axis=0)
    out = RandomScale(scale=[lo, lo + width], anisotropic=True).apply(cloud, np.random.default_rng(seed))
    ratio = np.ptp(out["coord"].astype(np.float64), axis=0) / box  # [3] per-axis factors
    assert np.all(ratio >= lo * (1 - 1e-4)) and np.all(ratio <= (lo + width) * (1 + 1e-4))
    np.testing.assert_allclose(np.linalg.norm(out["normal"], axis=1), 1.0, atol=1e-6)
    assert_normals_fit_plane(out)


def test_scale_rejects_non_positive_factors():
    with pytest.raises(ParamError, match="> 0"):
        RandomScale(scale=[0.0, 1.0])
    with pytest.raises(ParamError, match="low must not exceed high"):
        RandomScale(scale=[1.2, 0.8])


# ------------------------------------------------------------------------------------------ flip


@given(cloud=SMALL, axis=AXIS, seed=seeds())
def test_flip_negates_one_axis_and_twice_is_identity(cloud, axis, seed):
    coord, normal, origin = cloud["coord"].copy(), cloud["normal"].copy(), cloud["origin_coord"].copy()
    node, i = RandomFlip(axis=axis, p=1.0), "xyz".index(axis)
    once = node.apply(cloud, np.random.default_rng(seed))
    sign = np.ones(3, np.float32)
    sign[i] = -1
    np.testing.assert_array_equal(once["coord"], coord * sign)
    np.testing.assert_array_equal(once["normal"], normal * sign)
    np.testing.assert_array_equal(once["origin_coord"], origin)
    twice = node.apply(once, np.random.default_rng(seed + 1))
    np.testing.assert_array_equal(twice["coord"], coord)
    np.testing.assert_array_equal(twice["normal"], normal)


def test_flip_probability():
    node, coord = RandomFlip(axis="y", p=0.3), np.ones((1, 3), np.float32)
    rng = np.random.default_rng(5)
    flips = sum(node.apply(PointCloud({"coord": coord}), rng)["coord"][0, 1] < 0 for _ in range(2000))
    assert abs(flips / 2000 - 0.3) < 5 * math.sqrt(0.3 * 0.7 / 2000)


# ------------------------------------------------------------------------------------------ jitter


@given(cloud=point_clouds(fields=()), sigma=st.floats(0.0, 0.1), clip=st.floats(0.0, 0.05), seed=seeds())
def test_jitter_is_bounded_by_clip(cloud, sigma, clip, seed):
    coord = cloud["coord"].astype(np.float64)
    out = RandomJitter(sigma=sigma, clip=clip).apply(cloud, np.random.default_rng(seed))
    assert out["coord"].dtype == np.float32
    rounding = 1e-6 * (np.abs(coord) + 1.0)  # float32 rounding of the sum
    assert np.all(np.abs(out["coord"] - coord) <= clip + rounding)


def test_jitter_noise_has_the_requested_spread():
    coord = np.zeros((20000, 3), np.float32)
    moved = RandomJitter(sigma=0.01, clip=1.0).apply(PointCloud({"coord": coord}), np.random.default_rng(3))["coord"]
    assert abs(moved.mean()) < 1e-3 and abs(moved.std() - 0.01) < 5e-4
    clipped = RandomJitter(sigma=0.01, clip=0.005).apply(PointCloud({"coord": coord}), np.random.default_rng(3))
    assert np.abs(clipped["coord"]).max() == pytest.approx(0.005)


# ------------------------------------------------------------------------------------------ colour


@given(cloud=point_clouds(fields=("color",)), scale=st.sampled_from(("unit", "symmetric")))
def test_normalize_color_range(cloud, scale):
    raw = cloud["color"].astype(np.float64)
    out = NormalizeColor(scale=scale).apply(cloud, np.random.default_rng(0))["color"]
    assert out.dtype == np.float32
    lo, hi = (0.0, 1.0) if scale == "unit" else (-1.0, 1.0)
    assert out.min() >= lo and out.max() <= hi
    np.testing.assert_allclose(out, lo + raw / 255.0 * (hi - lo), atol=1e-6)


def test_normalize_color_maps_the_ends_exactly_and_refuses_twice():
    cloud = PointCloud({"coord": np.zeros((2, 3), np.float32), "color": np.array([[0] * 3, [255] * 3], np.uint8)})
    out = NormalizeColor(scale="symmetric").apply(cloud, np.random.default_rng(0))
    np.testing.assert_array_equal(out["color"], [[-1.0] * 3, [1.0] * 3])
    with pytest.raises(CloudError, match=r"NormalizeColor.*already float32"):
        NormalizeColor().apply(out, np.random.default_rng(0))
    wide = PointCloud({"coord": np.zeros((1, 3), np.float32), "color": np.zeros((1, 3), np.uint16)})
    with pytest.raises(CloudError, match="uint16"):
        NormalizeColor().apply(wide, np.random.default_rng(0))
