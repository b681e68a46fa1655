"""Feature extraction for new data: readers, one-tile and tiled extraction, blending weights, PCA colours,
pictures, outputs and the command line."""

from __future__ import annotations

import argparse

import matplotlib.image
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from plyfile import PlyData

from pcdag.datasets.ply import write_ply
from pcdag.graphs.batch import collate_points
from pcdag.graphs.cloud import PointCloud
from pcdag.nodes.backbones.ptv3.model import PointTransformerV3Module, PTv3Config
from pcdag.nodes.backbones.ptv3.pointcept import export_backbone
from pcdag.nodes.views.parts.eval_view import eval_view
from pcdag.ops.grid import grid_eval_rows
from pcdag.ops.normals import estimate_normals, orient_toward
from pcdag.ops.pca import pca_colours, pca_fit, render_scene
from pcdag.runtime import extract
from pcdag.runtime.backbone import load_backbone
from pcdag.runtime.extract import (
    blend_plan,
    extract_features,
    extract_with_tiles,
    plan_tiles,
    read_points,
    tile_members,
    tile_weight,
    write_outputs,
)

GRID = 0.05


def room(n: int, size: tuple[float, float], seed: int = 0, normals: bool = True) -> PointCloud:
    """``n`` points on the floor and four 1.5 m walls of a ``size`` room, with random colours (and exact normals)."""
    rng = np.random.default_rng(seed)
    sx, sy = size
    surface = rng.integers(0, 5, n)  # 0 floor, 1..4 walls
    coord = np.column_stack([rng.uniform(0, sx, n), rng.uniform(0, sy, n), rng.uniform(0, 1.5, n)])  # [n, 3]
    normal = np.zeros((n, 3))
    coord[surface == 0, 2], normal[surface == 0] = 0.0, (0, 0, 1)
    coord[surface == 1, 0], normal[surface == 1] = 0.0, (1, 0, 0)
    coord[surface == 2, 0], normal[surface == 2] = sx, (-1, 0, 0)
    coord[surface == 3, 1], normal[surface == 3] = 0.0, (0, 1, 0)
    coord[surface == 4, 1], normal[surface == 4] = sy, (0, -1, 0)
    fields = {"coord": coord.astype(np.float32), "color": rng.integers(0, 256, (n, 3), dtype=np.uint8)}
    if normals:
        fields["normal"] = normal.astype(np.float32)
    return PointCloud(fields, {"scene": "room"})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """A tiny backbone with random weights, written as a Pointcept-style export."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    export_backbone(PointTransformerV3Module(PTv3Config.preset("tiny", upcast_level=0)), path)
    return path


@pytest.fixture(scope="module")
def module(checkpoint) -> PointTransformerV3Module:
    return load_backbone(checkpoint, features=True)[1].eval()


def direct(module: PointTransformerV3Module, cloud: PointCloud, seed: int = 0) -> np.ndarray:
    """Features of every point of ``cloud`` from one plain forward of its eval_view."""
    torch.manual_seed(seed)
    with torch.no_grad():
        encoded = module(collate_points([eval_view(cloud, where="test")]))
    return encoded.feat[encoded.extra["inverse"]].numpy()  # [n, C]


def sampled(cloud: PointCloud) -> tuple[PointCloud, np.ndarray]:
    rows, inverse = grid_eval_rows(cloud["coord"], GRID, "test")
    return PointCloud({k: cloud[k][rows] for k in list(cloud)}), inverse


# ----------------------------------------------------------------------------------------------------- readers


def test_read_ply_with_colours_and_normals(tmp_path) -> None:
    cloud = room(300, (2, 2))
    write_ply(tmp_path / "a.ply", {k: cloud[k] for k in ("coord", "color", "normal")})
    read = read_points(tmp_path / "a.ply")
    assert sorted(read.keys()) == ["color", "coord", "normal"]
    np.testing.assert_array_equal(read["coord"], cloud["coord"])
    np.testing.assert_array_equal(read["color"], cloud["color"])
    assert read["color"].dtype == np.uint8 and read.meta["scene"] == "a"


def test_read_ply_coordinates_only(tmp_path) -> None:
    coord = room(100, (2, 2))["coord"]
    write_ply(tmp_path / "b.ply", {"coord": coord})
    read = read_points(tmp_path / "b.ply")
    assert read.keys() == ["coord"]
    np.testing.assert_array_equal(read["coord"], coord)


def test_read_npy_coordinates_only_and_xyz_rgb(tmp_path) -> None:
    coord = np.random.default_rng(0).uniform(-3, 3, (200, 3))  # float64
    np.save(tmp_path / "c.npy", coord)
    read = read_points(tmp_path / "c.npy")
    assert read.keys() == ["coord"] and read["coord"].dtype == np.float32
    np.testing.assert_allclose(read["coord"], coord, rtol=1e-6)
    rgb = np.random.default_rng(1).integers(0, 256, (200, 3))
    np.save(tmp_path / "d.npy", np.hstack([coord, rgb]).astype(np.float32))
    np.testing.assert_array_equal(read_points(tmp_path / "d.npy")["color"], rgb)
    np.save(tmp_path / "e.npy", np.hstack([coord, rgb / 255.0]))  # colours in 0..1
    np.testing.assert_array_equal(read_points(tmp_path / "e.npy")["color"], rgb)


def test_read_npz_and_scene_folder(tmp_path) -> None:
    cloud = room(150, (2, 2))
    np.savez(tmp_path / "f.npz", coord=cloud["coord"], color=cloud["color"], normal=cloud["normal"], other=[1])
    read = read_points(tmp_path / "f.npz")
    assert sorted(read.keys()) == ["color", "coord", "normal"]
    np.testing.assert_array_equal(read["normal"], cloud["normal"])
    folder = tmp_path / "scene0001_00"
    folder.mkdir()
    np.save(folder / "coord.npy", cloud["coord"])
    np.save(folder / "color.npy", cloud["color"])
    read = read_points(folder)
    assert sorted(read.keys()) == ["color", "coord"] and read.meta["scene"] == "scene0001_00"
    np.testing.assert_array_equal(read["color"], cloud["color"])


def test_reader_errors_name_the_file(tmp_path) -> None:
    (tmp_path / "g.txt").write_text("1 2 3\n")
    with pytest.raises(ValueError, match=r"g\.txt.*unknown format"):
        read_points(tmp_path / "g.txt")
    with pytest.raises(FileNotFoundError, match="missing.ply"):
        read_points(tmp_path / "missing.ply")
    np.save(tmp_path / "h.npy", np.zeros((10, 4)))
    with pytest.raises(ValueError, match=r"h\.npy.*\[10, 4\]"):
        read_points(tmp_path / "h.npy")
    bad = np.zeros((10, 3))
    bad[3] = np.nan
    np.save(tmp_path / "i.npy", bad)
    with pytest.raises(ValueError, match=r"i\.npy.*1 points have NaN"):
        read_points(tmp_path / "i.npy")
    np.savez(tmp_path / "j.npz", points=np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"j\.npz.*no 'coord'.*points"):
        read_points(tmp_path / "j.npz")
    np.savez(tmp_path / "k.npz", coord=np.zeros((5, 3)), color=np.full((5, 3), 300.0))
    with pytest.raises(ValueError, match=r"k\.npz.*0\.\.255"):
        read_points(tmp_path / "k.npz")
    np.savez(tmp_path / "l.npz", coord=np.zeros((5, 3)), normal=np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"l\.npz.*normal.*\[4, 3\]"):
        read_points(tmp_path / "l.npz")
    (tmp_path / "empty_scene").mkdir()
    with pytest.raises(FileNotFoundError, match="empty_scene.*coord.npy"):
        read_points(tmp_path / "empty_scene")
    (tmp_path / "m.ply").write_bytes(b"not a ply at all")
    with pytest.raises(ValueError, match=r"m\.ply.*not a PLY"):
        read_points(tmp_path / "m.ply")


# ------------------------------------------------------------------------------------------------- extraction


def test_one_tile_equals_a_direct_forward(module) -> None:
    cloud = room(2500, (3, 3))
    features = extract_features(module, cloud, grid_size=GRID, max_points=100_000, progress=False)
    sample, inverse = sampled(cloud)
    assert features.shape == (2500, module.out_channels) and features.dtype == np.float32
    np.testing.assert_allclose(features, direct(module, sample)[inverse], rtol=1e-5, atol=1e-6)
    again = extract_features(module, cloud, grid_size=GRID, max_points=100_000, progress=False)
    np.testing.assert_array_equal(features, again)  # seeded: shuffle_orders draws the same orders
    other = extract_features(module, cloud, grid_size=GRID, max_points=100_000, seed=1, progress=False)
    assert not np.allclose(features, other)  # the seed does reach the order shuffle


def test_missing_normals_are_estimated_and_missing_colour_is_grey(module) -> None:
    full = room(1500, (3, 2), normals=False)
    cloud = PointCloud({"coord": full["coord"]})
    features = extract_features(module, cloud, grid_size=GRID, progress=False)
    sample, inverse = sampled(cloud)
    coord = sample["coord"]
    sample["normal"] = orient_toward(estimate_normals(coord, 32), coord, coord.astype(np.float64).mean(axis=0))
    np.testing.assert_allclose(features, direct(module, sample)[inverse], rtol=1e-5, atol=1e-6)


def test_tiles_cover_every_point_and_blend_their_forwards(module) -> None:
    cloud = room(4000, (8, 4))
    tile, overlap = 4.0, 1.0
    features, n_tiles = extract_with_tiles(
        module, cloud, GRID, max_points=1000, tile=tile, overlap=overlap, progress=False
    )
    assert features.shape == (4000, module.out_channels) and np.isfinite(features).all()
    assert (np.abs(features).sum(axis=1) > 0).all()
    sample, inverse = sampled(cloud)
    xy = sample["coord"][:, :2]
    boxes = plan_tiles(xy, tile, overlap)
    assert n_tiles == len(boxes) == 6
    ours = np.zeros((len(sample), features.shape[1]), dtype=np.float32)  # features of the sampled points
    ours[inverse] = features
    blend = np.zeros((len(sample), features.shape[1]))
    total, count = np.zeros(len(sample)), np.zeros(len(sample), dtype=int)
    per_tile = []
    for box in boxes:
        members = np.flatnonzero(tile_members(xy, box))
        feat = direct(module, PointCloud({k: sample[k][members] for k in list(sample)}))
        weight = tile_weight(xy[members], box, overlap)
        blend[members] += feat * weight[:, None]
        total[members] += weight
        count[members] += 1
        per_tile.append((members, feat))
    np.testing.assert_allclose(ours, blend / total[:, None], rtol=1e-4, atol=1e-5)
    assert (count == 1).any() and (count > 1).any()
    for members, feat in per_tile:  # a point in one tile only gets exactly that tile's features
        alone = count[members] == 1
        np.testing.assert_allclose(ours[members[alone]], feat[alone], rtol=1e-6, atol=1e-6)


def test_a_tile_larger_than_the_scene_is_no_tiling(module) -> None:
    cloud = room(1200, (3, 2))
    whole = extract_features(module, cloud, grid_size=GRID, max_points=100_000, progress=False)
    features, n_tiles = extract_with_tiles(module, cloud, GRID, max_points=10, tile=50.0, overlap=5.0, progress=False)
    assert n_tiles == 1
    np.testing.assert_array_equal(features, whole)


def test_bad_tiling_is_refused(module) -> None:
    with pytest.raises(ValueError, match="tile > overlap"):
        extract_features(module, room(200, (2, 2)), tile=1.0, overlap=1.0, progress=False)


# ---------------------------------------------------------------------------------------------- tile geometry

boxes_st = st.tuples(
    st.floats(-50, 50), st.floats(-50, 50), st.floats(0.5, 10), st.floats(0.05, 0.9)
)  # x0, y0, edge, overlap as a fraction of the edge


@settings(max_examples=50, deadline=None)
@given(box=boxes_st, u=hnp.arrays(np.float64, (40, 2), elements=st.floats(-0.5, 1.5)))
def test_tile_weight_falls_linearly_to_zero_at_the_border(box, u) -> None:
    x0, y0, edge, frac = box
    overlap = edge * frac / 2
    b = np.array([x0, y0, x0 + edge, y0 + edge])
    xy = np.array([x0, y0]) + u * edge  # [40, 2], some outside
    w = tile_weight(xy, b, overlap)
    inside = ((u >= 0) & (u <= 1)).all(axis=1)
    assert ((w >= 0) & (w <= 1)).all() and (w[~inside] == 0).all()
    d = np.min(np.concatenate([u * edge, (1 - u) * edge], axis=1), axis=1)  # distance to the nearest border
    deep = inside & (d >= overlap * (1 + 1e-9))
    assert np.allclose(w[deep], 1.0)
    ramp = inside & (d < overlap)
    assert np.allclose(w[ramp], d[ramp] / overlap, atol=1e-6)
    # along the inward normal from the middle of the left border, weight rises linearly 0 -> 1 then stays 1
    t = np.linspace(0, edge / 2, 11)
    line = np.column_stack([x0 + t, np.full_like(t, y0 + edge / 2)])
    assert np.allclose(tile_weight(line, b, overlap), np.minimum(t / overlap, 1.0), atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    xy=hnp.arrays(np.float64, st.tuples(st.integers(2, 60), st.just(2)), elements=st.floats(-20, 20)),
    edge=st.floats(0.5, 8),
    frac=st.floats(0.0, 0.9),
)
def test_tiles_cover_the_scene_and_shares_sum_to_one(xy, edge, frac) -> None:
    overlap = edge * frac
    boxes = plan_tiles(xy, edge, overlap)
    assert np.allclose(boxes[:, 2] - boxes[:, 0], edge) and np.allclose(boxes[:, 3] - boxes[:, 1], edge)
    for axis in (0, 1):
        starts = np.unique(np.round(boxes[:, axis], 9))
        assert np.allclose(np.diff(starts), edge - overlap)  # neighbours overlap by exactly `overlap`
        assert starts[0] <= xy[:, axis].min() and starts[-1] + edge >= xy[:, axis].max()
        if len(starts) > 1:  # and no tile more than needed along this axis
            assert starts[-2] + edge < xy[:, axis].max() or starts[1] > xy[:, axis].min()
    plan = blend_plan(xy, 1, edge, overlap)
    total, count = np.zeros(len(xy)), np.zeros(len(xy), dtype=int)
    for members, share in plan:
        np.add.at(total, members, share)
        np.add.at(count, members, 1)
    assert np.allclose(total, 1.0, atol=1e-5)
    for members, share in plan:
        assert (share[count[members] == 1] == 1.0).all()  # one tile: exactly its features


@settings(max_examples=40, deadline=None)
@given(edge=st.floats(1, 8), frac=st.floats(0.05, 0.5), s=st.floats(0, 1), extent=st.floats(10, 30))
def test_neighbouring_weights_cross_fade(edge, frac, s, extent) -> None:
    """In the overlap of two tiles, away from other borders, the two weights sum to 1."""
    overlap = edge * frac
    corners = np.array([[0.0, 0.0], [extent, edge * 0.5]])  # one row of tiles along x
    boxes = plan_tiles(corners, edge, overlap)
    first = boxes[np.argsort(boxes[:, 0])][:2]
    x = first[1, 0] + s * overlap  # inside the overlap of the first two tiles
    y = (first[0, 1] + first[0, 3]) / 2  # mid-height: far from the y borders
    point = np.array([[x, y]])
    assert tile_weight(point, first[0], overlap)[0] + tile_weight(point, first[1], overlap)[0] == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------------------- PCA


def planted(n: int = 2000, c: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features dominated by one latent variable ``t`` along a fixed direction, plus small noise."""
    rng = np.random.default_rng(seed)
    t = rng.normal(size=n)
    direction = rng.normal(size=c)
    return (t[:, None] * direction * 5 + rng.normal(size=(n, c)) * 0.1).astype(np.float32), t


