"""The graph model: Python builder, YAML round trip, parameters and their errors."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pcdag.graphs import Graph, GraphError, ParamError, PortRef, dumps_graph, loads_graph, registry
from pcdag.graphs.params import build_params, in_range, integer, one_of, pair, param
from pcdag.testing.graphs import graphs


@given(graphs())
def test_yaml_round_trip_is_exact(graph: Graph) -> None:
    text = dumps_graph(graph)
    again = loads_graph(text)
    assert again == graph
    assert dumps_graph(again) == text


@given(graphs())
def test_generated_graphs_validate(graph: Graph) -> None:
    from pcdag.compiler import validate

    errors = [p for p in validate(graph) if p.severity == "error"]
    assert errors == []


def test_python_builder_matches_yaml() -> None:
    from pcdag.nodes.geometry.grid_sample import GridSample
    from pcdag.nodes.io.store import Store
    from pcdag.nodes.sources.synthetic import SyntheticSource

    g = Graph("demo")
    rooms = g.add("rooms", SyntheticSource(n_scenes=2))
    store = g.add("store", Store(path="stores/demo"), cloud=rooms)
    g.add("grid", GridSample(grid_size=0.05), cloud=store.cloud)
    text = """
name: demo
nodes:
  rooms: {type: SyntheticSource, params: {n_scenes: 2}}
  store: {type: Store, params: {path: stores/demo}, inputs: {cloud: rooms}}
  grid: {type: GridSample, params: {grid_size: 0.05}, inputs: {cloud: store.cloud}}
"""
    assert loads_graph(text) == g


def test_python_api_rejects_bad_parameters_at_once() -> None:
    from pcdag.nodes.geometry.grid_sample import GridSample

    with pytest.raises(ParamError, match=r"grid_size = -1.0 is out of range"):
        GridSample(grid_size=-1.0)
    with pytest.raises(ParamError, match="did you mean 'grid_size'"):
        GridSample(gridsize=0.1)


def test_duplicate_node_name_is_refused() -> None:
    g = Graph("g")
    g.add("a", "SyntheticSource")
    with pytest.raises(ValueError, match="already has a node named 'a'"):
        g.add("a", "SyntheticSource")


@pytest.mark.parametrize("text", ["a", "a.cloud"])
def test_port_ref_round_trip(text: str) -> None:
    assert str(PortRef.parse(text)) == text


@pytest.mark.parametrize("text", ["", "a.b.c", 3])
def test_port_ref_rejects(text) -> None:
    with pytest.raises(ValueError):
        PortRef.parse(text)


@attrs.frozen
class _P:
    size: float = param(0.1, in_range(0.0, 1.0, lo_open=True), unit="m")
    k: int = param(8, integer(1, 64))
    mode: str = param("a", one_of("a", "b"))
    span: list = param([0.5, 1.5], pair(0.0, None))


def test_build_params_reports_every_problem() -> None:
    params, problems = build_params(_P, {"size": 0.0, "k": 2.5, "mode": "c", "span": [2, 1], "sise": 1})
    assert params is None
    text = "\n".join(problems)
    for expected in (
        "size = 0.0 is out of range; allowed (0.0, 1.0]",
        "k = 2.5 is not a whole number",
        "mode = 'c' is not allowed; choose one of 'a', 'b'",
        "low must not exceed high",
        "unknown parameter 'sise'; did you mean 'size'?",
    ):
        assert expected in text
    assert len(problems) == 5


@given(st.floats(0.0, 1.0, exclude_min=True), st.integers(1, 64))
def test_build_params_accepts_the_allowed_range(size: float, k: int) -> None:
    params, problems = build_params(_P, {"size": size, "k": k})
    assert problems == [] and params.size == size and params.k == k


def test_bools_are_not_numbers() -> None:
    _, problems = build_params(_P, {"k": True})
    assert problems and "not a whole number" in problems[0]


def test_every_registered_node_documents_itself() -> None:
    for name in registry.names():
        cls = registry.get(name)
        assert cls.__doc__ and cls.__doc__.strip(), f"{name} has no docstring"
        assert cls.help().startswith(name)
        for f in attrs.fields(cls.Params):
            assert f.validator is not None, f"{name}.{f.name} has no validator"


def test_yaml_errors_carry_line_numbers() -> None:
    text = "name: x\nnodes:\n  a: {type: SyntheticSource}\n  b: {type: Store, params: {path: p}, wat: 1}\n"
    with pytest.raises(GraphError) as err:
        loads_graph(text, "x.yaml")
    (problem,) = err.value.problems
    assert problem.node == "b" and str(problem.origin) == "x.yaml:4" and "unknown key 'wat'" in problem.message
