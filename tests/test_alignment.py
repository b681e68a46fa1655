"""The alignment chain: RandomDownsample, radius outliers by spacing, AlignZUp, AlignScale, NormalizeSpacing,
NormalizeDensity — property tests on generated clouds, synthetic rooms and the scannet-mini scans."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.spatial import ConvexHull, cKDTree
from scipy.spatial.distance import cdist
from scipy.spatial.transform import Rotation

from pcdag.datasets.synthetic import make_room
from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.graphs.params import ParamError
from pcdag.nodes.alignment.align_scale import SCANNET_EDGES, SCANNET_WEIGHTS, AlignScale
from pcdag.nodes.alignment.align_z_up import AlignZUp
from pcdag.nodes.alignment.normalize_density import NormalizeDensity, hull_volume
from pcdag.nodes.alignment.normalize_spacing import NormalizeSpacing
from pcdag.nodes.alignment.parts.planes import voxel_means
from pcdag.nodes.alignment.random_downsample import RandomDownsample
from pcdag.nodes.geometry.outliers import RadiusOutlierRemoval
from pcdag.nodes.sources.scannet import ScanNetSource
from pcdag.ops.kdtree import median_spacing, spacing_sample
from pcdag.testing import point_clouds, seeds

FLOOR = 1  # ScanNet-20 "floor"
ROTATIONS = st.integers(0, 2**31 - 1).map(lambda s: Rotation.random(random_state=s).as_matrix())
ALIGN_KEYS = {"plane_found", "fallback", "planes", "chosen", "votes", "flipped", "normal", "threshold", "voxel"}


def report(cloud: PointCloud, node: str) -> dict:
    return cloud.meta["report"][node]


def with_rows(cloud: PointCloud) -> PointCloud:
    cloud["row"] = np.arange(len(cloud))
    return cloud


def transformed(cloud: PointCloud, rot: np.ndarray, scale: float) -> PointCloud:
    """The cloud rotated by ``rot`` and scaled about the origin (normals rotated too)."""
    cloud["coord"] = (cloud["coord"].astype(np.float64) @ rot.T * scale).astype(np.float32)
    if "normal" in cloud:
        cloud["normal"] = (cloud["normal"].astype(np.float64) @ rot.T).astype(np.float32)
    return cloud


def rigid_fit(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    """Rotation R (det may be -1) and max residual of the best fit b ≈ a R^T + t (Kabsch)."""
    a0, b0 = a - a.mean(axis=0), b - b.mean(axis=0)
    u, _, vt = np.linalg.svd(a0.T @ b0)
    rot = (u @ vt).T
    return rot, float(np.abs(a0 @ rot.T - b0).max())


def dominant_plane(points: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference fit: RANSAC (2000 draws) then SVD on the inliers; (unit normal, inlier mask)."""
    rng = np.random.default_rng(0)
    tri = points[rng.integers(0, len(points), (2000, 3))]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(normal, axis=1)
    normal, tri = normal[length > 1e-12] / length[length > 1e-12, None], tri[length > 1e-12]
    count = (np.abs((points[:, None, :] - tri[None, :, 0]) * normal[None]).sum(-1) <= threshold).sum(0)
    best = int(np.argmax(count))
    inliers = np.abs((points - tri[best, 0]) @ normal[best]) <= threshold
    chosen = points[inliers]
    return np.linalg.svd(chosen - chosen.mean(axis=0), full_matrices=False)[2][2], inliers


def tilt_deg(normal: np.ndarray) -> float:
    return math.degrees(math.acos(min(1.0, abs(float(normal[2])))))


# ------------------------------------------------------------------------------------------ RandomDownsample


