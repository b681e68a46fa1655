"""MultiViewGenerator and its helpers: crops, colour, per-view geometry, elastic distortion, collation, real data."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.ndimage import convolve

from pcdag.datasets.scannet import read_scan
from pcdag.graphs.batch import collate_views
from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.graphs.params import ParamError
from pcdag.nodes.augment.rotate import bbox_centre, rotation_matrix
from pcdag.nodes.geometry.grid_sample import GridSample
from pcdag.nodes.geometry.normals import EstimateNormals
from pcdag.nodes.views.multi_view import MultiViewGenerator, plot_views
from pcdag.nodes.views.parts.colour import (
    JITTER_OPS,
    ChromaticTranslation,
    ColourJitter,
    adjust,
    apply_colour,
    grey,
    hsv_to_rgb,
    rgb_to_hsv,
)
from pcdag.nodes.views.parts.elastic import elastic_displacement, noise_grid, trilinear
from pcdag.nodes.views.parts.view_transform import ViewGeometry, centre_shift, plan_crops, transform_view
from pcdag.testing import make_cloud, point_clouds, seeds

SCENES = point_clouds(min_points=40, max_points=400, fields=("color", "normal"), scale=3.0)
SMALL = {"min_points": 20}  # lets hypothesis use clouds of tens of points
NO_GEOMETRY = {  # everything after the centre shift off
    "scale": [1.0, 1.0],
    "rotate_z_p": 0.0,
    "rotate_xy_p": 0.0,
    "flip_p": 0.0,
    "jitter_sigma": 0.0,
    "elastic_p": 0.0,
}
ALL_COLOUR = {"color_jitter_p": 1.0, "color_shift_p": 1.0}


def scene(n: int = 2000, seed: int = 0, layout: str = "uniform") -> PointCloud:
    return make_cloud(n, seed, layout, 0.0, ("color", "normal"), 3.0)


def row_in(rows: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``[n]`` bool: is each row of ``rows`` ``[n, 3]`` float32 a row of ``table`` ``[m, 3]``?"""
    void = np.dtype((np.void, 12))
    return np.isin(np.ascontiguousarray(rows).view(void).ravel(), np.ascontiguousarray(table).view(void).ravel())


def all_views(sample) -> list[dict[str, np.ndarray]]:
    return sample.global_views + sample.local_views


# ------------------------------------------------------------------------------------------ the node


@given(
    cloud=SCENES,
    n_global=st.integers(1, 3),
    n_local=st.integers(0, 5),
    max_points=st.integers(30, 500),
    global_size=st.tuples(st.floats(0.2, 1.0), st.floats(0.2, 1.0)).map(sorted),
    local_size=st.tuples(st.floats(0.1, 1.0), st.floats(0.1, 1.0)).map(sorted),
    seed=seeds(),
)
def test_views_follow_the_size_rules_and_come_from_the_scene(
    cloud, n_global, n_local, max_points, global_size, local_size, seed
):
    gen = MultiViewGenerator(
        n_global=n_global,
        n_local=n_local,
        max_points=max_points,
        global_size=global_size,
        local_size=local_size,
        **SMALL,
    )
    sample = gen.run(np.random.default_rng(seed), cloud=cloud)["views"]
    assert (len(sample.global_views), len(sample.local_views)) == (n_global, n_local)
    budget = min(max_points, len(cloud))
    for v, view in enumerate(all_views(sample)):
        lo, hi = global_size if v < n_global else local_size
        k = len(view["coord"])
        assert math.floor(lo * budget) <= k <= math.floor(hi * budget)
        assert set(view) == {"coord", "origin_coord", "feat"}
        assert view["coord"].shape == (k, 3) and view["origin_coord"].shape == (k, 3) and view["feat"].shape == (k, 9)
        assert all(a.dtype == np.float32 for a in view.values())
        assert row_in(view["origin_coord"], cloud["coord"]).all()  # origin_coord defaults to the stored coord
        np.testing.assert_array_equal(view["feat"][:, :3], view["coord"])  # features from the augmented coords
        assert not np.allclose(view["coord"], view["origin_coord"], atol=1e-3)  # ... which were augmented
        assert view["feat"][:, 3:6].min() >= 0 and view["feat"][:, 3:6].max() <= 1
        np.testing.assert_allclose(np.linalg.norm(view["feat"][:, 6:], axis=1), 1.0, atol=1e-5)


