"""Offline executor: skips what is done, quarantines a failing scene and goes on, deterministic, bounded tasks."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import attrs
import cloudpickle
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pcdag.compiler.schedule import MAX_PARTITION, default_partition_size, partition
from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.node import SceneRef, SceneSource
from pcdag.graphs.params import integer, of_type, param
from pcdag.runtime.offline import (
    OfflineReport,
    SceneOutcome,
    run_offline,
    scene_key,
    scene_rng,
)
from pcdag.runtime.store import SceneStore, StoreError


class RandomScenes(SceneSource):
    """Random clouds; the scenes named in ``bad`` raise on load."""

    @attrs.frozen
    class Params:
        n_scenes: int = param(6, integer(1, 10_000))
        points: int = param(40, integer(1, 10_000))
        bad: tuple = param((), of_type(tuple))

    def scenes(self) -> list[SceneRef]:
        return [
            SceneRef(f"Area_{i % 2}/room_{i}", "train" if i % 3 else "val", f"Area_{i % 2}")
            for i in range(self.params.n_scenes)
        ]

    def load(self, ref: SceneRef) -> PointCloud:
        if ref.id in self.params.bad:
            raise ValueError(f"cannot parse {ref.id}")
        rng = scene_rng(0, ref.id)
        n = self.params.points
        coord = rng.normal(size=(n, 3)).astype(np.float32)  # [N, 3]
        return PointCloud({"coord": coord, "segment": rng.integers(0, 5, n)}, {"scene": ref.id})


def subsample_and_jitter(cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
    """A stand-in for a fused offline chain whose result depends on its generator."""
    cloud.select(rng.random(len(cloud)) < 0.7)
    cloud["coord"] = cloud["coord"] + rng.normal(scale=0.01, size=cloud["coord"].shape).astype(np.float32)
    return cloud


def run(source: RandomScenes, store: SceneStore, **kw) -> OfflineReport:
    kw.setdefault("stage_key", "stage-1")
    kw.setdefault("progress", False)
    return run_offline(source, source.scenes(), subsample_and_jitter, store, **kw)


def arrays(store: SceneStore) -> dict[str, dict[str, np.ndarray]]:
    return {e.id: store.read(e.id).materialise() for e in store.entries()}


def test_a_failing_scene_is_quarantined_and_the_rest_complete(tmp_path: Path) -> None:
    source = RandomScenes(n_scenes=6, bad=("Area_1/room_3",))
    store = SceneStore(tmp_path / "store")
    report = run(source, store, workers=2)
    assert [o.scene for o in report.failed] == ["Area_1/room_3"]
    assert "ValueError: cannot parse Area_1/room_3" in report.failed[0].error
    assert len(report.done) == 5 and report.skipped == []
    assert report.summary().startswith("6 scenes: 5 done, 0 skipped, 1 failed (")
    assert "failed Area_1/room_3: ValueError: cannot parse" in report.summary()
    [rec] = store.quarantined()
    assert rec["id"] == "Area_1/room_3" and "Traceback" in rec["traceback"] and "cannot parse" in rec["traceback"]
    assert sorted(e.id for e in store.entries()) == sorted(r.id for r in source.scenes() if r.id != "Area_1/room_3")
    for o in report.done:
        assert o.n_in == 40 and 0 < o.n_out <= 40
        entry = store.read(o.scene)
        assert len(entry) == o.n_out
    manifest = json.loads((store.path / "manifest.json").read_text())
    assert manifest["counts"] == {"done": 5, "skipped": 0, "failed": 1}
    assert manifest["stage_key"] == "stage-1" and manifest["n_scenes"] == 5
    assert [q["id"] for q in manifest["quarantined"]] == ["Area_1/room_3"]
    meta = json.loads((store.scene_dir("Area_0/room_0") / "pcdag.json").read_text())
    assert meta["report"]["n_in"] == 40 and meta["report"]["n_out"] == meta["n_points"]


def test_rerun_skips_done_scenes_retries_failed_and_force_recomputes(tmp_path: Path) -> None:
    store = SceneStore(tmp_path)
    bad = ("Area_0/room_2",)
    run(RandomScenes(n_scenes=5, bad=bad), store)
    first = arrays(store)
    again = run(RandomScenes(n_scenes=5, bad=bad), store)
    assert {o.scene: o.status for o in again.outcomes} == {
        r.id: "failed" if r.id in bad else "skipped" for r in RandomScenes(n_scenes=5).scenes()
    }
    fixed = run(RandomScenes(n_scenes=5), store)
    assert [o.scene for o in fixed.done] == list(bad) and len(fixed.skipped) == 4
    assert store.quarantined() == []
    forced = run(RandomScenes(n_scenes=5), store, force=True)
    assert len(forced.done) == 5
    after = arrays(store)
    for sid, fields in first.items():
        for name, arr in fields.items():
            np.testing.assert_array_equal(after[sid][name], arr)
    new_stage = run(RandomScenes(n_scenes=5), store, stage_key="stage-2")
    assert len(new_stage.done) == 5


def test_same_seed_same_arrays_whatever_the_scheduling(tmp_path: Path) -> None:
    source = RandomScenes(n_scenes=8)
    a, b, c = (SceneStore(tmp_path / n) for n in "abc")
    reports = [
        run(source, a, seed=3, workers=1, partition_size=8),
        run(source, b, seed=3, workers=2, threads_per_worker=2, partition_size=1),  # 4 threads write at once
        run(source, c, seed=4),
    ]
    assert all(len(r.done) == 8 for r in reports), [r.summary() for r in reports]
    ra, rb, rc = arrays(a), arrays(b), arrays(c)
    assert ra.keys() == rb.keys() == rc.keys() and len(ra) == 8
    for sid in ra:
        for name in ra[sid]:
            np.testing.assert_array_equal(ra[sid][name], rb[sid][name])
    assert any(
        len(ra[s]["coord"]) != len(rc[s]["coord"]) or not np.array_equal(ra[s]["coord"], rc[s]["coord"]) for s in ra
    )


def test_scene_fn_returning_a_bad_cloud_is_a_scene_failure(tmp_path: Path) -> None:
    store = SceneStore(tmp_path)

    def make_nan(cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        if cloud.meta["scene"] == "Area_0/room_0":
            cloud["coord"][0] = np.nan
        return cloud

    source = RandomScenes(n_scenes=3)
    report = run_offline(source, source.scenes(), make_nan, store, stage_key="s", progress=False)
    assert [o.scene for o in report.failed] == ["Area_0/room_0"]
    assert "scene Area_0/room_0" in report.failed[0].error and "NaN" in report.failed[0].error
    assert not store.has("Area_0/room_0", scene_key("s", source.scenes()[0]))


def test_duplicate_ids_and_bad_partition_size_are_refused(tmp_path: Path) -> None:
    source = RandomScenes(n_scenes=2)
    refs = source.scenes() * 2
    with pytest.raises(ValueError, match="repeated: Area_0/room_0, Area_1/room_1"):
        run_offline(source, refs, subsample_and_jitter, SceneStore(tmp_path), stage_key="s", progress=False)
    for bad in ({"partition_size": 0}, {"seed": -1}, {"workers": 0}, {"threads_per_worker": 1.5}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} = .* must be a whole number"):
            run(source, SceneStore(tmp_path), **bad)


def test_a_path_that_is_not_a_store_fails_before_any_scene(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("mine")
    with pytest.raises(StoreError, match="not a pcdag scene store"):
        run(RandomScenes(n_scenes=2), SceneStore(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]


def test_nothing_to_do_starts_no_cluster_and_cleans_tmp(tmp_path: Path, monkeypatch) -> None:
    store = SceneStore(tmp_path)
    run(RandomScenes(n_scenes=2), store)
    (store.scenes_dir / ".tmp-Area_0__room_0-1-abcd").mkdir()

    def no_cluster(*a, **k):
        raise AssertionError("a cluster was started although every scene is done")

    monkeypatch.setattr("pcdag.runtime.offline.dask_client", no_cluster)
    report = run(RandomScenes(n_scenes=2), store, progress=True)
    assert len(report.skipped) == 2
    assert not any(p.name.startswith(".tmp-") for p in store.scenes_dir.iterdir())


def test_scene_key_follows_stage_id_and_input_files(tmp_path: Path) -> None:
    f = tmp_path / "scan.ply"
    f.write_bytes(b"abc")
    ref = SceneRef("s", "train", "r", (str(f),))
    k = scene_key("stage", ref)
    assert k == scene_key("stage", SceneRef("s", "train", "r", (str(f),)))
    assert k != scene_key("stage2", ref)
    assert k != scene_key("stage", SceneRef("t", "train", "r", (str(f),)))
    f.write_bytes(b"abcd")
    assert k != scene_key("stage", ref)


@given(n=st.integers(0, 300_000), slots=st.integers(1, 128))
def test_partitions_are_bounded(n: int, slots: int) -> None:
    size = default_partition_size(n, slots)
    assert 1 <= size <= MAX_PARTITION
    tasks = math.ceil(n / size)
    assert tasks <= max(64, 4 * slots, math.ceil(n / MAX_PARTITION))  # a bounded number of tasks
    assert tasks >= min(n, 4 * slots) // 2  # enough tasks to keep every worker thread busy


def test_partition_size_for_typical_runs() -> None:
    assert default_partition_size(17, 1) == 1  # few scenes: one per task, fine progress
    assert math.ceil(1000 / default_partition_size(1000, 1)) <= 64
    assert default_partition_size(100_000, 8) == MAX_PARTITION
    parts = partition(list(range(1000)), default_partition_size(1000, 2))
    assert [x for p in parts for x in p] == list(range(1000)) and len(parts) <= 64


def test_outcome_fields() -> None:
    o = SceneOutcome("a", "done", 1.5, n_in=3, n_out=2)
    report = OfflineReport([o, SceneOutcome("b", "skipped")], 2.04)
    assert report.summary() == "2 scenes: 1 done, 1 skipped, 0 failed (2.0 s)"
    # parts of one item share its loading and split: counted once in the run's time per stage
    parts = [SceneOutcome(f"v/s{i}", "done", 1.0, stages={"load": 0.5, "split": 0.25, "recon": 1.0},
                          shared=("load", "split"), item="v") for i in range(2)]  # fmt: skip
    timed = OfflineReport([*parts, SceneOutcome("w", "failed", 0.5, stages={"load": 0.5}, shared=("load",), item="w")],
                          4.0, {"cluster": 0.25})  # fmt: skip
    assert timed.stage_seconds() == {"load": 1.0, "split": 0.25, "recon": 2.0, "cluster": 0.25}
    assert timed.summary().splitlines()[1] == (
        "time: load 1.0 s (25 %), split 0.2 s (6 %), recon 2.0 s (50 %), cluster 0.2 s (6 %); other 0.5 s"
    )


def test_worker_processes(tmp_path: Path) -> None:
    """Source and chain are pickled to two worker processes; the store travels as a path."""
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    try:
        source = RandomScenes(n_scenes=4, bad=("Area_1/room_1",))
        store = SceneStore(tmp_path / "p")
        report = run(source, store, workers=2, processes=True, memory_limit="1GiB")
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert len(report.done) == 3 and [o.scene for o in report.failed] == ["Area_1/room_1"]
    threads = SceneStore(tmp_path / "t")
    run(source, threads)
    ref, got = arrays(threads), arrays(store)
    assert ref.keys() == got.keys()
    for sid in ref:
        np.testing.assert_array_equal(ref[sid]["coord"], got[sid]["coord"])