@given(cloud=point_clouds(fields=("color",)), max_points=st.integers(1, 500), seed=seeds())
def test_random_downsample_keeps_min_n_max_points_in_order(cloud, max_points, seed):
    n, color = len(cloud), cloud["color"].copy()
    out = RandomDownsample(max_points=max_points).apply(with_rows(cloud), np.random.default_rng(seed))
    rows = out["row"]
    assert len(out) == min(n, max_points)
    assert np.all(np.diff(rows) > 0)  # distinct input points, input order kept
    np.testing.assert_array_equal(out["color"], color[rows])
    assert report(out, "RandomDownsample") == {"n_in": n, "n_out": len(out)}


def test_random_downsample_draws_every_point_equally_often():
    rng, hits = np.random.default_rng(0), np.zeros(20)
    for _ in range(4000):
        cloud = with_rows(PointCloud({"coord": np.zeros((20, 3), np.float32)}))
        hits[RandomDownsample(max_points=5).apply(cloud, rng)["row"]] += 1
    np.testing.assert_allclose(hits / 4000, 0.25, atol=0.035)  # 5 standard errors


def test_alignment_nodes_refuse_an_empty_cloud():
    for node in (RandomDownsample(), AlignZUp(), AlignScale(), NormalizeSpacing(), NormalizeDensity()):
        empty = PointCloud({"coord": np.zeros((0, 3), np.float32)}, {"scene": "void"})
        with pytest.raises(CloudError, match=rf"{node.type_name()}.*'void'.*no points"):
            node.apply(empty, np.random.default_rng(0))


# ------------------------------------------------------------------------------ radius outliers by spacing


@given(cloud=point_clouds(min_points=2, fields=(), scale=0.5), factor=st.floats(0.5, 20.0), m=st.integers(1, 4))
def test_radius_by_spacing_uses_the_median_nearest_neighbour_distance(cloud, factor, m):
    dist = cdist(cloud["coord"].astype(np.float64), cloud["coord"].astype(np.float64))  # [N, N]
    np.fill_diagonal(dist, np.inf)
    spacing = float(np.median(dist.min(axis=1)))
    radius = factor * spacing
    inner, outer = (dist <= radius * (1 - 1e-9)).sum(1), (dist <= radius * (1 + 1e-9)).sum(1)
    node = RadiusOutlierRemoval(spacing_factor=factor, min_neighbours=m)
    if not (outer >= m).any():
        with pytest.raises(CloudError, match=rf"RadiusOutlierRemoval\(spacing_factor={factor}"):
            node.apply(cloud, np.random.default_rng(0))
        return
    if not (inner >= m).any():
        return  # whether anything survives hangs on a float tie
    out = node.apply(with_rows(cloud), np.random.default_rng(0))
    facts = report(out, "RadiusOutlierRemoval")
    assert facts["spacing"] == pytest.approx(spacing, rel=1e-9, abs=1e-12)
    assert facts["radius"] == pytest.approx(radius, rel=1e-9, abs=1e-12)
    kept, sure = np.isin(np.arange(len(dist)), out["row"]), (inner >= m) == (outer >= m)
    np.testing.assert_array_equal(kept[sure], (inner >= m)[sure])
    assert facts["n_in"] == len(dist) and facts["n_out"] == len(out)


@given(cloud=point_clouds(min_points=30, max_points=200, fields=()), size=st.integers(2, 29), seed=seeds())
def test_spacing_of_a_large_cloud_is_measured_within_a_random_subset(cloud, size, seed):
    coord = cloud["coord"].astype(np.float64)
    sample = spacing_sample(coord, np.random.default_rng(seed), size)  # the subset median_spacing draws
    assert len(sample) == size and len(np.unique(sample, axis=0)) == len(np.unique(sample, axis=0))
    dist = cdist(sample, sample)
    np.fill_diagonal(dist, np.inf)
    assert median_spacing(coord, np.random.default_rng(seed), size) == pytest.approx(np.median(dist.min(1)))
    node = RadiusOutlierRemoval(spacing_factor=3, spacing_points=size)
    try:
        out = node.apply(cloud, np.random.default_rng(seed))
    except CloudError:
        return
    assert report(out, "RadiusOutlierRemoval")["spacing"] == pytest.approx(np.median(dist.min(1)))


