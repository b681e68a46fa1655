"""Data-efficient protocols: room-level scene fractions, k labelled points per scene, their files, LimitAnnotations."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pcdag.nodes.augment.limit_annotations as limit_mod
from pcdag.datasets.efficient import (
    draw_points,
    limited_annotations,
    limited_scenes,
    make_splits,
    read_annotation_file,
    read_annotation_split,
    read_scene_list,
    rooms_to_take,
    summary,
    write_annotation_split,
    write_scene_list,
)
from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.nodes.augment.limit_annotations import LimitAnnotations
from pcdag.nodes.sources.scannet import ScanNetSource
from pcdag.runtime.loader import StoreDataset
from pcdag.runtime.store import SceneStore, StoreEntry
from pcdag.testing import check_transform_contract, seeds

FRACTIONS = (0.01, 0.05, 0.1, 0.2, 0.5, 1.0)
BUDGETS = (20, 50, 100, 200)


@pytest.fixture(scope="module")
def real_store(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> SceneStore:
    """scannet-mini (17 scans of 8 rooms, real labels) written to a store, with the source's room ids."""
    source = ScanNetSource(root=str(shared_data / "scannet-mini"), splits=["train", "val"], fields=["segment"])
    store = SceneStore(tmp_path_factory.mktemp("efficient") / "store")
    for ref in source.scenes():
        store.write(ref.id, source.load(ref), key="k", split=ref.split, room=ref.room)
    return store


def entry(scene: str, room: str, split: str = "train") -> StoreEntry:
    return StoreEntry(scene, split, room, 10, ("coord", "segment"), "k")


def labelled_cloud(segment: np.ndarray) -> PointCloud:
    coord = np.zeros((len(segment), 3), np.float32)  # [N, 3]
    return PointCloud({"coord": coord, "segment": segment})


# room -> number of scans; scan ids "<room>_<i>"
ROOMS = st.dictionaries(st.text("abcdefgh0123", min_size=1, max_size=5), st.integers(1, 4), min_size=1, max_size=30)


def entries_of(rooms: dict[str, int]) -> list[StoreEntry]:
    return [entry(f"{room}_{i:02d}", room) for room, n in rooms.items() for i in range(n)]


# ------------------------------------------------------------------------------------------ limited scenes


def test_rooms_to_take_rounds_half_up_and_keeps_at_least_one() -> None:
    assert [rooms_to_take(f, 1201) for f in (0.01, 0.05, 0.1, 0.2)] == [12, 60, 120, 240]
    assert rooms_to_take(0.01, 6) == 1 and rooms_to_take(0.25, 6) == 2 and rooms_to_take(1.0, 6) == 6
    for bad in (0.0, -0.1, 1.5, float("nan"), True, "0.1"):
        with pytest.raises(ValueError, match="fraction"):
            rooms_to_take(bad, 10)  # type: ignore[arg-type]


def test_scannet_mini_is_split_by_room_never_by_scan(real_store: SceneStore) -> None:
    train = real_store.entries(["train"])
    scans_of: dict[str, set[str]] = {}
    for e in train:
        scans_of.setdefault(e.room, set()).add(e.id)
    assert len(train) == 13 and len(scans_of) == 6 and max(map(len, scans_of.values())) == 3
    for fraction in FRACTIONS:
        chosen = set(limited_scenes(train, fraction, seed=3))
        rooms = {e.room for e in train if e.id in chosen}
        assert len(rooms) == rooms_to_take(fraction, 6)
        assert chosen == set().union(*(scans_of[r] for r in rooms))  # every scan of a chosen room, nothing else
    with pytest.raises(ValueError, match="several splits"):
        limited_scenes(real_store.entries(), 0.5, seed=0)  # train and val together would leak


@given(rooms=ROOMS, seed=seeds())
def test_scene_fractions_are_nested_room_closed_and_deterministic(rooms: dict[str, int], seed: int) -> None:
    entries = entries_of(rooms)
    room_of = {e.id: e.room for e in entries}
    previous: set[str] = set()
    for fraction in FRACTIONS:
        ids = limited_scenes(entries, fraction, seed)
        assert ids == sorted(ids) and ids == limited_scenes(list(reversed(entries)), fraction, seed)
        chosen_rooms = {room_of[i] for i in ids}
        assert len(chosen_rooms) == rooms_to_take(fraction, len(rooms)) >= 1
        assert sum(rooms[r] for r in chosen_rooms) == len(ids)  # whole rooms only
        assert previous <= set(ids)
        previous = set(ids)
    assert previous == set(room_of)  # fraction 1.0 takes everything