def test_origin_coord_is_used_when_present():
    cloud = scene(500)
    cloud["origin_coord"] = cloud["coord"] + np.float32(100.0)
    sample = MultiViewGenerator(**SMALL).run(np.random.default_rng(0), cloud=cloud)["views"]
    for view in all_views(sample):
        assert row_in(view["origin_coord"], cloud["origin_coord"]).all()


def test_without_geometry_a_view_is_its_points_shifted_to_stand_centred_on_the_floor():
    cloud = scene(800)
    sample = MultiViewGenerator(**SMALL, **NO_GEOMETRY).run(np.random.default_rng(1), cloud=cloud)["views"]
    for view in all_views(sample):
        origin = view["origin_coord"].astype(np.float64)
        low, high = origin.min(axis=0), origin.max(axis=0)
        shift = [(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]]
        np.testing.assert_allclose(view["coord"], origin - shift, atol=1e-5)


@given(seed=seeds())
def test_global_views_share_one_colour_transform_and_local_views_draw_their_own(seed):
    cloud = scene(1500, seed)
    gen = MultiViewGenerator(n_global=3, global_size=[0.6, 0.9], **SMALL, **NO_GEOMETRY, **ALL_COLOUR)
    sample = gen.run(np.random.default_rng(seed), cloud=cloud)["views"]
    raw = cloud["color"].astype(np.float32) / 255
    first = sample.global_views[0]
    void = np.dtype((np.void, 12))
    for v, other in enumerate(sample.global_views[1:] + sample.local_views):
        _, a, b = np.intersect1d(
            first["origin_coord"].view(void).ravel(), other["origin_coord"].view(void).ravel(), return_indices=True
        )
        assert len(a) > 0  # views are centred inside the major view, so they overlap it
        same = first["feat"][a, 3:6] == other["feat"][b, 3:6]  # [common, 3]
        assert same.all() if v < 2 else not same.all()  # global views: one draw; local views: each its own
    rows = np.flatnonzero(row_in(cloud["coord"], first["origin_coord"]))  # scene rows in the major view
    assert not np.allclose(np.sort(raw[rows], axis=0), np.sort(first["feat"][:, 3:6], axis=0))  # it was jittered


def test_same_seed_same_views_other_seed_other_views():
    cloud = scene(1200)
    gen = MultiViewGenerator(**SMALL)

    def run(seed: int):
        return gen.run(np.random.default_rng(seed), cloud=cloud)["views"]

    a, b, c = run(7), run(7), run(8)
    for va, vb in zip(all_views(a), all_views(b), strict=True):
        for key in va:
            np.testing.assert_array_equal(va[key], vb[key])
    np.testing.assert_array_equal(a.meta["centres"], b.meta["centres"])
    assert any(not np.array_equal(va["feat"], vc["feat"]) for va, vc in zip(all_views(a), all_views(c), strict=True))


def test_too_small_scenes_are_refused_with_the_counts():
    cloud = scene(500)
    cloud.meta["scene"] = "tiny_room"
    message = r"MultiViewGenerator.*'tiny_room'.*500 points.*min_points = 1024 .*only 50 points"
    with pytest.raises(CloudError, match=message):
        MultiViewGenerator().run(np.random.default_rng(0), cloud=cloud)


def test_bad_colour_and_missing_normals_are_refused():
    cloud = scene(300)
    cloud["color"] = cloud["color"].astype(np.float32) / 255
    with pytest.raises(CloudError, match="color is float32, expected uint8"):
        MultiViewGenerator(**SMALL).run(np.random.default_rng(0), cloud=cloud)
    cloud = scene(300)
    del cloud["normal"]
    with pytest.raises(CloudError, match="no normal field"):
        MultiViewGenerator(**SMALL).run(np.random.default_rng(0), cloud=cloud)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"local_size": [0.0, 0.4]}, "positive share"),
        ({"global_size": [0.9, 0.4]}, "low must not exceed high"),
        ({"elastic_passes": [[0.0, 0.4]]}, "granularity"),
        ({"elastic_passes": [0.2, 0.4]}, "granularity"),
        ({"min_points": 5}, "empty view"),
        ({"hue": 0.7}, "out of range"),
        ({"n_global": 0}, "out of range"),
    ],
)
def test_bad_parameters_are_refused(params, message):
    with pytest.raises(ParamError, match=message):
        MultiViewGenerator(**params)