@pytest.mark.parametrize("bad", [0, -1.0, True, "10"])
def test_spacing_factor_must_be_a_positive_number(bad):
    with pytest.raises(ParamError, match="RadiusOutlierRemoval: spacing_factor"):
        RadiusOutlierRemoval(spacing_factor=bad)


# ------------------------------------------------------------------------------------------------ AlignZUp


@given(cloud=point_clouds(fields=()), voxel=st.sampled_from((1e-9, 0.05, 0.5, 3.0)))
def test_voxel_means_average_the_points_of_each_occupied_voxel(cloud, voxel):
    coord = cloud["coord"].astype(np.float64)
    groups: dict[tuple, list] = {}
    for point, cell in zip(coord, np.floor(coord / voxel).astype(np.int64).tolist(), strict=True):
        groups.setdefault(tuple(cell), []).append(point)  # voxel 1e-9 m: a vast grid, the row-grouping path
    expected = np.array([np.mean(groups[c], axis=0) for c in sorted(groups)])
    np.testing.assert_allclose(voxel_means(coord, voxel), expected, rtol=1e-12, atol=1e-12)


def rotated_room(seed: int, rot: np.ndarray, scale: float, n_points: int = 12_000) -> PointCloud:
    room = make_room(np.random.default_rng(seed), n_points=n_points)
    return transformed(PointCloud(room, {"scene": f"room{seed}"}), rot, scale)


def check_rigid(before: np.ndarray, cloud: PointCloud, scale: float) -> np.ndarray:
    """The output is a proper rotation + translation of the input; returns the rotation."""
    rot, residual = rigid_fit(before, cloud["coord"].astype(np.float64))
    assert np.linalg.det(rot) > 0 and residual < 1e-4 * max(scale, 1.0)
    return rot


@settings(max_examples=25)
@given(seed=st.integers(0, 10_000), rot=ROTATIONS, scale=st.floats(0.3, 3.0))
def test_align_z_up_on_synthetic_rooms(seed, rot, scale):
    cloud = rotated_room(seed, rot, scale)
    before, normal_in = cloud["coord"].astype(np.float64), cloud["normal"].copy()
    out = AlignZUp().apply(cloud, np.random.default_rng(seed))
    facts = report(out, "AlignZUp")
    assert set(facts) >= ALIGN_KEYS and facts["plane_found"] and facts["fallback"] is None
    turn = check_rigid(before, out, scale)
    np.testing.assert_allclose(turn @ facts["normal"], [0, 0, 1], atol=1e-4)  # the chosen normal ends on +z
    np.testing.assert_allclose(out["normal"], normal_in @ turn.T, atol=1e-5)  # normals turn with the points
    assert facts["flipped"] == (facts["votes"] >= 1.5)
    if abs(float(np.dot(facts["normal"], rot[:, 2]))) > math.cos(math.radians(5)):  # the floor was chosen
        floor = out["coord"][out["segment"] == FLOOR].astype(np.float64)
        assert tilt_deg(dominant_plane(floor, 0.02 * scale)[0]) < 1.0
        # floor at z = 0: the spec puts its lowest inlier there, up to one RANSAC threshold below its middle
        assert abs(np.median(floor[:, 2])) < 0.02 * scale + facts["threshold"]
        assert np.median(out["normal"][out["segment"] == FLOOR][:, 2]) > 0.999  # facing up: the room is above it


@pytest.fixture(scope="module")
def scannet_scenes(shared_data: Path) -> list[tuple[str, PointCloud]]:
    """The 17 scannet-mini scans with segment labels, each thinned to 20,000 random points for speed."""
    source = ScanNetSource(root=str(shared_data / "scannet-mini"), splits=["train", "val"], fields=["segment"])
    rng, scenes = np.random.default_rng(0), []
    for ref in source.scenes():
        cloud = source.load(ref)
        scenes.append((ref.id, cloud.select(np.sort(rng.choice(len(cloud), 20_000, replace=False)))))
    return scenes