def test_pca_colours_shape_dtype_and_the_leading_component() -> None:
    features, t = planted()
    rgb = pca_colours(features)
    assert rgb.shape == (2000, 3) and rgb.dtype == np.uint8
    assert abs(np.corrcoef(rgb[:, 0].astype(float), t)[0, 1]) > 0.95
    assert rgb[:, 0].min() == 0 and rgb[:, 0].max() == 255  # the robust range spans 0..255, beyond is clipped
    np.testing.assert_array_equal(pca_colours(torch.from_numpy(features)), rgb)  # torch in, same colours


def test_pca_is_deterministic_with_a_fixed_sign() -> None:
    features, _ = planted(seed=3)
    np.testing.assert_array_equal(pca_colours(features, sample=500, seed=4), pca_colours(features, sample=500, seed=4))
    basis = pca_fit(features)
    basis_neg = pca_fit(-features)
    np.testing.assert_allclose(basis.components, basis_neg.components, atol=1e-9)  # sign does not follow eigh
    perm = np.random.default_rng(0).permutation(len(features))
    assert np.abs(pca_colours(features[perm]).astype(int) - pca_colours(features)[perm]).max() <= 1


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), channels=st.integers(3, 10))
def test_each_axis_has_its_largest_loading_positive(seed, channels) -> None:
    features = np.random.default_rng(seed).normal(size=(200, channels)) * np.arange(1, channels + 1)
    components = pca_fit(features).components  # [3, C]
    picks = np.argmax(np.abs(components), axis=1)
    assert (components[np.arange(3), picks] > 0).all()
    np.testing.assert_allclose(np.linalg.norm(components, axis=1), 1.0)