def test_declared_fields():
    eff = MultiViewGenerator().fields()
    assert eff.reads == {"coord", "color", "normal"} and eff.optional_reads == {"origin_coord"}


def test_collate_views_of_two_scenes_is_scene_major_with_offsets():
    gen = MultiViewGenerator(**SMALL)
    samples = [gen.run(np.random.default_rng(s), cloud=scene(700, s))["views"] for s in (0, 1)]
    samples[1].scene = "second"
    batch = collate_views(samples)
    assert batch.scenes == (samples[0].scene, "second") and (batch.n_global, batch.n_local) == (2, 4)
    for kind, per_scene in (("global", 2), ("local", 4)):
        views = [v for s in samples for v in (s.global_views if kind == "global" else s.local_views)]
        points = batch.views(kind)
        assert points.n_samples == 2 * per_scene
        assert points.offset.tolist() == np.cumsum([len(v["coord"]) for v in views]).tolist()
        for name in ("coord", "feat", "origin_coord"):
            np.testing.assert_array_equal(getattr(points, name).numpy(), np.concatenate([v[name] for v in views]))


def test_plot_views_writes_a_picture(tmp_path):
    sample = MultiViewGenerator(**SMALL).run(np.random.default_rng(0), cloud=scene(600))["views"]
    path = plot_views(sample, tmp_path / "views.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob(".*tmp"))


# ------------------------------------------------------------------------------------------ crops


def _check_plan(xyz: np.ndarray, plan, n_global: int) -> int:
    """Assert the crop rules; return how many times the local cover mask was reset."""
    dist2 = lambda c: np.square(xyz - xyz[:, c : c + 1]).sum(axis=0)  # noqa: E731
    for rows, centre in zip(plan.index, plan.centre, strict=True):
        d = dist2(centre)
        inside = np.zeros(xyz.shape[1], dtype=bool)
        inside[rows] = True
        assert len(np.unique(rows)) == len(rows)
        if not inside.all():  # the k nearest: nothing outside is closer than anything inside
            assert d[inside].max() <= d[~inside].min() + 1e-6
    major = plan.index[0]
    assert np.isin(plan.centre[1:], major).all()  # every other view is centred on a major-view point
    covered, resets = np.zeros(xyz.shape[1], dtype=bool), 0
    for rows, centre in zip(plan.index[n_global:], plan.centre[n_global:], strict=True):
        if covered[major].all():
            covered[:], resets = False, resets + 1
        assert not covered[centre]  # a local centre is a major-view point no earlier local view covers
        covered[rows] = True
    return resets


@given(cloud=SCENES, n_global=st.integers(1, 3), n_local=st.integers(0, 8), seed=seeds())
def test_crops_are_nearest_neighbours_centred_in_the_major_view(cloud, n_global, n_local, seed):
    xyz = np.ascontiguousarray(cloud["coord"].T)
    plan = plan_crops(xyz, np.random.default_rng(seed), n_global, n_local, (0.2, 0.6), (0.1, 0.5), 300)
    assert len(plan.index) == len(plan.centre) == n_global + n_local
    _check_plan(xyz, plan, n_global)


def test_local_centres_cover_the_major_view_before_repeating():
    resets = 0
    for seed in range(20):
        xyz = np.ascontiguousarray(scene(400, seed)["coord"].T)
        plan = plan_crops(xyz, np.random.default_rng(seed), 2, 12, (0.2, 0.3), (0.3, 0.6), 400)
        resets += _check_plan(xyz, plan, 2)
    assert resets > 0  # the reset path was exercised


# ------------------------------------------------------------------------------------------ geometry


@given(
    seed=seeds(),
    rotate_z_p=st.sampled_from((0.0, 1.0)),
    rotate_xy_p=st.sampled_from((0.0, 1.0)),
    flip_p=st.sampled_from((0.0, 1.0)),
)
def test_rotations_and_flips_carry_normals_with_the_coordinates(seed, rotate_z_p, rotate_xy_p, flip_p):
    rng = np.random.default_rng(seed)
    n = 60
    base = rng.uniform(-3, 3, size=(3, n))  # [3, n]
    direction = rng.normal(size=(3, n))
    direction /= np.linalg.norm(direction, axis=0)
    xyz = np.concatenate([base, base + 0.5 * direction], axis=1)  # [3, 2n]: pairs along the normal
    normal = np.concatenate([direction, direction], axis=1).astype(np.float32)
    geo = ViewGeometry(
        rotate_z_p=rotate_z_p, rotate_xy_p=rotate_xy_p, flip_p=flip_p, jitter_sigma=0.0, elastic_p=0.0
    )  # affine chain only
    out, out_normal = transform_view(xyz, normal, geo, np.random.default_rng(seed + 1))
    np.testing.assert_allclose(np.linalg.norm(out_normal, axis=0), 1.0, atol=1e-5)
    moved = (out[:, n:] - out[:, :n]).astype(np.float64)  # the pair's difference after the transform
    np.testing.assert_allclose(moved / np.linalg.norm(moved, axis=0), out_normal[:, :n], atol=2e-4)
    ratio = np.linalg.norm(moved, axis=0) / 0.5  # one isotropic scale for all pairs
    np.testing.assert_allclose(ratio, ratio[0], rtol=2e-4)
    assert 0.9 - 1e-4 <= ratio[0] <= 1.1 + 1e-4
    changed = not np.allclose(out_normal, normal, atol=1e-3)
    assert changed == bool(rotate_z_p or rotate_xy_p or flip_p)


@given(seed=seeds())
def test_the_affine_chain_runs_in_the_reference_order(seed):
    """With every draw pinned, the output is the spec's recipe applied step by step."""
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-2, 2, size=(3, 50)) * np.array([[2.0], [1.0], [0.5]]) + rng.uniform(-5, 5, size=(3, 1))
    normal = rng.normal(size=(3, 50))
    normal = (normal / np.linalg.norm(normal, axis=0)).astype(np.float32)
    geo = ViewGeometry(
        scale=(1.07, 1.07), rotate_z_p=1.0, rotate_z_angle=(0.3, 0.3), rotate_xy_p=1.0,
        rotate_xy_angle=(0.5, 0.5), flip_p=1.0, jitter_sigma=0.0, elastic_p=0.0,
    )  # fmt: skip
    out, out_normal = transform_view(xyz, normal, geo, rng)
    points = (xyz - centre_shift(xyz)[:, None]).T * 1.07  # [n, 3]: centre shift (x_mid, y_mid, z_min), scale
    turn = rotation_matrix("z", 0.3)  # about the origin
    points = points @ turn.T
    for axis in ("x", "y"):  # each about the bounding-box centre of the points as they are then
        rot = rotation_matrix(axis, 0.5)
        centre = bbox_centre(points)
        points, turn = (points - centre) @ rot.T + centre, rot @ turn
    flip = np.diag([-1.0, -1.0, 1.0])  # x, then y
    np.testing.assert_allclose(out.T, points @ flip, atol=1e-5)
    np.testing.assert_allclose(out_normal.T, normal.T @ (flip @ turn).T, atol=1e-5)


