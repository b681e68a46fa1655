"""The command line: help on every command, nodes, doctor, plan pictures, overrides; and the README's Python."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pcdag.cli import main
from pcdag.compiler import validate
from pcdag.graphs import Graph
from pcdag.testing.graphs import graphs

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", ["validate", "plan", "preprocess", "nodes", "doctor", "stats"])
def test_every_command_has_help(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0 and "usage: pcdag " + command in capsys.readouterr().out


def test_nodes_lists_roles_and_shows_allowed_values(capsys) -> None:
    assert main(["nodes"]) == 0
    out = capsys.readouterr().out
    assert "sources:" in out and "GridSample" in out and re.search(r"^io: +Store$", out, re.M)
    assert main(["nodes", "GridSample"]) == 0
    out = capsys.readouterr().out
    assert "grid_size = 0.02 m  (allowed (0.0001, 10.0])" in out and "mode = 'train'  (allowed train | test)" in out
    assert main(["nodes", "GridSampel"]) == 1 and "did you mean 'GridSample'" in capsys.readouterr().err


def test_doctor_reports_torch_and_backends(capsys) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for name in ("python", "torch", "cuda", "spconv", "pycolmap", "av", "distributed"):
        assert re.search(rf"^\s*{name}\b", out, re.M), name


def test_plan_prints_and_draws(tmp_path: Path, capsys) -> None:
    assert main(["plan", str(REPO / "graphs" / "s3dis.yaml"), "--out", str(tmp_path / "pic")]) == 0
    out = capsys.readouterr().out
    assert "[rooms → grid → outliers → normals] (offline)" in out and "4 scenes in 4 rooms (train 2, val 2)" in out
    assert (tmp_path / "pic.png").stat().st_size > 1000 and (tmp_path / "pic.dot").exists()


def test_bad_override_is_reported(capsys) -> None:
    assert main(["validate", str(REPO / "graphs" / "scannet.yaml"), "--set", "nope.k=3"]) == 1
    assert "no node 'nope'" in capsys.readouterr().err
    assert main(["validate", str(REPO / "graphs" / "scannet.yaml"), "--set", "normals.k=0"]) == 1
    assert "k = 0 is out of range" in capsys.readouterr().err


def test_missing_graph_file_is_named(capsys) -> None:
    assert main(["plan", "no/such/graph.yaml"]) == 1
    assert "cannot read graph file 'no/such/graph.yaml'" in capsys.readouterr().err


@given(graphs(), st.data())
def test_breaking_a_valid_graph_is_caught_and_named(graph: Graph, data) -> None:
    """Break one thing in a random valid graph: validation names that node and that kind of problem."""
    names = [n for n in graph.nodes if graph.nodes[n].inputs]
    victim = data.draw(st.sampled_from(names))
    decl = graph.nodes[victim]
    kind = data.draw(st.sampled_from(["disconnect", "unknown-type", "unknown-param", "dangling"]))
    if kind == "disconnect" and decl.type != "Store":
        graph.nodes[victim] = type(decl)(decl.name, decl.type, decl.params, {}, decl.placement)
        expect = "unconnected"
    elif kind == "unknown-type":
        graph.nodes[victim] = type(decl)(decl.name, decl.type + "X", decl.params, decl.inputs, decl.placement)
        expect = "unknown-type"
    elif kind == "dangling":
        ref = {"cloud": type(next(iter(decl.inputs.values())))("nowhere")}
        graph.nodes[victim] = type(decl)(decl.name, decl.type, decl.params, ref, decl.placement)
        expect = "unknown-node"
    else:
        graph.nodes[victim] = type(decl)(decl.name, decl.type, {**decl.params, "zzz": 1}, decl.inputs, decl.placement)
        expect = "bad-param"
    problems = validate(graph)
    assert any(p.code == expect and p.node == victim for p in problems), [str(p) for p in problems]


def test_readme_python_example_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    text = (REPO / "README.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, re.S)
    monkeypatch.chdir(REPO)
    code = code.replace('"my-graph.yaml"', repr(str(tmp_path / "my-graph.yaml")))
    exec(compile(code, "README.md", "exec"), {})
    assert "stage 3: loader" in capsys.readouterr().out
    from pcdag.graphs import load_graph

    assert load_graph(tmp_path / "my-graph.yaml").nodes["grid"].params == {"grid_size": 0.02, "mode": "train"}