@settings(max_examples=30, deadline=None)
@given(
    features=hnp.arrays(
        np.float32, st.tuples(st.integers(1, 40), st.integers(1, 6)), elements=st.floats(-1e3, 1e3, width=32)
    )
)
def test_pca_colours_are_always_finite(features) -> None:
    rgb = pca_colours(features)
    assert rgb.shape == (len(features), 3) and rgb.dtype == np.uint8


def test_constant_and_low_rank_features_give_grey_channels() -> None:
    constant = np.full((300, 8), 0.7, dtype=np.float32)
    assert (pca_colours(constant) == 128).all()
    t = np.linspace(-1, 1, 300)
    rank1 = (t[:, None] * np.arange(1, 9)).astype(np.float32)
    rgb = pca_colours(rank1)
    assert (rgb[:, 1:] == 128).all() and rgb[:, 0].min() == 0 and rgb[:, 0].max() == 255
    assert (pca_colours(np.ones((1, 4))) == 128).all()


def test_a_shared_basis_colours_several_scenes_alike() -> None:
    a, _ = planted(seed=1)
    b = a[:500] * 0.5  # another scene whose features span half the range
    basis = pca_fit(a)
    np.testing.assert_array_equal(pca_colours(a, basis=basis), pca_colours(a))
    together = pca_colours(np.concatenate([a, b]), basis=basis)
    np.testing.assert_array_equal(together[len(a) :], pca_colours(b, basis=basis))
    assert not np.array_equal(pca_colours(b, basis=basis), pca_colours(b))  # its own fit would stretch it
    with pytest.raises(ValueError, match="5 channels.*fitted on 12"):
        pca_colours(np.zeros((4, 5)), basis=basis)