@given(seed=seeds())
def test_the_view_stands_centred_on_the_floor_before_the_rotations(seed):
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-5, 5, size=(3, 200)) + rng.uniform(-10, 10, size=(3, 1))
    geo = ViewGeometry(rotate_xy_p=0.0, jitter_sigma=0.0, elastic_p=0.0)  # scale, z rotation, flips keep this
    out, _ = transform_view(xyz, np.zeros((3, 200), np.float32), geo, rng)
    assert abs(out[2].min()) < 1e-5  # z_min = 0
    np.testing.assert_allclose(centre_shift(xyz - centre_shift(xyz)[:, None]), 0, atol=1e-9)


@given(seed=seeds())
def test_jitter_is_bounded_by_its_clip(seed):
    xyz = np.random.default_rng(seed).uniform(0, 2, size=(3, 300))
    xyz[2, 0] = 0.0  # z_min = 0 so the centre shift only moves x and y
    geo = ViewGeometry(scale=(1.0, 1.0), rotate_z_p=0, rotate_xy_p=0, flip_p=0, elastic_p=0, jitter_clip=0.01)
    out, _ = transform_view(xyz, np.zeros((3, 300), np.float32), geo, np.random.default_rng(seed))
    diff = out - (xyz - centre_shift(xyz)[:, None])
    assert np.abs(diff).max() <= 0.01 + 1e-6 and np.abs(diff).max() > 0


# ------------------------------------------------------------------------------------------ elastic