def test_seeds_choose_different_rooms() -> None:
    entries = entries_of({f"room{i:03d}": 2 for i in range(100)})
    picks = {tuple(limited_scenes(entries, 0.1, seed)) for seed in range(5)}
    assert len(picks) == 5
    assert all(len(p) == 20 for p in picks)


def test_limited_scenes_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="no scenes"):
        limited_scenes([], 0.1, 0)
    with pytest.raises(ValueError, match="seed"):
        limited_scenes([entry("a", "r")], 0.1, -1)


# ------------------------------------------------------------------------------------------ limited annotations


@settings(max_examples=50)
@given(
    n=st.integers(0, 300),
    unlabelled=st.floats(0.0, 1.0),
    seed=seeds(),
    data_seed=seeds(),
    scene=st.text(min_size=1, max_size=12),
    budgets=st.lists(st.integers(1, 400), min_size=1, max_size=4),
)
def test_drawn_points_are_labelled_nested_and_as_many_as_possible(n, unlabelled, seed, data_seed, scene, budgets):
    rng = np.random.default_rng(data_seed)
    segment = np.where(rng.random(n) < unlabelled, -1, rng.integers(0, 20, n)).astype(np.int16)  # [N]
    n_labelled = int((segment >= 0).sum())
    previous = np.zeros(0, np.int64)
    for k in sorted(budgets):
        idx = draw_points(segment, scene, k, seed)
        assert idx.dtype == np.int64 and len(idx) == min(k, n_labelled)
        assert (np.diff(idx) > 0).all() and (segment[idx] >= 0).all()
        assert np.isin(previous, idx).all()  # nested in k
        np.testing.assert_array_equal(idx, draw_points(segment, scene, k, seed))
        previous = idx


def test_scenes_with_equal_labels_draw_different_points() -> None:
    segment = np.arange(1000, dtype=np.int16) % 20  # [1000]
    a, b = draw_points(segment, "scene0000_00", 20, 0), draw_points(segment, "scene0000_01", 20, 0)
    assert len(np.intersect1d(a, b)) < 5  # 20 of 1000 twice: 0.4 shared on average


def test_drawn_points_are_uniform_over_labelled_points() -> None:
    segment = np.r_[np.full(50, -1), np.arange(50) % 20].astype(np.int16)  # [100] second half labelled
    hits = np.zeros(100)
    for seed in range(2000):
        hits[draw_points(segment, "scene", 5, seed)] += 1
    assert hits[:50].sum() == 0
    assert np.abs(hits[50:] / 2000 - 0.1).max() < 0.04  # each labelled point: 5/50 = 0.1, sd about 0.007


