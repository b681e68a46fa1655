"""SceneStore: exact round trips, atomic writes (also across a killed process), cache keys, quarantine."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pcdag.runtime.store as store_mod
from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.runtime.store import SceneStore, StoreEntry, StoreError, safe_name

DTYPES = [
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "complex64",
]
SEGMENT = st.text(alphabet="abcXYZ019_-. é", min_size=1, max_size=8)
SCENE_IDS = st.lists(SEGMENT, min_size=1, max_size=3).map("/".join)


@st.composite
def clouds(draw: st.DrawFn) -> PointCloud:
    n = draw(st.integers(0, 40))
    fields = {"coord": draw(hnp.arrays(np.float32, (n, 3)))}  # any floats: NaN, inf, -0.0 must survive
    names = draw(st.lists(st.sampled_from(["color", "segment", "feat", "a.b", "x-1"]), unique=True, max_size=4))
    for name in names:
        dtype = np.dtype(draw(st.sampled_from(DTYPES)))
        trailing = draw(st.lists(st.integers(0, 3), max_size=2))
        fields[name] = draw(hnp.arrays(dtype, (n, *trailing)))
    return PointCloud(fields)


def small_cloud(n: int = 10, value: float = 0.0) -> PointCloud:
    coord = np.full((n, 3), value, np.float32)  # [N, 3]
    return PointCloud({"coord": coord, "segment": np.arange(n, dtype=np.int64)})


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@given(cloud=clouds(), scene_id=SCENE_IDS)
def test_round_trip_preserves_dtypes_shapes_and_bits(cloud: PointCloud, scene_id: str) -> None:
    original = {k: v.copy() for k, v in cloud.materialise().items()}
    with tempfile.TemporaryDirectory() as d:
        store = SceneStore(Path(d) / "store")
        store.write(scene_id, cloud, key="k1", split="train", room="room-1", report={"n_out": len(cloud)})
        back = store.read(scene_id)
        assert set(back) == set(original)
        for name, arr in original.items():
            assert same_bits(back[name], arr), name
        assert back.meta == {"scene": scene_id, "split": "train", "room": "room-1"}
        [entry] = store.entries()
        assert entry == StoreEntry(scene_id, "train", "room-1", len(cloud), tuple(sorted(original)), "k1")
        assert "/" not in store.scene_dir(scene_id).name


@given(ids=st.lists(SCENE_IDS, min_size=1, max_size=6, unique=True))
def test_entries_are_sorted_and_filtered_by_split(ids: list[str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        store = SceneStore(d)
        names = {safe_name(i) for i in ids}
        if len(names) < len(ids):  # ids that share a directory are refused; covered in their own test
            return
        for k, sid in enumerate(ids):
            store.write(sid, small_cloud(3), key="k", split="train" if k % 2 else "val", room="r")
        assert [e.id for e in store.entries()] == sorted(ids)
        assert [e.id for e in store.entries(["val"])] == sorted(ids[0::2])


def test_read_selected_fields_always_includes_coord(tmp_path: Path) -> None:
    store = SceneStore(tmp_path)
    store.write("s", small_cloud(4), key="k", split="train", room="r")
    assert set(store.read("s", ["segment"])) == {"coord", "segment"}
    with pytest.raises(StoreError, match="no field.*color"):
        store.read("s", ["color"])


def test_has_honours_the_key(tmp_path: Path) -> None:
    store = SceneStore(tmp_path / "s")
    assert not store.has("Area_1/office_1", "k1")
    store.write("Area_1/office_1", small_cloud(), key="k1", split="train", room="Area_1")
    assert store.has("Area_1/office_1", "k1")
    assert not store.has("Area_1/office_1", "k2")
    assert not store.has("Area_1/office_2", "k1")
    store.write("Area_1/office_1", small_cloud(5), key="k2", split="train", room="Area_1")
    assert store.has("Area_1/office_1", "k2") and not store.has("Area_1/office_1", "k1")
    assert len(store.read("Area_1/office_1")) == 5


def test_failed_write_leaves_no_scene_and_keeps_the_older_version(tmp_path: Path, monkeypatch) -> None:
    store = SceneStore(tmp_path)
    store.write("a/b", small_cloud(10, 1.0), key="old", split="train", room="r")
    real = store_mod._write_field
    calls = []

    def fail_on_second_field(group, name, array):
        calls.append(name)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        real(group, name, array)

    monkeypatch.setattr(store_mod, "_write_field", fail_on_second_field)
    with pytest.raises(OSError, match="simulated"):
        store.write("a/b", small_cloud(7, 2.0), key="new", split="train", room="r")
    calls.clear()
    with pytest.raises(OSError, match="simulated"):
        store.write("c", small_cloud(7, 2.0), key="new", split="train", room="r")
    assert store.has("a/b", "old") and not store.has("a/b", "new")
    assert np.all(store.read("a/b")["coord"] == 1.0) and len(store.read("a/b")) == 10
    assert not store.has("c", "new") and [e.id for e in store.entries()] == ["a/b"]
    with pytest.raises(FileNotFoundError, match="'c'"):
        store.read("c")
    assert sorted(p.name for p in store.scenes_dir.iterdir()) == [safe_name("a/b")]


CRASH = """
import os, sys, numpy as np
import pcdag.runtime.store as m
from pcdag.graphs.cloud import PointCloud
real = m._write_field
def crash(group, name, array):
    if name == "segment":
        os._exit(3)  # the process dies half-way through the scene: no cleanup code runs
    real(group, name, array)