@given(seed=seeds(), granularity=st.sampled_from((0.1, 0.2, 0.8)), magnitude=st.sampled_from((0.4, 1.6)))
def test_elastic_distortion_is_smooth_and_bounded(seed, granularity, magnitude):
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(0, 3, size=(3, 400)) * np.array([[1.0], [1.0], [0.5]])
    step = rng.normal(size=(3, 400))
    step *= rng.uniform(0, granularity / 4, size=400) / np.linalg.norm(step, axis=0)
    pairs = np.concatenate([xyz, xyz + step], axis=1)  # [3, 800]: each point and a neighbour < g/4 away
    disp = elastic_displacement(pairs, granularity, magnitude, np.random.default_rng(seed))
    field, _ = noise_grid(pairs, granularity, np.random.default_rng(seed))  # the same field again
    assert np.abs(disp).max() <= magnitude * np.abs(field).max() * (1 + 1e-5)  # convex combination of nodes
    assert np.abs(disp).max() > 0
    jump = np.abs(disp[:, :400] - disp[:, 400:])  # [3, 400]
    node_step = np.array([np.abs(np.diff(field, axis=a)).max() for a in (1, 2, 3)])  # [3] per grid axis
    bound = magnitude / granularity * (node_step @ np.abs(step))  # [400] Lipschitz bound of trilinear interp.
    assert (jump.max(axis=0) <= bound * (1 + 1e-4) + 1e-6).all()
    assert jump.mean() < 0.05 * magnitude  # nearby points move alike (displacements are ~0.1 magnitude)


def test_noise_grid_is_gaussian_noise_blurred_twice_by_3_tap_boxes():
    xyz = np.array([[0.0, 1.0, 0.3], [0.0, 0.55, 2.0], [0.0, 0.1, 0.2]])  # [3, 3] points
    field, origin = noise_grid(xyz, 0.25, np.random.default_rng(3))
    assert field.shape == (3, 7, 11, 3) and field.dtype == np.float32  # floor(extent / g) + 3 nodes per axis
    np.testing.assert_allclose(origin, [-0.25, -0.25, -0.25])
    raw = np.random.default_rng(3).standard_normal((3, 7, 11, 3), dtype=np.float32)
    box = np.ones((1, 3, 3, 3)) / 27  # the three separable 3-tap boxes as one kernel (zero outside)
    expected = convolve(convolve(raw.astype(np.float64), box, mode="constant"), box, mode="constant")
    np.testing.assert_allclose(field, expected, atol=1e-5)


@given(seed=seeds())
def test_trilinear_interpolation_is_exact_on_nodes_and_for_linear_fields(seed):
    rng = np.random.default_rng(seed)
    dims, spacing, origin = (5, 4, 6), 0.3, rng.uniform(-1, 1, size=3)
    nodes = np.stack(np.meshgrid(*[np.arange(d) for d in dims], indexing="ij")).reshape(3, -1)  # [3, G]
    coef = rng.normal(size=(2, 3))
    linear = (coef @ nodes).reshape(2, *dims).astype(np.float32)  # two linear fields on the grid
    pos = origin[:, None] + spacing * rng.uniform(0, np.array(dims)[:, None] - 1, size=(3, 300))  # inside
    got = trilinear(linear, origin, spacing, pos)
    np.testing.assert_allclose(got, coef @ ((pos - origin[:, None]) / spacing), atol=1e-4)
    random_field = rng.normal(size=(1, *dims)).astype(np.float32)
    at_nodes = trilinear(random_field, origin, spacing, origin[:, None] + spacing * nodes)
    # A node's grid position is computed in float32, so it lands a few epsilons (in grid units, up to the largest
    # index) off the node, and each of the 3 axes then mixes in up to that fraction of a neighbour's value: error
    # <= 3 axes * (largest difference of two values) * 8 epsilons * largest index.
    eps, spread = np.finfo(np.float32).eps, np.ptp(random_field)
    np.testing.assert_allclose(at_nodes[0], random_field.reshape(-1), atol=3 * spread * 8 * eps * max(dims))


# ------------------------------------------------------------------------------------------ colour

COLOURS = st.integers(0, 2**32 - 1).map(
    lambda s: np.random.default_rng(s).integers(0, 256, size=(3, 64)).astype(np.float32)
)


@given(colour=COLOURS)
def test_hsv_conversions_match_colorsys(colour):
    rgb = colour / 255
    hsv = rgb_to_hsv(rgb)
    expected = np.array([colorsys.rgb_to_hsv(*rgb[:, i]) for i in range(rgb.shape[1])]).T
    np.testing.assert_allclose(hsv, expected, atol=1e-5)
    np.testing.assert_allclose(hsv_to_rgb(hsv), rgb, atol=1e-5)


