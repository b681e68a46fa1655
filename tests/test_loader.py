"""Loader: store-backed dataset, per-(seed, epoch, index) randomness, collation offsets, worker processes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.runtime import loader
from pcdag.runtime.loader import StoreDataset, collate_clouds, make_loader
from pcdag.runtime.store import SceneStore

SIZES = {"Area_1/a": 30, "Area_1/b": 12, "Area_2/c": 25, "Area_2/d": 7, "Area_3/e": 18}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> SceneStore:
    store = SceneStore(tmp_path_factory.mktemp("loader") / "store")
    rng = np.random.default_rng(0)
    for sid, n in SIZES.items():
        fields = {
            "coord": rng.normal(size=(n, 3)).astype(np.float32),  # [N, 3]
            "color": rng.integers(0, 256, (n, 3), dtype=np.uint8),  # [N, 3]
            "segment": rng.integers(-1, 13, n).astype(np.int32),  # [N]
        }
        split = "val" if sid.startswith("Area_3") else "train"
        store.write(sid, PointCloud(fields), key="k", split=split, room=sid.split("/")[0])
    return store


def random_crop(cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
    """Keep a random half of the points and add a random offset (a stand-in for the fused loader chain)."""
    cloud.select(rng.permutation(len(cloud))[: max(1, len(cloud) // 2)])
    cloud["coord"] = cloud["coord"] + rng.normal(size=3).astype(np.float32)
    cloud["origin_coord"] = cloud["coord"].copy()
    return cloud


def test_items_are_stored_scenes_as_tensors(store: SceneStore) -> None:
    ds = StoreDataset(store.path)
    assert len(ds) == 4 and [e.id for e in ds.entries] == sorted(k for k in SIZES if not k.startswith("Area_3"))
    sample = ds[1]
    assert sample["scene"] == "Area_1/b"
    ref = store.read("Area_1/b")
    for name in ("coord", "color", "segment"):
        assert isinstance(sample[name], torch.Tensor)
        np.testing.assert_array_equal(sample[name].numpy(), ref[name])
    assert sample["color"].dtype == torch.uint8 and sample["segment"].dtype == torch.int32
    assert len(StoreDataset(store, splits=("train", "val"), loops=3)) == 15
    assert set(StoreDataset(store, fields=["segment"])[0]) == {"coord", "segment", "scene"}
    with pytest.raises(IndexError):
        ds[4]


def test_tensors_share_memory_with_the_chain_output(store: SceneStore) -> None:
    seen = {}

    def keep(cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        seen["coord"] = cloud["coord"]
        return cloud

    sample = StoreDataset(store, transform=keep)[0]
    assert np.shares_memory(sample["coord"].numpy(), seen["coord"])


def test_transform_is_applied_and_deterministic(store: SceneStore) -> None:
    ds = StoreDataset(store, transform=random_crop, seed=5)
    a, b = ds[0], StoreDataset(store, transform=random_crop, seed=5)[0]
    assert len(a["coord"]) == SIZES["Area_1/a"] // 2 and "origin_coord" in a
    for k in ("coord", "color", "segment"):
        assert torch.equal(a[k], b[k])
    other_seed = StoreDataset(store, transform=random_crop, seed=6)[0]
    assert not torch.equal(a["coord"], other_seed["coord"])


def test_epoch_changes_randomness_and_returns_to_it(store: SceneStore) -> None:
    ds = StoreDataset(store, transform=random_crop)
    first = ds[2]["coord"]
    ds.set_epoch(1)
    assert ds.epoch == 1 and not torch.equal(ds[2]["coord"], first)
    ds.set_epoch(0)
    assert torch.equal(ds[2]["coord"], first)


def test_loops_draw_fresh_randomness_for_each_pass(store: SceneStore) -> None:
    ds = StoreDataset(store, transform=random_crop, loops=2)
    assert ds[0]["scene"] == ds[4]["scene"] and not torch.equal(ds[0]["coord"], ds[4]["coord"])


@given(sizes=st.lists(st.integers(0, 20), min_size=1, max_size=6), width=st.integers(1, 4))
def test_collate_concatenates_and_offsets_are_cumulative(sizes: list[int], width: int) -> None:
    samples = [
        {
            "coord": torch.full((n, 3), float(i)),
            "feat": torch.full((n, width), i, dtype=torch.int64),
            "scene": f"s{i}",
        }
        for i, n in enumerate(sizes)
    ]
    batch = collate_clouds(samples)
    assert batch["offset"].dtype == torch.int64 and batch["offset"].tolist() == np.cumsum(sizes).tolist()
    assert batch["scene"] == [f"s{i}" for i in range(len(sizes))]
    assert batch["coord"].shape == (sum(sizes), 3) and batch["feat"].shape == (sum(sizes), width)
    start = 0
    for i, end in enumerate(batch["offset"].tolist()):  # each sample's rows sit between consecutive offsets
        assert torch.all(batch["coord"][start:end] == i) and torch.all(batch["feat"][start:end] == i)
        start = end


def test_collate_refuses_samples_with_different_fields() -> None:
    a = {"coord": torch.zeros(2, 3), "color": torch.zeros(2, 3), "scene": "a"}
    b = {"coord": torch.zeros(3, 3), "scene": "b"}
    with pytest.raises(CloudError, match="scene b has"):
        collate_clouds([a, b])
    with pytest.raises(ValueError):
        collate_clouds([])


def test_empty_split_names_store_and_its_splits(store: SceneStore, tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=rf"store {store.path} has no scenes in split\(s\) test; it has split\(s\) train, val"
    ):
        StoreDataset(store, splits=("test",))
    with pytest.raises(ValueError, match="holds no scenes at all"):
        StoreDataset(tmp_path / "nothing")


def test_loader_batches_are_seeded_and_offsets_match(store: SceneStore) -> None:
    def scenes(seed: int) -> list[list[str]]:
        return [b["scene"] for b in make_loader(StoreDataset(store), batch_size=2, seed=seed)]

    assert scenes(1) == scenes(1)
    batches = scenes(1)
    assert sorted(s for b in batches for s in b) == sorted(k for k in SIZES if not k.startswith("Area_3"))
    for batch in make_loader(StoreDataset(store), batch_size=3, drop_last=True):
        assert batch["offset"].tolist() == np.cumsum([SIZES[s] for s in batch["scene"]]).tolist()
        assert len(batch["coord"]) == int(batch["offset"][-1])


def test_set_epoch_reaches_persistent_workers(store: SceneStore) -> None:
    ds = StoreDataset(store, transform=random_crop)
    loader = make_loader(ds, batch_size=2, workers=2, shuffle=False)
    for epoch in range(2):
        ds.set_epoch(epoch)
        got = torch.cat([b["coord"] for b in loader])
        want = torch.cat([ds[i]["coord"] for i in range(len(ds))])  # computed here, in the main process
        assert torch.equal(got, want), f"epoch {epoch}"
        if epoch == 0:
            epoch0 = got
    assert not torch.equal(got, epoch0)


@pytest.mark.parametrize(("cores", "expected"), [(1, 1), (2, 2), (16, 2)])
def test_default_loader_workers_never_exceed_the_usable_cores(monkeypatch, cores: int, expected: int) -> None:
    monkeypatch.setattr(loader.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert loader.loader_workers(None) == expected == min(loader.DEFAULT_WORKERS, cores)


def test_explicit_loader_workers_are_honoured_with_a_warning_beyond_the_cores(monkeypatch) -> None:
    monkeypatch.setattr(loader.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    with pytest.warns(UserWarning, match="workers = 6 loader processes on 2 usable CPU cores"):
        assert loader.loader_workers(6) == 6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert loader.loader_workers(2) == 2 and loader.loader_workers(0) == 0
