"""YAML form of a graph (``yaml.safe_load`` only), with line numbers kept for error messages.

    pcdag: 1
    name: scannet-preprocess
    settings: {seed: 0}
    nodes:
      scans:  {type: ScanNetSource, params: {root: ../shared/data/scannet-mini}}
      grid:   {type: GridSample, params: {grid_size: 0.02}, inputs: {cloud: scans}}

Relative paths in parameters (those a node declares with ``param(..., path=KIND)``) are relative to the folder
of the graph file: the compiler resolves them against ``Graph.base_dir``, which ``load_graph`` sets; the YAML
is kept as written, so ``dump_graph`` writes back what the user wrote. A graph built in Python or parsed from a
string without ``base_dir`` resolves against the working directory. ``--set`` values are relative to the working
directory (``pcdag.graphs.overrides``). Settings are not paths: ``settings.train.out`` is, like ``--out``, relative
to the working directory of the command.

Aliases (``&a`` / ``*a``) are allowed, but a document whose aliases would expand past ``MAX_YAML_NODES`` nodes
("billion laughs") is refused before anything is expanded.
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


MAX_YAML_NODES = 200_000  # after alias expansion; a graph has a few thousand at most


def _compose(stream: io.StringIO) -> yaml.Node | None:
    """The YAML node tree (aliases shared, not expanded); raises ``yaml.YAMLError``."""
    return yaml.compose(stream, Loader=yaml.SafeLoader)


def _expanded_size(root: yaml.Node) -> int | None:
    """Number of nodes ``safe_load`` would build (aliases expanded), counted on the shared tree without building
    it; None for a recursive alias. Memoised per node, so a "billion laughs" document costs a few hundred steps."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int | None:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            return None
        open_nodes.add(key)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        total = 1
        for child in children:
            n = size(child)
            if n is None:
                return None
            total += n
        open_nodes.discard(key)
        sizes[key] = total
        return total

    return size(root)


def _lines(root: yaml.Node | None) -> dict[tuple[str, ...], int]:
    """Map key paths (``("nodes", "grid", "params", "grid_size")``) to 1-based line numbers."""
    out: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    p = (*path, str(key.value))
                    out[p] = key.start_mark.line + 1
                    walk(value, p)

    if root is not None:
        walk(root, ())
    return out


def _parse(text: str, file: str) -> tuple[Any, dict[tuple[str, ...], int], list[Problem]]:
    """``(data, line map, problems)``: refuses invalid YAML and documents whose aliases expand past
    ``MAX_YAML_NODES`` (or refer to themselves) before anything is expanded."""
    stream = io.StringIO(text)
    stream.name = file  # PyYAML names the file in its messages
    try:
        root = _compose(stream)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        origin = Origin(file, mark.line + 1) if mark else None
        return None, {}, [Problem("yaml", f"not valid YAML: {exc}", origin=origin)]
    if root is not None:
        n = _expanded_size(root)
        if n is None or n > MAX_YAML_NODES:
            why = "an alias refers to itself" if n is None else f"its aliases expand to {n:,} YAML nodes"
            return (
                None,
                {},
                [
                    Problem(
                        "yaml",
                        f"{file} refused: {why} (at most {MAX_YAML_NODES:,}; a graph needs few or no aliases)",
                        origin=Origin(file, 1),
                        fix="write the repeated values out, or use a preset",
                    )
                ],
            )
    stream.seek(0)
    return yaml.safe_load(stream), _lines(root), []


def loads_graph(text: str, file: str = "<string>", base_dir: str | None = None) -> Graph:
    """Parse a graph from YAML text; raises ``GraphError`` listing every structural problem.

    ``base_dir``: the folder relative path parameters resolve against (None: the working directory)."""
    graph, problems = read_graph(text, file, base_dir)
    if problems:
        raise GraphError(problems)
    return graph