@settings(max_examples=20)
@given(data=st.data(), rot=ROTATIONS, scale=st.floats(0.3, 3.0), seed=seeds())
def test_align_z_up_is_a_rigid_motion_taking_the_chosen_normal_to_z(scannet_scenes, data, rot, scale, seed):
    _, scene = data.draw(st.sampled_from(scannet_scenes))
    cloud = transformed(scene.copy(), rot, scale)
    before = cloud["coord"].astype(np.float64)
    out = AlignZUp().apply(cloud, np.random.default_rng(seed))
    facts = report(out, "AlignZUp")
    turn = check_rigid(before, out, scale)
    np.testing.assert_allclose(turn @ facts["normal"], [0, 0, 1], atol=1e-4)
    assert facts["plane_found"] and 1 <= len(facts["planes"]) <= AlignZUp().params.max_planes
    assert facts["chosen"] == int(np.argmax([p["score"] for p in facts["planes"]]))
    assert 0.001 <= facts["threshold"] <= 0.1 and 0.01 <= facts["voxel"] <= 0.2


def test_align_z_up_levels_the_floor_of_most_scannet_scans(scannet_scenes):
    # Each scan under its own random rotation (any axis and angle) and scale in [0.3, 3]. The floor is the
    # dominant plane of the floor-labelled points (ScanNet floors are uneven and their labels spill onto other
    # things, so a plain fit to all of them can be 15 degrees off). Strict: within 2 degrees of +z, the scene above
    # it, its median within 2 cm of z = 0 -- plus the RANSAC threshold, since the spec puts the floor's *lowest
    # inlier* at z = 0, about one threshold below the floor's middle. "Floor chosen": within 10 degrees, 10 cm.
    # Measured over seeds 0-3 (strict, chosen): defaults (up_prior extent, 3 planes) 14-15 / 14-16; the released
    # code's settings (input_z, 2 planes) 10-12 / 10-12 -- with input_z a random rotation makes its 500 |n_z| cue
    # meaningless and walls with more inliers win. The remaining misses are table or bed tops, or floors tilted
    # 2-8 degrees where the RANSAC threshold (1-2 cm) is thinner than the floor's unevenness.
    rng, strict, chosen, lines = np.random.default_rng(0), 0, 0, []
    for scene_id, scene in scannet_scenes:
        rot, scale = Rotation.random(random_state=int(rng.integers(2**31))).as_matrix(), float(rng.uniform(0.3, 3))
        out = AlignZUp().apply(transformed(scene.copy(), rot, scale), np.random.default_rng(0))
        floor = out["coord"][out["segment"] == FLOOR].astype(np.float64)
        normal, inliers = dominant_plane(floor, 0.02 * scale)
        tilt, height = tilt_deg(normal), float(np.median(floor[inliers, 2]))
        above = float(np.median(out["coord"][:, 2])) > height
        slack = 0.02 * scale + report(out, "AlignZUp")["threshold"]
        strict += tilt <= 2.0 and abs(height) <= slack and above
        chosen += tilt <= 10.0 and abs(height) <= 0.1 * scale and above
        lines.append(f"{scene_id}: tilt {tilt:5.1f} deg, floor z {height / scale:+.3f} m (scaled back), above {above}")
    print(f"\nAlignZUp on scannet-mini: {strict}/17 strict, {chosen}/17 floor chosen\n" + "\n".join(lines))
    assert strict >= 13 and chosen >= 13, "\n".join(lines)


def upside_down(cloud: PointCloud) -> PointCloud:
    return transformed(cloud, Rotation.from_euler("x", 180, degrees=True).as_matrix(), 1.0)