def test_render_scene_writes_a_png(tmp_path) -> None:
    cloud = room(3000, (4, 3))
    rgb = pca_colours(np.random.default_rng(0).normal(size=(3000, 6)))
    path = render_scene(
        cloud["coord"], [("input", cloud["color"]), ("pca", rgb)], tmp_path / "sub" / "s.png", "t", max_points=2000
    )
    assert path.stat().st_size > 0 and not list(path.parent.glob(".*tmp"))
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[1] > image.shape[0] / 2
    with pytest.raises(ValueError, match="panel 'bad'"):
        render_scene(cloud["coord"], [("bad", rgb[:10])], tmp_path / "x.png")


# ------------------------------------------------------------------------------------------ outputs and CLI


def test_write_outputs(tmp_path) -> None:
    cloud = room(800, (2, 2))
    features = np.random.default_rng(0).normal(size=(800, 16)).astype(np.float32)
    written = write_outputs(tmp_path / "out", features, cloud, pca_ply=True, dtype="float16")
    assert sorted(p.name for p in written) == ["coord.npy", "features-pca.ply", "features.npy", "pca.png"]
    stored = np.load(tmp_path / "out" / "features.npy")
    assert stored.dtype == np.float16 and stored.shape == (800, 16)
    np.testing.assert_allclose(stored, features, rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "coord.npy"), cloud["coord"])
    vertex = PlyData.read(str(tmp_path / "out" / "features-pca.ply"))["vertex"]
    assert vertex["red"].dtype == np.uint8
    np.testing.assert_array_equal(np.stack([vertex[c] for c in ("red", "green", "blue")], 1), pca_colours(features))
    assert matplotlib.image.imread(tmp_path / "out" / "pca.png").size > 0
    assert not (tmp_path / "none" / "features-pca.ply").exists()
    with pytest.raises(ValueError, match="float16"):
        write_outputs(tmp_path / "big", features * 1e6, cloud, pca_ply=False)


def test_command_line(tmp_path, checkpoint, capsys) -> None:
    np.save(tmp_path / "scan.npy", room(1000, (2, 2))["coord"])
    parser = argparse.ArgumentParser()
    extract.add_arguments(parser)
    args = parser.parse_args(
        [str(checkpoint), str(tmp_path / "scan.npy"), "--out", str(tmp_path / "f"), "--grid-size", "0.05", "--quiet"]
    )
    assert extract.run(args) == 0
    printed = capsys.readouterr().out
    assert "1,000 points" in printed and "256 channels" in printed and "1 tile" in printed
    assert np.load(tmp_path / "f" / "features.npy").shape == (1000, 256)
    assert not (tmp_path / "f" / "features-pca.ply").exists()
    args = parser.parse_args([str(checkpoint), str(tmp_path / "nothing.ply")])
    assert extract.run(args) == 1
    assert "nothing.ply" in capsys.readouterr().err
