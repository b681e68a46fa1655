"""Paths in graphs: relative to the graph file (``--set`` to the working directory), checked before anything
runs; partial loading reports every problem; YAML bombs are refused before expansion."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pcdag.cli import _load, main
from pcdag.compiler import compile_graph, validate
from pcdag.graphs import GraphError, dumps_graph, load_graph, loads_graph
from pcdag.graphs.yamlio import MAX_YAML_NODES, _expanded_size, read_graph

HERE = Path(__file__).parent
GRAPH = """\
pcdag: 1
name: rel
nodes:
  src: {type: PLYSource, params: {root: ../clouds}}
  grid: {type: GridSample, placement: offline, inputs: {cloud: src}}
  store: {type: Store, params: {path: ../stores/rel}, inputs: {cloud: grid}}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    """``tmp/graphs/rel.yaml`` reading ``tmp/clouds``; the working directory is elsewhere (``tmp/elsewhere``)."""
    (tmp_path / "graphs").mkdir()
    (tmp_path / "clouds").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "graphs" / "rel.yaml").write_text(GRAPH)
    monkeypatch.chdir(tmp_path / "elsewhere")
    return tmp_path


def test_relative_paths_resolve_against_the_graph_file_from_any_directory(project: Path) -> None:
    plan = compile_graph(load_graph(project / "graphs" / "rel.yaml"))
    assert plan.node("src").params.root == str((project / "clouds").resolve())
    assert plan.node("store").params.path == str((project / "stores" / "rel").resolve())


def test_dump_writes_the_paths_as_written(project: Path) -> None:
    text = dumps_graph(load_graph(project / "graphs" / "rel.yaml"))
    assert "root: ../clouds" in text and "path: ../stores/rel" in text


def test_set_values_are_relative_to_the_working_directory(project: Path) -> None:
    (project / "elsewhere" / "mine").mkdir()
    graph = _load(project / "graphs" / "rel.yaml", ["src.root=mine", "grid.grid_size=0.05"])
    assert graph.nodes["src"].params["root"] == str((project / "elsewhere" / "mine").resolve())
    assert graph.nodes["grid"].params["grid_size"] == 0.05  # not a path: untouched
    assert compile_graph(graph).node("src").params.root == str((project / "elsewhere" / "mine").resolve())


def test_a_preset_in_the_file_is_relative_to_the_file(project: Path) -> None:
    (project / "other").mkdir()
    path = project / "graphs" / "rel.yaml"
    path.write_text(GRAPH + "presets:\n  other: {src.root: ../other}\n")
    plan = compile_graph(_load(path, [], "other"))
    assert plan.node("src").params.root == str((project / "other").resolve())


def test_strings_without_a_base_resolve_against_the_working_directory(project: Path) -> None:
    (project / "elsewhere" / "clouds").mkdir()
    plan = compile_graph(loads_graph(GRAPH.replace("../clouds", "clouds")))
    assert plan.node("src").params.root == str((project / "elsewhere" / "clouds").resolve())


def test_missing_root_is_an_error_naming_node_param_absolute_path_and_line(project: Path, capsys) -> None:
    (project / "clouds").rmdir()
    path = project / "graphs" / "rel.yaml"
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:4: error [path] node 'src': root = '../clouds' ({(project / 'clouds').resolve()})" in err
    assert main(["plan", str(path), "--no-picture"]) == 1  # plan, preprocess, train share the check
    assert "[path] node 'src'" in capsys.readouterr().err


def test_store_that_cannot_be_written_is_an_error(project: Path) -> None:
    (project / "afile").write_text("not a folder")
    graph = _load(project / "graphs" / "rel.yaml", [f"store.path={project / 'afile' / 'store'}"])
    (p,) = [p for p in validate(graph) if p.code == "path"]
    assert p.node == "store" and f"{project / 'afile'} is not a folder" in p.message


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_store_under_a_read_only_folder_is_an_error(project: Path) -> None:
    ro = project / "ro"
    ro.mkdir(mode=0o555)
    graph = _load(project / "graphs" / "rel.yaml", [f"store.path={ro / 'store'}"])
    assert any(p.code == "path" and "not writable" in p.message for p in validate(graph))


def test_a_store_only_read_may_not_exist_yet_but_may_not_be_a_file(project: Path) -> None:
    text = "pcdag: 1\nname: r\nnodes:\n  store: {type: Store, params: {path: PATH}}\n"
    text += "  grid: {type: GridSample, inputs: {cloud: store}}\n"
    assert validate(loads_graph(text.replace("PATH", str(project / "not-yet")))) == []
    (project / "afile").write_text("x")
    (p,) = validate(loads_graph(text.replace("PATH", str(project / "afile"))))
    assert p.code == "path" and "not a folder" in p.message


def test_missing_weights_file_is_an_error(project: Path) -> None:
    text = "pcdag: 1\nname: w\nnodes:\n  b: {type: PointTransformerV3, params: {weights: nope.pth}}\n"
    found = [p for p in validate(loads_graph(text)) if p.code == "path"]
    assert found and found[0].node == "b" and str(project / "elsewhere" / "nope.pth") in found[0].message


def test_stray_node_key_does_not_hide_the_parameter_errors_after_it(capsys) -> None:
    path = HERE / "graphs" / "broken" / "stray_key_and_bad_params.yaml"
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "3 errors" in err
    assert "unknown key 'colour'" in err and "grid_size = -0.02" in err and "mode = 'fast'" in err


def test_unusable_node_is_reported_once_not_as_unknown_type_or_unconnected() -> None:
    graph, problems = read_graph((HERE / "graphs" / "broken" / "bad_node_shape.yaml").read_text(), "b.yaml")
    assert set(graph.nodes) == {"scans", "grid"}
    assert [p.code for p in validate(graph)] == [p.code for p in problems] == ["not-a-graph"] * 3


def _laughs(levels: int, width: int) -> str:
    lines = ["a0: &a0 [lol]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_before_expansion() -> None:
    # 9 levels of 10 aliases: 10**9 strings if expanded (would hang or run out of memory, not fail)
    with pytest.raises(GraphError) as info:
        loads_graph(_laughs(9, 10), "bomb.yaml")
    (p,) = info.value.problems
    assert p.code == "yaml" and "bomb.yaml refused" in p.message and "expand to" in p.message


def test_self_referring_alias_is_refused() -> None:
    with pytest.raises(GraphError, match="refers to itself"):
        loads_graph("a: &a [*a]\n")


def test_a_few_aliases_are_fine() -> None:
    text = GRAPH.replace("{root: ../clouds}", "&p {root: ../clouds}") + "  src2: {type: PLYSource, params: *p}\n"
    assert loads_graph(text).nodes["src2"].params == {"root": "../clouds"}


def _count(value) -> int:
    """Nodes of a constructed YAML value: the oracle for the count done on the unexpanded tree."""
    if isinstance(value, dict):
        return 1 + sum(_count(k) + _count(v) for k, v in value.items())
    if isinstance(value, list):
        return 1 + sum(_count(v) for v in value)
    return 1


@settings(max_examples=30, deadline=None)
@given(levels=st.integers(0, 5), width=st.integers(1, 4))
def test_expanded_size_counts_what_safe_load_builds(levels: int, width: int) -> None:
    text = _laughs(levels, width)
    assert _expanded_size(yaml.compose(text, Loader=yaml.SafeLoader)) == _count(yaml.safe_load(text))
    assert _count(yaml.safe_load(text)) < MAX_YAML_NODES  # so these all load