def test_an_upside_down_room_is_turned_back_when_its_floor_wins():
    cloud = upside_down(PointCloud(make_room(np.random.default_rng(1), n_points=12_000), {"scene": "r"}))
    out = AlignZUp().apply(cloud, np.random.default_rng(0))
    facts = report(out, "AlignZUp")
    # the floor plane's SVD normal has an arbitrary sign; the votes point it into the room (facing -z upside down)
    assert facts["normal"][2] < -0.999
    assert facts["flipped"] == (facts["votes"] >= 1.5)
    floor = out["segment"] == FLOOR
    assert np.median(out["normal"][floor][:, 2]) > 0.999 and abs(np.median(out["coord"][floor, 2])) < 0.02
    assert np.median(out["coord"][~floor, 2]) > 0.2  # walls and furniture above the floor again


def test_a_room_whose_ceiling_wins_is_kept_upside_down():
    # A room with a ceiling and only a strip of floor: the ceiling is the best plane, its normal is voted toward
    # the room (downward), and rotating it onto +z turns the room over. Such scenes are kept, as in the paper.
    room = make_room(np.random.default_rng(2), n_points=12_000, n_objects=(0, 0))
    height = float(room["coord"][:, 2].max())
    floor = room["segment"] == FLOOR
    strip = floor & (np.abs(room["coord"][:, 0]) < 0.3)
    keep = ~floor | strip
    ceiling = room["coord"][floor].copy()
    ceiling[:, 2] = height
    coord = np.concatenate([room["coord"][keep], ceiling])
    label = np.concatenate([room["segment"][keep], np.full(len(ceiling), 99, np.int16)])
    cloud = PointCloud({"coord": coord, "segment": label}, {"scene": "ceiling"})
    out = AlignZUp().apply(cloud, np.random.default_rng(0))
    facts = report(out, "AlignZUp")
    assert facts["normal"][2] < -0.999  # the ceiling's normal, pointing into the room
    assert np.median(out["coord"][label == 99, 2]) < 0.02  # the ceiling is now the bottom, at z = 0
    assert np.median(out["coord"][label == FLOOR, 2]) > 0.9 * height  # the floor strip is on top


def test_align_z_up_falls_back_to_pca_without_a_plane():
    rng = np.random.default_rng(0)
    rot = Rotation.random(random_state=3).as_matrix()
    blob = (rng.normal(size=(300, 3)) * [30.0, 20.0, 5.0]) @ rot.T  # no plane of 50 points; thinnest along rot z
    out = AlignZUp().apply(PointCloud({"coord": blob.astype(np.float32)}), rng)
    facts = report(out, "AlignZUp")
    assert facts["plane_found"] is False and facts["fallback"] == "pca" and facts["planes"] == []
    assert tilt_deg(np.asarray(facts["normal"]) @ rot) < 5.0  # the least-variance axis is the blob's thin axis
    coord = out["coord"].astype(np.float64)
    axes = np.linalg.eigh(np.cov(coord.T))[1]
    assert abs(axes[2, 0]) > 0.999  # thinnest direction now along z
    assert -0.35 < coord[:, 2].min() <= 1e-5  # lowest voxel mean at z = 0 (points lie within a voxel of their mean)


# ----------------------------------------------------------------------------------------------- AlignScale


@given(cloud=point_clouds(min_points=2, fields=("normal",)), seed=seeds())
def test_align_scale_reference_multiplies_by_1_753(cloud, seed):
    coord, normal = cloud["coord"].astype(np.float64), cloud["normal"].copy()
    out = AlignScale(semantics="reference").apply(cloud, np.random.default_rng(seed))
    np.testing.assert_array_equal(out["coord"], (coord * 1.753).astype(np.float32))
    np.testing.assert_array_equal(out["normal"], normal)
    facts = report(out, "AlignScale")
    assert facts["factor"] == 1.753 and facts["semantics"] == "reference"
    assert facts["diagonal_after"] == pytest.approx(1.753 * facts["diagonal_before"], rel=1e-5, abs=1e-6)


