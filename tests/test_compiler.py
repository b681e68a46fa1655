"""Compiler: fusion groups and their reasons, content-addressed keys, stage programs, plan text and pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from pcdag.compiler import compile_graph
from pcdag.compiler.picture import draw, to_dot
from pcdag.graphs import Graph, PointCloud, load_graph, loads_graph
from pcdag.nodes.augment.flip import RandomFlip
from pcdag.nodes.augment.jitter import RandomJitter
from pcdag.nodes.augment.rotate import RandomRotate
from pcdag.nodes.geometry.grid_sample import GridSample
from pcdag.testing.strategies import point_clouds

GRAPHS = Path(__file__).resolve().parents[1] / "graphs"


def _pipeline(grid_size: float = 0.05, k: int = 16) -> Graph:
    g = Graph("p")
    rooms = g.add("rooms", "SyntheticSource", params={"n_scenes": 2, "points": 2000})
    grid = g.add("grid", "GridSample", placement="offline", params={"grid_size": grid_size}, cloud=rooms)
    normals = g.add("normals", "EstimateNormals", placement="offline", params={"k": k}, cloud=grid)
    store = g.add("store", "Store", params={"path": "stores/p"}, cloud=normals)
    rot = g.add("rot", "RandomRotate", cloud=store)
    g.add("jit", "RandomJitter", cloud=rot)
    return g


def test_offline_and_loader_chains_fuse_and_say_where_they_end() -> None:
    plan = compile_graph(_pipeline())
    groups = {grp.nodes: grp.ends for grp in plan.groups}
    assert ("rooms", "grid", "normals") in groups and "store boundary" in groups[("rooms", "grid", "normals")]
    assert groups[("rot", "jit")] == "end of the graph"
    (job,) = plan.offline
    assert (job.source, job.store, job.program.nodes) == ("rooms", "store", ("grid", "normals"))
    assert plan.loader.nodes == ("rot", "jit")


def test_fan_out_breaks_the_chain_and_each_store_gets_its_job() -> None:
    g = _pipeline()
    g.add("coarse", "Store", params={"path": "stores/coarse"}, cloud="grid")
    plan = compile_graph(g)
    ends = {grp.nodes: grp.ends for grp in plan.groups}
    assert "'grid' feeds 2 nodes" in ends[("rooms", "grid")]
    assert {(j.store, j.program.nodes) for j in plan.offline} == {("store", ("grid", "normals")), ("coarse", ("grid",))}


def test_a_branch_is_copied_so_branches_do_not_interfere() -> None:
    g = Graph("b")
    rooms = g.add("rooms", "SyntheticSource", params={"n_scenes": 1, "points": 500})
    g.add("a", "Store", params={"path": "stores/a"}, cloud=rooms)
    plan = compile_graph(g)
    (job,) = plan.offline
    cloud = PointCloud({"coord": np.zeros((3, 3), np.float32)})
    assert job.program(cloud, np.random.default_rng(0)) is cloud  # single consumer: passed by reference


def test_keys_change_downstream_of_a_parameter_change_only() -> None:
    a = compile_graph(_pipeline()).keys
    b = compile_graph(_pipeline(k=20)).keys
    assert a["rooms"] == b["rooms"] and a["grid"] == b["grid"]
    for name in ("normals", "store", "rot", "jit"):
        assert a[name] != b[name]
    assert compile_graph(_pipeline()).keys == a  # deterministic


def test_keys_include_node_versions(monkeypatch) -> None:
    a = compile_graph(_pipeline()).keys
    monkeypatch.setattr(GridSample, "version", GridSample.version + 1)
    b = compile_graph(_pipeline()).keys
    assert a["rooms"] == b["rooms"] and a["grid"] != b["grid"] and a["jit"] != b["jit"]


def test_default_written_out_gives_the_same_key() -> None:
    a = compile_graph(_pipeline()).keys
    g = _pipeline()
    decl = g.nodes["rot"]
    g.nodes["rot"] = type(decl)(decl.name, decl.type, {"axis": "z"}, decl.inputs, decl.placement)
    assert compile_graph(g).keys == a


@given(point_clouds(min_points=5, max_points=200), st.integers(0, 2**32 - 1))
def test_loader_program_equals_applying_nodes_in_order(cloud: PointCloud, seed: int) -> None:
    g = Graph("l")
    store = g.add("store", "Store", params={"path": "stores/x", "fields": ["color", "normal"]})
    r = g.add("r", RandomRotate(), cloud=store)
    f = g.add("f", RandomFlip(p=1.0), cloud=r)
    j = g.add("j", RandomJitter(), cloud=f)
    g.add("grid", GridSample(grid_size=0.1), cloud=j)
    plan = compile_graph(g)
    fused = plan.loader(cloud.copy(), np.random.default_rng(seed)).materialise()
    rng = np.random.default_rng(seed)
    step = cloud.copy()
    for node in (RandomRotate(), RandomFlip(p=1.0), RandomJitter(), GridSample(grid_size=0.1)):
        step = node.apply(step, rng)
    step = step.materialise()
    assert set(fused) == set(step)
    for name in fused:
        np.testing.assert_array_equal(fused[name], step[name])


@given(point_clouds(min_points=1, max_points=100), st.data())
def test_lazy_selection_equals_eager_gather(cloud: PointCloud, data) -> None:
    eager = {k: np.array(v) for k, v in cloud.copy().materialise().items()}
    lazy = cloud.copy()
    for _ in range(data.draw(st.integers(1, 4))):
        n = len(lazy)
        idx = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=2 * n)), dtype=np.int64)
        if data.draw(st.booleans()):
            lazy["coord"]  # touch one field so it becomes live
        lazy.select(idx)
        eager = {k: v[idx] for k, v in eager.items()}
    out = lazy.materialise()
    assert set(out) == set(eager)
    for k in out:
        np.testing.assert_array_equal(out[k], eager[k])


def test_plan_text_and_pictures(tmp_path: Path) -> None:
    plan = compile_graph(load_graph(GRAPHS / "scannet.yaml"))
    text = plan.render()
    for expected in (
        "stage 1: offline",
        "stage 2: store",
        "stage 3: loader",
        "fusion:",
        "[scans → normals] (offline)",
        "grid_size=0.02 m",
        "17 scenes in 8 rooms (train 13, val 4)",
    ):
        assert expected in text
    assert '"scans" -> "normals"' in to_dot(plan)
    paths = draw(plan, tmp_path / "scannet")
    assert sorted(p.suffix for p in paths) == [".dot", ".png", ".svg"]
    assert (tmp_path / "scannet.png").read_bytes()[:4] == b"\x89PNG"
    assert "<svg" in (tmp_path / "scannet.svg").read_text()


def test_where_a_store_lives_is_not_part_of_any_key() -> None:
    a = compile_graph(_pipeline()).keys
    g = _pipeline()
    decl = g.nodes["store"]
    g.nodes["store"] = type(decl)(decl.name, decl.type, {"path": "elsewhere", "splits": ["val"]}, decl.inputs)
    assert compile_graph(g).keys == a


def test_plan_says_which_node_expands_items_into_scenes(tmp_path) -> None:
    from pcdag.graphs.overrides import apply_overrides

    graph = loads_graph((GRAPHS / "roomtours.yaml").read_text(), "roomtours.yaml")
    plan = compile_graph(apply_overrides(graph, {"videos.root": str(tmp_path)}))  # the videos the user supplies
    (job,) = plan.offline
    assert job.program.expands and "'split' expands each item into several scenes" in plan.render()
