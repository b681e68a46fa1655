"""Expanding nodes: one source item becomes several scenes, each stored, skipped or quarantined on its own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pcdag.compiler import compile_graph
from pcdag.graphs import Graph, In, Node, Out, PointCloud, registry
from pcdag.graphs.node import Parts
from pcdag.graphs.ports import POINT_CLOUD, Placement
from pcdag.runtime.offline import run_offline
from pcdag.runtime.store import SceneStore


class SplitHalves(Node):
    """Test double: cut a cloud at x = 0 into 'west' and 'east'; the east half of scene 1 is made invalid."""

    placements = (Placement.OFFLINE,)
    expands = True
    inputs = {"cloud": In(POINT_CLOUD)}
    outputs = {"cloud": Out(POINT_CLOUD)}

    def run(self, rng, cloud):
        x = cloud["coord"][:, 0]
        west, east = cloud.copy().select(x < 0), cloud.copy().select(x >= 0)
        if cloud.meta["scene"].endswith("1"):
            east["coord"] = np.full_like(east["coord"], np.nan)
        return {"cloud": Parts((("west", west), ("east", east)))}


def _run(store: Path):
    g = Graph("split")
    rooms = g.add("rooms", "SyntheticSource", params={"n_scenes": 3, "points": 3000})
    halves = g.add("halves", "SplitHalves", cloud=rooms)
    g.add("normals", "EstimateNormals", placement="offline", params={"k": 8}, cloud=halves)
    g.add("store", "Store", params={"path": str(store)}, cloud="normals")
    plan = compile_graph(g)
    (job,) = plan.offline
    source = plan.node("rooms")
    return run_offline(
        source, source.scenes(), job.program, SceneStore(store), stage_key=plan.keys["store"], progress=False
    )


def test_parts_are_stored_skipped_and_quarantined_separately(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with registry.registered(SplitHalves):
        first = _run(store)
        again = _run(store)
    assert first.counts() == {"done": 5, "skipped": 0, "failed": 1}
    (bad,) = first.failed
    assert bad.scene == "synthetic-0-00001/east" and "finite" in bad.error
    entries = {e.id: e for e in SceneStore(store).entries()}
    assert "synthetic-0-00000/west" in entries and entries["synthetic-0-00000/west"].room.endswith("/west")
    # items whose parts all completed are skipped whole; the item with a failed part runs again
    assert again.counts() == {"done": 1, "skipped": 4, "failed": 1}
    meta = json.loads((store / "scenes" / "synthetic-0-00000__west" / "pcdag.json").read_text())
    assert set(meta["report"]["seconds"]) == {"load", "halves", "normals", "validate"}
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["other_scenes"] == []


class NoParts(Node):
    """Test double: an expanding node that finds nothing to keep."""

    placements = (Placement.OFFLINE,)
    expands = True
    inputs = {"cloud": In(POINT_CLOUD)}
    outputs = {"cloud": Out(POINT_CLOUD)}

    def run(self, rng, cloud):
        return {"cloud": Parts(())}


def test_an_item_with_no_parts_is_quarantined_and_the_run_finishes(tmp_path: Path) -> None:
    g = Graph("none")
    rooms = g.add("rooms", "SyntheticSource", params={"n_scenes": 2, "points": 500})
    g.add("store", "Store", params={"path": str(tmp_path / "s")}, cloud=g.add("none", "NoParts", cloud=rooms))
    with registry.registered(NoParts):
        plan = compile_graph(g)
        (job,) = plan.offline
        src = plan.node("rooms")
        report = run_offline(src, src.scenes(), job.program, SceneStore(tmp_path / "s"), stage_key="k", progress=False)
    assert report.counts() == {"done": 0, "skipped": 0, "failed": 2}
    assert "expanded into no scenes" in report.failed[0].error
    assert (tmp_path / "s" / "manifest.json").exists()


def test_a_later_success_clears_the_items_earlier_quarantine(tmp_path: Path) -> None:
    store = SceneStore(tmp_path / "s")
    store.quarantine("v1", key="k", split="train", room="v1", error="boom", traceback="")
    store.write("v1/scene00", PointCloud({"coord": np.zeros((2, 3), np.float32)}), key="k", split="train", room="r")
    store.mark_item("v1", "k", ["v1/scene00"])
    assert store.quarantined() == [] and store.item_scenes("v1", "k") == ["v1/scene00"]