@settings(max_examples=15)
@given(sizes=st.lists(st.tuples(st.integers(1, 60), st.integers(0, 60)), min_size=1, max_size=4), seed=seeds())
def test_limited_annotations_through_a_store(sizes: list[tuple[int, int]], seed: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        store = SceneStore(Path(d) / "store")
        truth = {}
        for i, (n_lab, n_unl) in enumerate(sizes):
            segment = np.r_[np.arange(n_lab) % 7, np.full(n_unl, -1)].astype(np.int32)
            segment = np.random.default_rng(i).permutation(segment)
            store.write(f"room{i}/scan", labelled_cloud(segment), key="k", split="train", room=f"room{i}")
            truth[f"room{i}/scan"] = segment
        ids = sorted(truth)
        small = limited_annotations(store, ids, 10, seed)
        large = limited_annotations(store, ids, 30, seed)
        alone = limited_annotations(store, ids[-1:], 10, seed)
        for sid, segment in truth.items():
            assert len(small[sid]) == min(10, int((segment >= 0).sum())) and (segment[small[sid]] >= 0).all()
            assert np.isin(small[sid], large[sid]).all()
        np.testing.assert_array_equal(alone[ids[-1]], small[ids[-1]])  # other scenes do not matter


def test_limited_annotations_on_scannet_mini(real_store: SceneStore) -> None:
    ids = [e.id for e in real_store.entries(["train"])]
    splits = {k: limited_annotations(real_store, ids, k, seed=0) for k in BUDGETS}
    for sid in ids:
        segment = real_store.read(sid, ["segment"])["segment"]
        for small, large in zip(BUDGETS, BUDGETS[1:], strict=False):
            assert set(splits[small][sid]) < set(splits[large][sid])
        assert len(splits[200][sid]) == 200 and (segment[splits[200][sid]] >= 0).all()
    other = limited_annotations(real_store, ids, 20, seed=1)
    assert all(not np.array_equal(other[s], splits[20][s]) for s in ids)


def test_scene_without_labels_or_unknown_scene_is_named(tmp_path: Path) -> None:
    store = SceneStore(tmp_path / "store")
    store.write("bare/scan", PointCloud({"coord": np.zeros((4, 3), np.float32)}), key="k", split="train", room="r")
    with pytest.raises(ValueError, match=r"'bare/scan'.*no 'segment'"):
        limited_annotations(store, ["bare/scan"], 20, 0)
    with pytest.raises(ValueError, match="'ghost'"):
        limited_annotations(store, ["ghost"], 20, 0)
    with pytest.raises(ValueError, match="points"):
        draw_points(np.zeros(3, np.int16), "s", 0, 0)


# ------------------------------------------------------------------------------------------ files


def test_make_splits_writes_nested_files_that_read_back(real_store: SceneStore, tmp_path: Path) -> None:
    paths = make_splits(real_store, tmp_path / "splits", seed=2)
    names = [p.name for p in paths]
    assert names == [f"scenes-{p}pct-seed2.json" for p in (1, 5, 10, 20)] + [f"points-{k}-seed2.npz" for k in BUDGETS]
    lists = [read_scene_list(p) for p in paths[:4]]
    assert all(set(a) <= set(b) for a, b in zip(lists, lists[1:], strict=False))
    assert lists[0] == limited_scenes(real_store.entries(["train"]), 0.01, 2)
    meta = json.loads(paths[0].read_text())
    assert meta["seed"] == 2 and meta["store"] == str(real_store.path.resolve()) and meta["n_rooms_total"] == 6
    train = [e.id for e in real_store.entries(["train"])]
    for k, path in zip(BUDGETS, paths[4:], strict=True):
        split = read_annotation_split(path)
        assert sorted(split) == train
        expected = limited_annotations(real_store, train, k, seed=2)
        assert all(np.array_equal(split[s], expected[s]) for s in train)
        info = read_annotation_file(path).meta
        assert info["points"] == k and info["n_indices"] == k * len(train) and info["short"] == []
    text = summary(paths)
    assert "1 % of rooms = 1 of 6 rooms" in text and "200 labelled points per scene, 13 scenes" in text


def test_short_scenes_keep_all_labels_and_are_recorded(tmp_path: Path) -> None:
    store = SceneStore(tmp_path / "store")
    store.write("few", labelled_cloud(np.array([-1, 3, -1, 4], np.int16)), key="k", split="train", room="a")
    store.write("many", labelled_cloud(np.arange(40, dtype=np.int16) % 5), key="k", split="train", room="b")
    paths = make_splits(store, tmp_path / "out", scene_fractions=(0.5,), points=(2, 20), seed=0)
    two, twenty = (read_annotation_file(p) for p in paths[1:])
    assert two.meta["short"] == [] and twenty.meta["short"] == ["few"]
    np.testing.assert_array_equal(twenty.indices["few"], [1, 3])
    assert len(twenty.indices["many"]) == 20 and twenty.meta["n_labelled"] == {"few": 2, "many": 40}
    assert "1 scenes have fewer" in summary(paths[2:])
    with pytest.raises(ValueError, match="no scenes in split 'val'"):
        make_splits(store, tmp_path / "out", split="val")
    with pytest.raises(FileNotFoundError, match="not a scene store"):
        make_splits(SceneStore(tmp_path / "nowhere"), tmp_path / "out")


SCENE_IDS = st.lists(st.text("ab/_-é.1", min_size=1, max_size=8), unique=True, max_size=6)


@settings(max_examples=30)
@given(ids=SCENE_IDS, seed=seeds())
def test_files_round_trip(ids: list[str], seed: int) -> None:
    rng = np.random.default_rng(seed)
    split = {s: np.unique(rng.integers(0, 10**6, size=int(rng.integers(0, 30)))) for s in ids}
    with tempfile.TemporaryDirectory() as d:
        npz = write_annotation_split(Path(d) / "p.npz", split, {"seed": seed, "points": 30})
        back = read_annotation_file(npz)
        assert set(back.indices) == set(ids) and back.meta["seed"] == seed
        for s in ids:
            assert back.indices[s].dtype == np.int64 and np.array_equal(back.indices[s], split[s])
        scene_list = write_scene_list(Path(d) / "s.json", list(reversed(ids)), {"seed": seed})
        assert read_scene_list(scene_list) == sorted(ids)


def write_raw_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def good_arrays() -> dict[str, np.ndarray]:
    meta = json.dumps({"format": 1, "protocol": "limited-annotations"})
    return {
        "scene_ids": np.array(["a", "b"]),
        "offsets": np.array([0, 2, 3], np.int64),
        "indices": np.array([1, 5, 0], np.int64),
        "meta": np.array(meta),
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({}, None),
        ({"indices": np.array([5, 1, 0], np.int64)}, "strictly increasing"),
        ({"indices": np.array([1, 5, -2], np.int64)}, "≥ 0"),
        ({"offsets": np.array([0, 2, 4], np.int64)}, "offsets"),
        ({"offsets": np.array([0, 2, 3], np.int32)}, "int64"),
        ({"scene_ids": np.array(["a", "a"])}, "distinct"),
        ({"meta": np.array("{not json")}, "JSON"),
        ({"meta": np.array(json.dumps({"format": 1, "protocol": "limited-scenes"}))}, "limited-annotations"),
        ({"meta": np.array(json.dumps({"format": 9, "protocol": "limited-annotations"}))}, "format 9"),
        ({"scene_ids": np.array([{"pickled": 1}], dtype=object)}, "not a readable .npz"),
    ],
)
def test_malformed_annotation_files_name_the_path(tmp_path: Path, change: dict, message: str | None) -> None:
    path = write_raw_npz(tmp_path / "split.npz", **(good_arrays() | change))
    if message is None:
        assert {k: v.tolist() for k, v in read_annotation_split(path).items()} == {"a": [1, 5], "b": [0]}
        return
    with pytest.raises(ValueError, match=message) as info:
        read_annotation_split(path)
    assert str(path) in str(info.value)