@given(cloud=point_clouds(min_points=2, fields=()), seed=seeds())
def test_align_scale_paper_scales_the_bbox_diagonal_to_the_drawn_target(cloud, seed):
    coord = cloud["coord"].astype(np.float64)
    diagonal = float(np.linalg.norm(coord.max(0) - coord.min(0)))
    if diagonal == 0:
        with pytest.raises(CloudError, match="AlignScale.*zero-size"):
            AlignScale().apply(cloud, np.random.default_rng(seed))
        return
    assume(diagonal > 1e-2 * (1 + np.abs(coord).max()))  # float32 keeps the scaled diagonal to 1e-5
    out = AlignScale().apply(cloud, np.random.default_rng(seed))
    facts = report(out, "AlignScale")
    assert SCANNET_EDGES[0] <= facts["target"] <= SCANNET_EDGES[-1]
    assert facts["diagonal_after"] == pytest.approx(facts["target"], rel=1e-5)
    np.testing.assert_allclose(out["coord"], coord * facts["factor"], rtol=1e-6, atol=1e-6 * facts["target"])


def test_align_scale_paper_draws_follow_the_weighted_bins():
    rng, cloud = np.random.default_rng(0), np.array([[0, 0, 0], [1, 1, 1]], np.float32)
    targets = np.array(
        [
            report(AlignScale().apply(PointCloud({"coord": cloud.copy()}), rng), "AlignScale")["target"]
            for _ in range(20_000)
        ]
    )
    assert targets.min() >= 2.835 and targets.max() <= 15.189 <= 20.04  # inside ScanNet's range [2.835, 20.04]
    share = np.histogram(targets, bins=SCANNET_EDGES)[0] / len(targets)
    np.testing.assert_allclose(share, SCANNET_WEIGHTS, atol=0.015)
    assert np.median(targets) == pytest.approx(7.791 + 0.15 / 0.30 * (9.365 - 7.791), abs=0.08)  # 8.578
    # uniform inside a bin: the largest bin's draws have the bin's mean
    inside = targets[(targets >= 7.791) & (targets < 9.365)]
    assert inside.mean() == pytest.approx((7.791 + 9.365) / 2, abs=0.03)


def test_align_scale_records_where_the_size_came_from():
    rng = np.random.default_rng(0)
    room = rng.uniform(0, 3, (200, 3)).astype(np.float32)
    drawn = AlignScale().apply(PointCloud({"coord": room.copy()}, {"scale": {"units": "arbitrary"}}), rng)
    scale = drawn.meta["scale"]
    assert scale["units"] == "drawn" and scale["before"] == {"units": "arbitrary"}
    assert scale["factor"] == report(drawn, "AlignScale")["factor"] and scale["diagonal"] == pytest.approx(
        float(np.linalg.norm(np.ptp(drawn["coord"], axis=0))), rel=1e-5
    )
    metric = AlignScale().apply(PointCloud({"coord": room.copy()}, {"scale": {"units": "metric"}}), rng)
    np.testing.assert_array_equal(metric["coord"], room)  # metres from depth or known cameras are kept
    assert metric.meta["scale"] == {"units": "metric"} and report(metric, "AlignScale")["kept"] == "metric"
    forced = AlignScale(keep_metric=False).apply(
        PointCloud({"coord": room.copy()}, {"scale": {"units": "metric"}}), rng
    )
    assert forced.meta["scale"]["units"] == "drawn" and forced.meta["scale"]["before"]["units"] == "metric"
    ref = AlignScale(semantics="reference").apply(PointCloud({"coord": room.copy()}), rng)
    assert ref.meta["scale"] == {"units": "scaled", "factor": 1.753, "before": {"units": "unrecorded"}}


