"""Faults during an offline run, each asserting nothing is lost: a worker process killed mid-scene, a full disk
during a store write, scene names that try to escape the store."""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
from pathlib import Path

import attrs
import cloudpickle
import numpy as np
import pytest

from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.node import SceneRef, SceneSource
from pcdag.graphs.params import of_type, param
from pcdag.nodes.sources.synthetic import SyntheticSource
from pcdag.runtime import store as store_module
from pcdag.runtime.offline import run_offline
from pcdag.runtime.store import SceneStore


@attrs.frozen
class KillWorker:
    """A scene function that SIGKILLs its own process on scene ``victim``: once (a marker file remembers it) or,
    with ``always``, every time."""

    victim: str
    marker: str
    always: bool = False

    def __call__(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        if cloud.meta["scene"] == self.victim and (self.always or not os.path.exists(self.marker)):
            Path(self.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return cloud


def _run(source, store: SceneStore, scene_fn=lambda cloud, rng: cloud, **kw):
    return run_offline(source, source.scenes(), scene_fn, store, stage_key="k", progress=False, **kw)


@pytest.mark.slow  # two worker processes, each kill costs a worker restart: ~20 s each on 2 shared cores
@pytest.mark.parametrize("always", [False, True], ids=["killed-once", "killed-every-time"])
def test_a_worker_process_killed_mid_scene_loses_no_scene(tmp_path: Path, always: bool) -> None:
    source = SyntheticSource(n_scenes=4, points=200)
    victim = source.scenes()[1].id
    kill = KillWorker(victim, str(tmp_path / "killed"), always)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    try:
        report = _run(source, SceneStore(tmp_path / "s"), kill, workers=2, processes=True, memory_limit="1GiB")
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert (tmp_path / "killed").exists()  # a worker really died
    store = SceneStore(tmp_path / "s")
    others = [r.id for r in source.scenes() if r.id != victim]
    if always:  # the scene that kills every worker is quarantined; the others complete
        assert [o.scene for o in report.failed] == [victim] and "worker process died" in report.failed[0].error
        assert [e.id for e in store.entries()] == others and [r["id"] for r in store.quarantined()] == [victim]
    else:
        assert report.counts() == {"done": 4, "skipped": 0, "failed": 0}
        assert [e.id for e in store.entries()] == [r.id for r in source.scenes()] and store.quarantined() == []


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["_write_field", "replace_dir"])
def test_a_full_disk_quarantines_the_scene_and_keeps_the_store_consistent(tmp_path, monkeypatch, where) -> None:
    source = SyntheticSource(n_scenes=3, points=200)
    victim = source.scenes()[2].id
    real = getattr(store_module, where)

    def full_for_victim(*args, **kwargs):
        if victim in str(args[0] if where == "replace_dir" else args[0].store_path):
            no_space()
        return real(*args, **kwargs)

    monkeypatch.setattr(store_module, where, full_for_victim)
    store = SceneStore(tmp_path / "s")
    report = _run(source, store)
    assert [o.scene for o in report.failed] == [victim] and "No space left on device" in report.failed[0].error
    assert not [p for p in store.scenes_dir.iterdir() if p.name.startswith(".")]  # no temporary left behind
    manifest = json.loads((store.path / "manifest.json").read_text())
    assert [s["id"] for s in manifest["scenes"]] == [r.id for r in source.scenes()[:2]]
    assert [q["id"] for q in manifest["quarantined"]] == [victim]
    for scene in manifest["scenes"]:
        assert len(store.read(scene["id"])) == scene["n_points"]
    monkeypatch.setattr(store_module, where, real)  # space freed: the re-run completes the scene, nothing else
    again = _run(source, store)
    assert again.counts() == {"done": 1, "skipped": 2, "failed": 0} and store.quarantined() == []


HOSTILE = ("../evil", "/abs/evil", "a\x00b", "..", ".", "x" * 5000, "a/b", "a__b", "scenes/../../up", "ok")


class NamedScenes(SceneSource):
    """Tiny clouds under the scene ids given."""

    @attrs.frozen
    class Params:
        ids: tuple = param((), of_type(tuple))

    def scenes(self) -> list[SceneRef]:
        return [SceneRef(i, "train", "room") for i in self.params.ids]

    def load(self, ref: SceneRef) -> PointCloud:
        coord = np.random.default_rng(len(ref.id)).normal(size=(20, 3)).astype(np.float32)  # [20, 3]
        return PointCloud({"coord": coord}, {"scene": ref.id})


def tree(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")}


def test_hostile_scene_names_never_write_outside_the_store(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    before = tree(tmp_path)
    source = NamedScenes(ids=HOSTILE)
    store = SceneStore(tmp_path / "data" / "store")
    report = _run(source, store)
    written = tree(tmp_path) - before
    assert written and all(Path(p).is_relative_to(store.path) for p in written), sorted(written - set())[:5]
    # 'a/b' and 'a__b' share a directory name: the second is refused naming both, never overwritten
    assert [o.scene for o in report.failed] == ["a__b"] and "'a__b' and 'a/b'" in report.failed[0].error
    stored = {e.id for e in store.entries()}
    assert stored == set(HOSTILE) - {"a__b"}
    for scene in stored:  # every name reads back as itself
        assert store.read(scene).meta["scene"] == scene
    assert all(len(p.name) < 255 for p in store.path.rglob("*"))