def read_graph(text: str, file: str = "<string>", base_dir: str | None = None) -> tuple[Graph | None, list[Problem]]:
    """Parse what can be parsed: ``(graph, shape problems)``. The graph is None only when the text is not a YAML
    mapping; otherwise it keeps every node (a placeholder where a declaration is unusable, named in
    ``graph.broken``) and carries the problems in ``graph.load_problems``, so the compiler still reports the
    parameter errors of every node."""
    data, lines, problems = _parse(text, file)
    if problems:
        return None, problems

    def at(*path: str) -> Origin:
        return Origin(file, lines.get(path, 1))

    if not isinstance(data, dict):
        return None, [Problem("not-a-graph", "the file is not a mapping with 'name' and 'nodes'", origin=at())]
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
    graph = Graph(name, {}, dict(settings), origin=at(), presets=presets, base_dir=base_dir)
    broken: dict[str, frozenset[str]] = {}
    for node_name, raw in raw_nodes.items():
        decl, parts, node_problems = _node(str(node_name), raw, lambda *p, n=node_name: at("nodes", str(n), *p))
        problems += node_problems
        graph.nodes[decl.name] = decl
        if parts:
            broken[decl.name] = parts
    graph.load_problems, graph.broken = tuple(problems), broken
    return graph, problems


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


def _node(name: str, raw: Any, at) -> tuple[NodeDecl, frozenset[str], list[Problem]]:
    """The declaration (a placeholder of type "" when ``raw`` is not a mapping), the parts of it that were unusable
    ("node", "type", "params", "inputs") and the problems; stray keys are reported and do not spoil the rest."""
    if not isinstance(raw, dict):
        problem = Problem("not-a-graph", "a node must be a mapping with 'type'", name, origin=at())
        return NodeDecl(name, "", origin=at()), frozenset({"node"}), [problem]
    problems = [
        Problem(
            "not-a-graph",
            f"unknown key {k!r} in node",
            name,
            fix=f"node keys are {', '.join(_NODE_KEYS)}",
            origin=at(k),
        )  # fmt: skip
        for k in raw
        if k not in _NODE_KEYS
    ]
    broken: set[str] = set()
    node_type = raw.get("type")
    if not isinstance(node_type, str):
        problems.append(Problem("not-a-graph", "the node has no 'type'", name, origin=at()))
        node_type, broken = "", {"type"}
    params = raw.get("params") or {}
    if not isinstance(params, dict):
        problems.append(Problem("not-a-graph", "'params' must be a mapping", name, origin=at("params")))
        params = {}
        broken.add("params")
    inputs, p = _inputs(name, raw.get("inputs") or {}, at)
    problems += p
    if p:
        broken.add("inputs")
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
    decl = NodeDecl(name, node_type, params, inputs, placement, origin=at(), lines=lines)
    return decl, frozenset(broken), problems


def _inputs(name: str, raw: Any, at) -> tuple[dict[str, PortRef], list[Problem]]:
    if not isinstance(raw, dict):
        return {}, [
            Problem("not-a-graph", "'inputs' must map input port to 'node' or 'node.port'", name, origin=at("inputs"))
        ]
    inputs: dict[str, PortRef] = {}
    problems = []
    for port, text in raw.items():
        try:
            inputs[str(port)] = PortRef.parse(text)
        except ValueError as exc:
            problems.append(Problem("not-a-graph", str(exc), name, origin=at("inputs", str(port))))
    return inputs, problems


def load_graph(path: str | Path) -> Graph:
    """Read a graph file (relative path parameters resolve against its folder); a missing or unreadable file, or
    any shape problem, is a ``GraphError`` naming it. ``read_graph_file`` keeps what parsed instead."""
    graph, problems = read_graph_file(path)
    if problems:
        raise GraphError(problems)
    return graph


def read_graph_file(path: str | Path) -> tuple[Graph | None, list[Problem]]:
    """``read_graph`` of a file, with ``base_dir`` its folder (absolute)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem("file", f"cannot read graph file {str(path)!r} ({path.absolute()}): {exc}")]
    return read_graph(text, str(path), str(path.absolute().parent))


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
    from pcdag.atomic import atomic_write_text

    atomic_write_text(Path(path), dumps_graph(graph))