def test_align_scale_draw_depends_on_the_scene_not_only_on_the_stream():
    """Scenes with the same seed and id (the first room of every video called `tour`) used to get one diagonal."""
    rooms = [np.random.default_rng(i).uniform(0, 1 + i, (100, 3)).astype(np.float32) for i in range(8)]
    targets = [report(AlignScale().apply(PointCloud({"coord": r.copy()}), np.random.default_rng(0)), "AlignScale")
               ["target"] for r in rooms]  # fmt: skip
    assert len(set(targets)) == len(rooms)
    again = AlignScale().apply(PointCloud({"coord": rooms[0].copy()}), np.random.default_rng(0))
    assert report(again, "AlignScale")["target"] == targets[0]  # same scene, same seed: same draw


def test_align_scale_refuses_a_point_and_inconsistent_bins():
    point = PointCloud({"coord": np.ones((3, 3), np.float32)}, {"scene": "dot"})
    with pytest.raises(CloudError, match="AlignScale.*'dot'.*zero-size"):
        AlignScale().apply(point, np.random.default_rng(0))
    assert len(AlignScale(semantics="reference").apply(point, np.random.default_rng(0))) == 3
    with pytest.raises(ParamError, match="AlignScale: weights"):
        AlignScale(weights=[1.0, 2.0])
    with pytest.raises(ParamError, match="strictly increasing"):
        AlignScale(edges=[3.0, 2.0], weights=[1.0])


# ----------------------------------------------------------------------------------------- NormalizeSpacing


def mean_nn(coord: np.ndarray) -> float:
    dist, _ = cKDTree(coord.astype(np.float64)).query(coord.astype(np.float64), k=2)
    return float(dist[:, 1].mean())


def surface(n: int, seed: int, layout: str) -> np.ndarray:
    """n points on a noisy unit square (2-D), or in a unit cube (3-D)."""
    rng = np.random.default_rng(seed)
    if layout == "cube":
        return rng.random((n, 3)).astype(np.float32)
    return np.c_[rng.random((n, 2)), rng.normal(0, 0.002, n)].astype(np.float32)


@settings(max_examples=30)
@given(n=st.integers(3000, 8000), seed=seeds(), ratio=st.floats(0.5, 2.5), layout=st.sampled_from(("plane", "cube")))
def test_normalize_spacing_thins_to_the_target_and_never_adds(n, seed, ratio, layout):
    coord = surface(n, seed, layout)
    before = mean_nn(coord)
    node = NormalizeSpacing(target=before * ratio)
    out = node.apply(with_rows(PointCloud({"coord": coord})), np.random.default_rng(seed))
    facts, rows = report(out, "NormalizeSpacing"), out["row"]
    assert len(out) <= n and len(np.unique(rows)) == len(rows)  # a subset (in kd-tree leaf order)
    np.testing.assert_array_equal(out["coord"], coord[rows])
    step = np.linalg.norm(np.diff(out["coord"], axis=0), axis=1).mean()  # consecutive points are near each other
    assert step < 0.5 * np.linalg.norm(np.diff(out["coord"][np.argsort(rows)], axis=0), axis=1).mean()
    assert facts["spacing_before"] == pytest.approx(before)
    if ratio <= 1 / 0.97:  # already sparse enough
        assert len(out) == n and facts["iterations"] == 0
        return
    after = mean_nn(out["coord"])
    assert facts["within_tolerance"], facts
    assert 0.97 * node.params.target <= after <= 1.03 * node.params.target
    assert facts["spacing_after"] == pytest.approx(after) and facts["n_out"] == len(out)


def test_normalize_spacing_leaves_tiny_and_duplicate_clouds_alone():
    for coord in (np.zeros((2, 3)), np.zeros((50, 3))):
        out = NormalizeSpacing().apply(PointCloud({"coord": coord.astype(np.float32)}), np.random.default_rng(0))
        assert len(out) >= 2  # all-equal points can never reach the target: at most thinned to 2
        assert report(out, "NormalizeSpacing")["within_tolerance"] is False