def test_unreadable_files_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.npz"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        read_annotation_split(missing)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_scene_list(tmp_path / "missing.json")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="garbage.npz"):
        read_annotation_split(garbage)
    single = tmp_path / "single.npz"
    with single.open("wb") as f:
        np.save(f, np.arange(3))
    with pytest.raises(ValueError, match="single array"):
        read_annotation_split(single)
    lacking = write_raw_npz(tmp_path / "lacking.npz", indices=np.arange(3))
    with pytest.raises(ValueError, match="lacks array.*scene_ids"):
        read_annotation_split(lacking)
    for text, message in [
        ("{oops", "not readable JSON"),
        ('["a"]', "limited-scenes"),
        ('{"format": 1, "protocol": "limited-scenes", "scenes": ["a", "a"]}', "distinct"),
        ('{"format": 1, "protocol": "limited-scenes", "scenes": "a"}', "list"),
    ]:
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(ValueError, match=message) as info:
            read_scene_list(bad)
        assert str(bad) in str(info.value)


def test_writers_refuse_bad_content(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        write_annotation_split(tmp_path / "p.npz", {"a": np.array([3, 1])})
    with pytest.raises(ValueError, match="reserved"):
        write_annotation_split(tmp_path / "p.npz", {"a": np.array([1])}, {"protocol": "mine"})
    with pytest.raises(ValueError, match="distinct"):
        write_scene_list(tmp_path / "s.json", ["a", "a"])
    assert not list(tmp_path.iterdir())  # nothing half-written


# ------------------------------------------------------------------------------------------ LimitAnnotations


def test_limit_annotations_keeps_exactly_the_listed_labels(real_store: SceneStore, tmp_path: Path) -> None:
    [path] = make_splits(real_store, tmp_path, scene_fractions=(), points=(50,), seed=4)
    listed = read_annotation_split(path)
    node = LimitAnnotations(file=str(path))
    for sid in listed:
        cloud = real_store.read(sid, ["segment"])
        before = cloud["segment"].copy()
        out = check_transform_contract(node, cloud, np.random.default_rng(0))
        kept = np.flatnonzero(out["segment"] >= 0)
        np.testing.assert_array_equal(kept, listed[sid])
        np.testing.assert_array_equal(out["segment"][kept], before[kept])
        assert out["segment"].dtype == before.dtype and len(out) == len(before)


def test_limit_annotations_in_the_loader(real_store: SceneStore, tmp_path: Path) -> None:
    [path] = make_splits(real_store, tmp_path, scene_fractions=(), points=(20,), seed=0)
    dataset = StoreDataset(real_store, ("train",), transform=LimitAnnotations(file=str(path)).apply)
    for i in range(len(dataset)):
        assert int((dataset[i]["segment"] >= 0).sum()) == 20


def test_limit_annotations_refuses_what_does_not_fit(real_store: SceneStore, tmp_path: Path) -> None:
    [path] = make_splits(real_store, tmp_path, scene_fractions=(), points=(20,), seed=0)
    node = LimitAnnotations(file=str(path))
    val = real_store.read("scene0006_00", ["segment"])  # a val scan: not in the train split
    with pytest.raises(CloudError, match=r"LimitAnnotations.*scene0006_00.*not in annotation split"):
        node.apply(val, np.random.default_rng(0))
    sub = real_store.read("scene0000_00", ["segment"]).select(np.arange(0, 50000, 2))  # subsampled first
    with pytest.raises(CloudError, match=r"25000 points.*50000 points.*right after the Store") as info:
        node.apply(sub, np.random.default_rng(0))
    assert str(path) in str(info.value)
    bare = write_annotation_split(tmp_path / "bare.npz", {"s": np.array([3, 9])})  # no n_points recorded
    small = labelled_cloud(np.zeros(5, np.int16))
    small.meta["scene"] = "s"
    with pytest.raises(CloudError, match="more than 9 points"):
        LimitAnnotations(file=str(bare)).apply(small, np.random.default_rng(0))
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        LimitAnnotations(file=str(tmp_path / "nope.npz")).apply(val, np.random.default_rng(0))


def test_limit_annotations_reads_its_file_once(
    real_store: SceneStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [path] = make_splits(real_store, tmp_path, scene_fractions=(), points=(20,), seed=0)
    reads = []
    monkeypatch.setattr(limit_mod, "read_annotation_file", lambda p: reads.append(p) or read_annotation_file(p))
    limit_mod._read_cached.cache_clear()
    node = LimitAnnotations(file=str(path))
    for sid in ("scene0000_00", "scene0001_00", "scene0000_00"):
        node.apply(real_store.read(sid, ["segment"]), np.random.default_rng(0))
    assert len(reads) == 1
    assert "20 labelled points per scene for 13 scenes (seed 0" in node.plan_notes()[0]
    make_splits(real_store, tmp_path / "other", scene_fractions=(), points=(200,), seed=0)[0].replace(path)
    out = node.apply(real_store.read("scene0000_00", ["segment"]), np.random.default_rng(0))
    assert len(reads) == 2 and int((out["segment"] >= 0).sum()) == 200  # a rewritten file is read again
    limit_mod._read_cached.cache_clear()


def test_limit_annotations_without_a_file_keeps_every_label() -> None:
    segment = np.array([-1, 2, 3, -1, 0], np.int16)
    out = LimitAnnotations().apply(labelled_cloud(segment.copy()), np.random.default_rng(0))
    np.testing.assert_array_equal(out["segment"], segment)
    assert LimitAnnotations().fields().reads == {"segment"} and LimitAnnotations().fields().writes == {"segment"}
    assert "every labelled point" in LimitAnnotations().plan_notes()[0]
