"""The synthetic room generator, its ScanNet-layout writer and ``SyntheticSource``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcdag.datasets.synthetic import BASE_COLOR, NYU40_OF_SCANNET20, make_room, write_scannet_layout
from pcdag.graphs.params import ParamError
from pcdag.nodes.sources.scannet import ScanNetSource
from pcdag.nodes.sources.synthetic import SyntheticSource

seeds = st.integers(0, 2**32 - 1)


@settings(max_examples=40)
@given(seed=seeds, n=st.integers(1, 3000))
def test_room_fields_are_well_formed(seed, n):
    room = make_room(np.random.default_rng(seed), n_points=n)
    coord, normal = room["coord"], room["normal"]
    assert coord.shape == (n, 3) and coord.dtype == np.float32 and np.isfinite(coord).all()
    assert room["color"].dtype == np.uint8 and room["color"].shape == (n, 3)
    assert normal.dtype == np.float32 and room["segment"].dtype == np.int16 and room["instance"].dtype == np.int32
    assert coord[:, 2].min() >= -0.05 and coord[:, 2].max() <= 3.05  # floor at 0, walls at most 3 m (+ noise)
    assert np.abs(coord[:, 0]).max() <= 4.05 and np.abs(coord[:, 1]).max() <= 3.55  # at most 8 m x 7 m
    assert set(np.unique(room["segment"])) <= set(BASE_COLOR)
    assert room["instance"].min() >= 0
    np.testing.assert_allclose(np.linalg.norm(normal, axis=1), 1.0, atol=1e-6)


@settings(max_examples=30)
@given(seed=seeds)
def test_room_is_deterministic_per_seed(seed):
    a, b = (make_room(np.random.default_rng(seed), n_points=500) for _ in range(2))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    c = make_room(np.random.default_rng(seed + 1), n_points=500)
    assert not np.array_equal(a["coord"], c["coord"])


@settings(max_examples=30)
@given(seed=seeds)
def test_normals_point_into_the_room_and_out_of_objects(seed):
    room = make_room(np.random.default_rng(seed), n_points=6000)
    coord, normal, seg, inst = room["coord"], room["normal"], room["segment"], room["instance"]
    floor = seg == 1
    np.testing.assert_array_equal(normal[floor], np.tile([0, 0, 1], (floor.sum(), 1)))
    assert np.abs(coord[floor, 2]).max() < 0.05
    walls = seg == 0  # the room is centred on x = y = 0: inward normals point back towards the axis
    assert (np.einsum("ij,ij->i", normal[walls, :2], coord[walls, :2]) < 0).all()
    assert (normal[walls, 2] == 0).all()
    for i in np.unique(inst[inst >= 5]):
        pts, nrm = coord[inst == i], normal[inst == i]
        if len(pts) < 200:
            continue
        side = nrm[:, 2] == 0  # the rest is the top face, normal +z, at the top of the box
        top = ~side
        if top.any():
            assert np.allclose(nrm[top], [0, 0, 1]) and pts[top, 2].min() > pts[:, 2].max() - 0.05
        centre = pts[:, :2].mean(axis=0)
        outward = np.einsum("ij,ij->i", nrm[side, :2], pts[side, :2] - centre)
        assert (outward > 0).all()


def test_room_furniture_count_and_bad_arguments():
    rng = np.random.default_rng(3)
    rooms = [make_room(rng, n_points=4000, n_objects=(2, 2)) for _ in range(5)]
    assert all(len(np.unique(r["instance"])) <= 5 + 2 for r in rooms)
    assert all(len(np.unique(r["instance"])) == 5 for r in (make_room(rng, 4000, (0, 0)),))
    with pytest.raises(ValueError, match="n_points"):
        make_room(rng, n_points=0)
    with pytest.raises(ValueError, match="n_objects"):
        make_room(rng, n_objects=(4, 2))


def test_scannet_layout_round_trip(tmp_path):
    scans = write_scannet_layout(tmp_path, n_rooms=3, scans_per_room=2, n_points=400, seed=5, val_rooms=1)
    assert [s.relative_to(tmp_path).as_posix() for s in scans] == [
        "train/scene0000_00", "train/scene0000_01", "train/scene0001_00", "train/scene0001_01",
        "val/scene0002_00", "val/scene0002_01",
    ]  # fmt: skip
    assert not (scans[0] / "normal.npy").exists() and not list(tmp_path.rglob("*.tmp"))
    src = ScanNetSource(root=str(tmp_path), splits=["train", "val"])
    refs = src.scenes()
    assert [(r.room, r.split) for r in refs][::2] == [("scene0000", "train"), ("scene0001", "train"),
                                                      ("scene0002", "val")]  # fmt: skip
    a, b = (src.load(r) for r in refs[:2])  # two scans of one room: same labels mix, different points
    assert len(a) == len(b) == 400
    assert not np.array_equal(a["coord"], b["coord"])
    assert {0, 1, 2, 3, 4} <= set(a["instance"].tolist()) & set(b["instance"].tolist())  # floor and walls
    assert np.abs(np.median(a["coord"], 0) - np.median(b["coord"], 0)).max() < 0.5
    seg40 = ScanNetSource(root=str(tmp_path), labels="segment40").load(refs[0])["segment"]
    np.testing.assert_array_equal(seg40, NYU40_OF_SCANNET20[a["segment"]])
    with pytest.raises(ValueError, match="val_rooms"):
        write_scannet_layout(tmp_path, n_rooms=1, val_rooms=2)


def test_source_scenes_are_independent_and_split_by_hash():
    few = SyntheticSource(n_scenes=3, points=500, seed=7, splits=["train", "val"], val_fraction=0.5)
    many = SyntheticSource(n_scenes=50, points=500, seed=7, splits=["train", "val"], val_fraction=0.5)
    refs_few, refs_many = few.scenes(), many.scenes()
    assert refs_many[:3] == refs_few
    a, b = few.load(refs_few[2]), many.load(refs_many[2])
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert a.fields == few.provides() and a.meta == {"scene": refs_few[2].id, "split": refs_few[2].split,
                                                     "room": refs_few[2].room}  # fmt: skip
    assert all(r.paths == () for r in refs_many) and len({r.room for r in refs_many}) == 50
    n_val = sum(r.split == "val" for r in SyntheticSource(n_scenes=400, splits=["train", "val"]).scenes())
    assert 60 < n_val < 140  # val_fraction 0.25 of 400
    train_only = SyntheticSource(n_scenes=50, seed=7, val_fraction=0.5).scenes()
    assert [r for r in refs_many if r.split == "train"] == train_only
    assert all(r.split == "train" for r in SyntheticSource(n_scenes=20, val_fraction=0.0).scenes())
    with pytest.raises(ValueError, match="no scenes in split"):
        SyntheticSource(n_scenes=20, val_fraction=0.0, splits=["val"]).scenes()
    with pytest.raises(ValueError, match="no scene"):
        few.load(refs_many[10])


def test_source_parameters_are_checked():
    with pytest.raises(ParamError, match="n_scenes"):
        SyntheticSource(n_scenes=0)
    with pytest.raises(ParamError, match="points"):
        SyntheticSource(points=10)
    with pytest.raises(ParamError, match="val_fraction"):
        SyntheticSource(val_fraction=1.5)
    with pytest.raises(ParamError, match="splits"):
        SyntheticSource(splits=["test"])