# ----------------------------------------------------------------------------------------- NormalizeDensity


@settings(max_examples=30)
@given(
    n=st.integers(2000, 6000),
    seed=seeds(),
    size=st.tuples(*[st.floats(0.5, 3.0)] * 3),
    share=st.floats(0.02, 1.5),
    min_points=st.integers(1, 3000),
)
def test_normalize_density_thins_at_most_30_percent_per_step_to_the_reference(n, seed, size, share, min_points):
    coord = (np.random.default_rng(seed).random((n, 3)) * size).astype(np.float32)
    volume = ConvexHull(coord.astype(np.float64)).volume
    ref = share * n / volume  # reference density: `share` of the current one
    out = NormalizeDensity(reference_density=ref, min_points=min_points).apply(
        with_rows(PointCloud({"coord": coord})), np.random.default_rng(seed)
    )
    facts, rows = report(out, "NormalizeDensity"), out["row"]
    assert np.all(np.diff(rows) > 0) and len(out) == facts["n_out"] <= n
    if n <= max(min_points, math.ceil(ref * volume)):
        assert len(out) == n and facts["steps"] == 0
        assert facts["below_reference"] == (n / volume < ref)
        return
    wanted = max(min_points, math.ceil(ref * hull_volume(out["coord"].astype(np.float64))))
    if facts["steps"] < NormalizeDensity().params.max_steps:
        assert len(out) == wanted  # thinned exactly to the reference density of its own hull (or min_points)
    else:
        assert len(out) >= wanted  # out of steps: not below it (reaching it exactly on the last step is fine)
    assert len(out) >= n * 0.7 ** facts["steps"] - 1  # no step cut more than 30 %
    assert facts["steps"] >= math.log(len(out) / n) / math.log(0.7) - 1e-9
    assert facts["density_after"] is None or facts["density_after"] >= ref * (1 - 1e-9)
    assert not facts["below_reference"]


def test_normalize_density_leaves_a_flat_scene_alone():
    flat = PointCloud({"coord": surface(5000, 0, "plane") * [1, 1, 0]})
    out = NormalizeDensity(min_points=10).apply(flat, np.random.default_rng(0))
    facts = report(out, "NormalizeDensity")
    assert len(out) == 5000 and facts["hull_volume_before"] == 0 and facts["density_before"] is None


def test_reference_up_prior_levels_upright_scans(scannet_scenes):
    # The released code's settings assume a roughly upright input; on the scans as stored (z up) they find the
    # floor, so the difference from the default is only its robustness to rotated input.
    ok = 0
    for _, scene in scannet_scenes[:6]:
        out = AlignZUp(up_prior="input_z", max_planes=2).apply(scene.copy(), np.random.default_rng(0))
        floor = out["coord"][out["segment"] == FLOOR].astype(np.float64)
        normal, _ = dominant_plane(floor, 0.02)
        ok += tilt_deg(normal) <= 2.0
    assert ok >= 5


def test_reconstruct_says_when_its_units_are_metres():
    from pcdag.graphs.frames import Frames
    from pcdag.nodes.reconstruction.reconstruct import Reconstruct, scale_provenance

    posed = Frames(np.zeros((2, 8, 8, 3), np.uint8), ["0", "1"], poses=np.stack([np.eye(4, dtype=np.float32)] * 2))
    plain = Frames(np.zeros((2, 8, 8, 3), np.uint8), ["0", "1"])
    assert scale_provenance(Reconstruct(backend="rgbd").params, posed)["units"] == "metric"
    assert scale_provenance(Reconstruct(backend="sfm", use_known_cameras=True).params, posed) == {
        "units": "metric",
        "from": "known camera poses",
    }
    assert scale_provenance(Reconstruct(backend="sfm", use_known_cameras=True).params, plain)["units"] == "arbitrary"
    assert scale_provenance(Reconstruct(backend="sfm", use_known_cameras=False).params, posed)["units"] == "arbitrary"