m._write_field = crash
cloud = PointCloud({"coord": np.full((7, 3), 2.0, np.float32), "segment": np.zeros(7, np.int64)})
m.SceneStore(sys.argv[1]).write("a/b", cloud, key="new", split="train", room="r")
"""


def test_killed_writer_leaves_only_a_tmp_dir_that_clean_tmp_removes(tmp_path: Path) -> None:
    store = SceneStore(tmp_path)
    store.write("a/b", small_cloud(10, 1.0), key="old", split="train", room="r")
    proc = subprocess.run([sys.executable, "-c", CRASH, str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    leftovers = [p.name for p in store.scenes_dir.iterdir() if p.name.startswith(".tmp-")]
    assert len(leftovers) == 1
    assert [e.id for e in store.entries()] == ["a/b"] and store.has("a/b", "old")
    assert np.all(store.read("a/b")["coord"] == 1.0)
    assert store.clean_tmp() == 1
    assert store.clean_tmp() == 0
    assert [p.name for p in store.scenes_dir.iterdir()] == [safe_name("a/b")]


def test_quarantine_is_listed_and_lifted_by_a_successful_write(tmp_path: Path) -> None:
    store = SceneStore(tmp_path)
    store.quarantine("Area_2/hall", key="k", split="train", room="Area_2", error="ValueError: bad", traceback="tb")
    [rec] = store.quarantined()
    assert rec["id"] == "Area_2/hall" and rec["error"] == "ValueError: bad" and rec["traceback"] == "tb"
    manifest = json.loads(store.write_manifest({"stage_key": "s"}).read_text())
    assert [q["id"] for q in manifest["quarantined"]] == ["Area_2/hall"]
    store.write("Area_2/hall", small_cloud(), key="k", split="train", room="Area_2")
    assert store.quarantined() == []


def test_manifest_lists_scenes_and_split_counts(tmp_path: Path) -> None:
    store = SceneStore(tmp_path)
    for i, split in enumerate(["train", "train", "val"]):
        store.write(f"s{i}", small_cloud(i + 1), key=f"k{i}", split=split, room="r")
    m = json.loads(store.write_manifest({"stage_key": "abc", "source": "X"}).read_text())
    assert m["stage_key"] == "abc" and m["splits"] == {"train": 2, "val": 1}
    assert [(s["id"], s["n_points"], s["key"]) for s in m["scenes"]] == [
        ("s0", 1, "k0"),
        ("s1", 2, "k1"),
        ("s2", 3, "k2"),
    ]
    assert m["n_points"] == 6
    with pytest.raises(ValueError, match="reserved"):
        store.write_manifest({"scenes": []})


def test_refuses_a_directory_that_is_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a pcdag scene store"):
        SceneStore(tmp_path).write("s", small_cloud(), key="k", split="train", room="r")
    empty = tmp_path / "empty"
    empty.mkdir()
    SceneStore(empty).write("s", small_cloud(), key="k", split="train", room="r")


def test_threads_writing_into_a_new_store_at_once(tmp_path: Path) -> None:
    store = SceneStore(tmp_path / "new")
    ids = [f"Area_{i % 3}/room_{i}" for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda sid: store.write(sid, small_cloud(5), key="k", split="train", room="r"), ids))
    assert [e.id for e in store.entries()] == sorted(ids)


def test_ids_sharing_a_directory_are_refused(tmp_path: Path) -> None:
    store = SceneStore(tmp_path)
    store.write("a/b", small_cloud(), key="k", split="train", room="r")
    with pytest.raises(StoreError, match="same directory"):
        store.write("a__b", small_cloud(), key="k", split="train", room="r")
    assert not store.has("a__b", "k") and store.has("a/b", "k")


def test_missing_and_corrupt_scenes_name_store_and_scene(tmp_path: Path) -> None:
    store = SceneStore(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"'nope' in store {tmp_path}"):
        store.read("nope")
    store.write("Area_1/wc", small_cloud(), key="k", split="train", room="r")
    for chunk in (store.scene_dir("Area_1/wc") / "coord").rglob("*"):
        if chunk.is_file() and chunk.name != "zarr.json":
            chunk.write_bytes(b"garbage")
    with pytest.raises(StoreError, match=f"'Area_1/wc' in store {tmp_path} is unreadable"):
        store.read("Area_1/wc")


def test_refuses_fields_it_cannot_store(tmp_path: Path) -> None:
    cloud = PointCloud({"coord": np.zeros((2, 3), np.float32), "name": np.array(["a", "b"], dtype=object)})
    with pytest.raises(CloudError, match="'name' has dtype object"):
        SceneStore(tmp_path).write("s", cloud, key="k", split="train", room="r")
    assert SceneStore(tmp_path).entries() == []


def test_safe_name_is_a_single_plain_component() -> None:
    for sid in ["Area_1/office_1", "../etc/passwd", ".hidden", "a b:c\\d", "x" * 500]:
        name = safe_name(sid)
        assert "/" not in name and "\\" not in name and not name.startswith(".") and len(name) <= 160
    assert safe_name("x" * 500) != safe_name("x" * 499 + "y")
    with pytest.raises(ValueError):
        safe_name("")


def test_a_scene_opens_as_a_labelled_xarray_dataset(tmp_path) -> None:
    store = SceneStore(tmp_path / "s")
    coord = np.arange(12, dtype=np.float32).reshape(4, 3)
    color = np.full((4, 3), 7, np.uint8)
    store.write("a/b", PointCloud({"coord": coord, "color": color}), key="k", split="train", room="a")
    ds = store.open_xarray("a/b")
    assert dict(ds.sizes) == {"point": 4, "xyz": 3, "rgb": 3}
    np.testing.assert_array_equal(ds["coord"].values, coord)
    assert ds.attrs["scene"] == "a/b" and ds["color"].dtype == np.uint8


def test_a_replace_killed_between_its_two_renames_is_restored(tmp_path) -> None:
    store = SceneStore(tmp_path / "s")
    old = PointCloud({"coord": np.ones((3, 3), np.float32)})
    store.write("a", old, key="k1", split="train", room="a")
    final = store.scene_dir("a")
    final.rename(final.with_name(f".{final.name}.old-12345"))  # the state a kill after the first rename leaves
    store.clean_tmp()
    assert store.has("a", "k1") and store.read("a")["coord"].tolist() == old["coord"].tolist()


def test_a_failed_second_rename_keeps_the_committed_version(tmp_path, monkeypatch) -> None:
    from pcdag import atomic

    store = SceneStore(tmp_path / "s")
    store.write("a", PointCloud({"coord": np.ones((3, 3), np.float32)}), key="k1", split="train", room="a")
    real, moved_aside = atomic.os.replace, []

    def flaky(src, dst):
        if Path(dst) == store.scene_dir("a") and Path(src).name.startswith(".tmp-"):  # new version into place
            assert moved_aside, "the old version should have been moved aside first"
            raise OSError("disk full")
        if Path(src) == store.scene_dir("a"):
            moved_aside.append(dst)
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", flaky)
    with pytest.raises(OSError, match="disk full"):
        store.write("a", PointCloud({"coord": np.zeros((3, 3), np.float32)}), key="k2", split="train", room="a")
    monkeypatch.undo()
    assert moved_aside and store.has("a", "k1") and store.read("a")["coord"].sum() == 9


def test_one_damaged_scene_metadata_does_not_hide_the_others(tmp_path) -> None:
    store = SceneStore(tmp_path / "s")
    for sid in ("a", "b"):
        store.write(sid, PointCloud({"coord": np.ones((3, 3), np.float32)}), key="k", split="train", room=sid)
    (store.scene_dir("b") / "pcdag.json").write_text('{"id": "b"}')
    assert [e.id for e in store.entries()] == ["a"]
    (bad,) = store.unreadable()
    assert bad["path"].endswith("pcdag.json") and "split" in bad["error"]
    manifest = json.loads(store.write_manifest({}).read_text())
    assert manifest["n_scenes"] == 1 and len(manifest["unreadable"]) == 1
