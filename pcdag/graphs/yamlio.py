"""YAML form of a graph (``yaml.safe_load`` only), with line numbers kept for error messages.

    pcdag: 1
    name: scannet-preprocess
    settings: {seed: 0}
    nodes:
      scans:  {type: ScanNetSource, params: {root: ../shared/data/scannet-mini}}
      grid:   {type: GridSample, params: {grid_size: 0.02}, inputs: {cloud: scans}}

Relative paths in parameters are relative to the directory the command runs in.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import yaml

from pcdag.graphs.graph import SETTINGS, Graph, NodeDecl, Origin, PortRef
from pcdag.graphs.problems import GraphError, Problem

FORMAT_VERSION = 1
_NODE_KEYS = ("type", "params", "inputs", "placement")


def _lines(text: str) -> dict[tuple[str, ...], int]:
    """Map key paths (``("nodes", "grid", "params", "grid_size")``) to 1-based line numbers."""
    out: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    p = (*path, str(key.value))
                    out[p] = key.start_mark.line + 1
                    walk(value, p)

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return out
    if root is not None:
        walk(root, ())
    return out


def loads_graph(text: str, file: str = "<string>") -> Graph:
    """Parse a graph from YAML text; raises ``GraphError`` listing every structural problem."""
    stream = io.StringIO(text)
    stream.name = file  # PyYAML names the file in its messages
    try:
        data = yaml.safe_load(stream)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        origin = Origin(file, mark.line + 1) if mark else None
        raise GraphError([Problem("yaml", f"not valid YAML: {exc}", origin=origin)]) from None
    lines = _lines(text)

    def at(*path: str) -> Origin:
        return Origin(file, lines.get(path, 1))

    if not isinstance(data, dict):
        raise GraphError([Problem("not-a-graph", "the file is not a mapping with 'name' and 'nodes'", origin=at())])
    problems: list[Problem] = []
    unknown_top = sorted(set(data) - {"pcdag", "name", "nodes", "settings", "presets"})
    for key in unknown_top:
        problems.append(
            Problem(
                "not-a-graph",
                f"unknown top-level key {key!r}",
                origin=at(key),
                fix="top-level keys are pcdag, name, settings, presets, nodes",
            )
        )
    version = data.get("pcdag", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        problems.append(
            Problem(
                "not-a-graph",
                f"graph format {version!r} is not supported (this pcdag reads {FORMAT_VERSION})",
                origin=at("pcdag"),
            )
        )
    name = data.get("name")
    if not isinstance(name, str) or not name:
        problems.append(Problem("not-a-graph", "the graph needs a 'name' (a string)", origin=at()))
        name = Path(file).stem
    settings = data.get("settings") or {}
    if not isinstance(settings, dict):
        problems.append(Problem("not-a-graph", "'settings' must be a mapping", origin=at("settings")))
        settings = {}
    for key in settings:
        if key not in SETTINGS:
            problems.append(
                Problem(
                    "not-a-graph",
                    f"unknown setting {key!r}",
                    origin=at("settings", key),
                    fix="known settings: " + ", ".join(SETTINGS),
                )
            )
    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, dict) or not raw_nodes:
        problems.append(
            Problem(
                "not-a-graph",
                "the graph needs 'nodes': a mapping of node name to declaration",
                origin=at("nodes") if "nodes" in data else at(),
            )
        )
        raw_nodes = {}
    presets, p = _presets(data.get("presets"), at)
    problems += p
    graph = Graph(name, {}, dict(settings), origin=at(), presets=presets)
    for node_name, raw in raw_nodes.items():
        decl, node_problems = _node(str(node_name), raw, lambda *p, n=node_name: at("nodes", str(n), *p))
        problems += node_problems
        if decl is not None:
            graph.nodes[decl.name] = decl
    if problems:
        raise GraphError(problems)
    return graph


def _presets(raw: Any, at) -> tuple[dict[str, dict[str, Any]], list[Problem]]:
    """``presets: {name: {"node.param" | "settings.key": value}}``; keys are checked when a preset is applied."""
    if raw is None:
        return {}, []
    if not isinstance(raw, dict):
        return {}, [Problem("not-a-graph", "'presets' must map a preset name to its overrides", origin=at("presets"))]
    out, problems = {}, []
    for name, body in raw.items():
        if not isinstance(body, dict) or not all(isinstance(k, str) and "." in k for k in body):
            problems.append(
                Problem(
                    "not-a-graph",
                    f"preset {name!r} must map 'node.param' or 'settings.key' to a value",
                    origin=at("presets", str(name)),
                )
            )
            continue
        out[str(name)] = dict(body)
    return out, problems


def _node(name: str, raw: Any, at) -> tuple[NodeDecl | None, list[Problem]]:
    if not isinstance(raw, dict):
        return None, [Problem("not-a-graph", "a node must be a mapping with 'type'", name, origin=at())]
    problems = [
        Problem(
            "not-a-graph",
            f"unknown key {k!r} in node",
            name,
            fix=f"node keys are {', '.join(_NODE_KEYS)}",
            origin=at(k),
        )
        for k in raw
        if k not in _NODE_KEYS
    ]
    node_type = raw.get("type")
    if not isinstance(node_type, str):
        problems.append(Problem("not-a-graph", "the node has no 'type'", name, origin=at()))
        node_type = ""
    params = raw.get("params") or {}
    if not isinstance(params, dict):
        problems.append(Problem("not-a-graph", "'params' must be a mapping", name, origin=at("params")))
        params = {}
    inputs: dict[str, PortRef] = {}
    raw_inputs = raw.get("inputs") or {}
    if not isinstance(raw_inputs, dict):
        problems.append(
            Problem("not-a-graph", "'inputs' must map input port to 'node' or 'node.port'", name, origin=at("inputs"))
        )
        raw_inputs = {}
    for port, text in raw_inputs.items():
        try:
            inputs[str(port)] = PortRef.parse(text)
        except ValueError as exc:
            problems.append(Problem("not-a-graph", str(exc), name, origin=at("inputs", str(port))))
    placement = raw.get("placement")
    if placement is not None and not isinstance(placement, str):
        problems.append(Problem("not-a-graph", "'placement' must be a string", name, origin=at("placement")))
        placement = None
    lines = {
        f"{section}.{key}": at(section, str(key)).line
        for section in ("params", "inputs")
        for key in (raw.get(section) or {})
        if isinstance(raw.get(section), dict)
    }
    return NodeDecl(name, node_type, params, inputs, placement, origin=at(), lines=lines), problems


def load_graph(path: str | Path) -> Graph:
    """Read a graph file; a missing or unreadable file is a ``GraphError`` naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GraphError([Problem("file", f"cannot read graph file {str(path)!r}: {exc}")]) from None
    return loads_graph(text, str(path))


def graph_to_dict(graph: Graph) -> dict[str, Any]:
    out: dict[str, Any] = {"pcdag": FORMAT_VERSION, "name": graph.name}
    if graph.settings:
        out["settings"] = dict(graph.settings)
    if graph.presets:
        out["presets"] = {k: dict(v) for k, v in graph.presets.items()}
    nodes: dict[str, Any] = {}
    for decl in graph.nodes.values():
        entry: dict[str, Any] = {"type": decl.type}
        if decl.placement is not None:
            entry["placement"] = decl.placement
        if decl.params:
            entry["params"] = dict(decl.params)
        if decl.inputs:
            entry["inputs"] = {port: str(ref) for port, ref in decl.inputs.items()}
        nodes[decl.name] = entry
    out["nodes"] = nodes
    return out


def dumps_graph(graph: Graph) -> str:
    return yaml.safe_dump(graph_to_dict(graph), sort_keys=False, default_flow_style=None, width=100)


def dump_graph(graph: Graph, path: str | Path) -> None:
    """Write atomically: a temporary name, then rename."""
    from pcdag.runtime.atomic import atomic_write_text

    atomic_write_text(Path(path), dumps_graph(graph))