@given(colour=COLOURS, shift=st.floats(-0.5, 0.5))
def test_hue_shift_matches_colorsys(colour, shift):
    got = adjust(colour, "hue", shift) / 255
    expected = []
    for r, g, b in (colour / 255).T:
        h, s, v = colorsys.rgb_to_hsv(r, g, b)
        expected.append(colorsys.hsv_to_rgb((h + shift) % 1.0, s, v))
    np.testing.assert_allclose(got, np.array(expected).T, atol=1e-5)


@given(colour=COLOURS, factor=st.floats(0.0, 2.0))
def test_brightness_contrast_saturation_blend_as_specified(colour, factor):
    np.testing.assert_allclose(adjust(colour, "brightness", factor), np.clip(colour * factor, 0, 255), rtol=1e-5)
    mean = grey(colour).mean()
    np.testing.assert_allclose(
        adjust(colour, "contrast", factor), np.clip(factor * colour + (1 - factor) * mean, 0, 255), atol=1e-3
    )
    np.testing.assert_allclose(
        adjust(colour, "saturation", factor), np.clip(factor * colour + (1 - factor) * grey(colour), 0, 255), atol=1e-3
    )
    flat = adjust(colour, "saturation", 0.0)  # no saturation: every channel is the point's grey
    np.testing.assert_allclose(flat, np.broadcast_to(grey(colour), flat.shape), atol=1e-3)


@given(seed=seeds(), p=st.sampled_from((0.0, 0.5, 1.0)), hue=st.sampled_from((0.0, 0.02)))
def test_colour_jitter_draws_within_its_ranges(seed, p, hue):
    jitter = ColourJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=hue, p=p)
    ops = jitter.draw(np.random.default_rng(seed))
    names = [op for op, _ in ops]
    assert len(set(names)) == len(names) and set(names) <= set(JITTER_OPS)
    assert (p == 0.0 and not ops) or p > 0
    assert (p == 1.0 and len(ops) == (4 if hue else 3)) or p < 1
    bounds = {"brightness": (0.6, 1.4), "contrast": (0.6, 1.4), "saturation": (0.8, 1.2), "hue": (-0.02, 0.02)}
    assert all(bounds[op][0] <= f <= bounds[op][1] for op, f in ops)


@given(seed=seeds(), colour=COLOURS)
def test_chromatic_translation_shifts_each_channel_within_the_ratio(seed, colour):
    offset = ChromaticTranslation(p=1.0, ratio=0.05).draw(np.random.default_rng(seed))
    assert offset.shape == (3,) and np.abs(offset).max() <= 0.05 * 255
    out = apply_colour(colour, [], offset)
    np.testing.assert_allclose(out * 255, np.clip(colour + offset[:, None], 0, 255), atol=1e-3)
    assert ChromaticTranslation(p=0.0).draw(np.random.default_rng(seed)) is None


# ------------------------------------------------------------------------------------------ real data


@pytest.mark.slow
def test_a_real_scannet_scene(shared_data):
    scan = shared_data / "scannet-mini" / "train" / "scene0000_00"
    rng = np.random.default_rng(0)
    cloud = PointCloud(read_scan(scan, fields=("color",)), {"scene": scan.name})
    cloud = GridSample(grid_size=0.02, mode="train").apply(EstimateNormals().apply(cloud, rng), rng)
    cloud.materialise()
    sample = MultiViewGenerator().run(rng, cloud=cloud)["views"]
    budget = min(65536, len(cloud))
    sizes = [len(v["coord"]) for v in all_views(sample)]
    assert all(math.floor(0.4 * budget) <= k <= budget for k in sizes[:2])
    assert all(math.floor(0.1 * budget) <= k <= math.floor(0.4 * budget) for k in sizes[2:])
    for view in all_views(sample):
        assert row_in(view["origin_coord"], cloud["coord"]).all()
        extent = view["coord"].max(axis=0) - view["coord"].min(axis=0)
        assert (extent < 15).all() and extent[2] > 1.0  # a room-sized piece, not squashed by the elastic field
        assert np.isfinite(view["feat"]).all()
    assert np.isin(
        sample.meta["centres"][1:], np.flatnonzero(row_in(cloud["coord"], sample.global_views[0]["origin_coord"]))
    ).all()
