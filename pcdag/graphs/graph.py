"""The graph: plain data. Node declarations (type name, given parameters, input connections) and settings.

Nothing here validates beyond shape: the compiler checks everything at once and reports every problem.
Build in Python:

    g = Graph("scannet-prep")
    scans = g.add("scans", ScanNetSource(root="../shared/data/scannet-mini", splits=["train", "val"]))
    grid = g.add("grid", GridSample(grid_size=0.02, mode="test"), cloud=scans)
    g.add("store", Store(path="stores/scannet"), cloud=grid.cloud)

or load YAML (``pcdag.graphs.yamlio.load_graph``); ``dump_graph`` writes the same graph back unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import networkx as nx

from pcdag.graphs.node import Node


@attrs.frozen
class Origin:
    """Where a declaration came from, for error messages: ``file:line``."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@attrs.frozen
class PortRef:
    """``node.port``; ``port`` None means the node's only output."""

    node: str
    port: str | None = None

    @classmethod
    def parse(cls, text: str) -> PortRef:
        if not isinstance(text, str) or not text or text.count(".") > 1:
            raise ValueError(f"an input must be 'node' or 'node.port', got {text!r}")
        node, _, port = text.partition(".")
        return cls(node, port or None)

    def __str__(self) -> str:
        return self.node if self.port is None else f"{self.node}.{self.port}"


@attrs.frozen
class NodeDecl:
    """One node as written: its type name, the parameters given (defaults not filled in), its inputs."""

    name: str
    type: str
    params: Mapping[str, Any] = attrs.field(factory=dict)
    inputs: Mapping[str, PortRef] = attrs.field(factory=dict)
    placement: str | None = None
    origin: Origin | None = attrs.field(default=None, eq=False)
    lines: Mapping[str, int] = attrs.field(factory=dict, eq=False)  # "params.x" / "inputs.y" -> YAML line

    def where(self, key: str | None = None) -> Origin | None:
        """Origin of the whole node, or of one of its keys (``"params.grid_size"``) when the line is known."""
        if self.origin is None or key is None or key not in self.lines:
            return self.origin
        return Origin(self.origin.file, self.lines[key])


@attrs.define
class NodeHandle:
    """Returned by ``Graph.add``: attribute access gives output ports (``scans.cloud``)."""

    name: str

    def __getattr__(self, port: str) -> PortRef:
        if port.startswith("_"):
            raise AttributeError(port)
        return PortRef(self.name, port)


SETTINGS = {
    "purpose": "preprocess | pretrain | eval (default: derived from the placements used)",
    "include_eval_splits": "let a pre-training graph read val/test scenes (leakage; printed in the plan)",
    "seed": "base random seed of every stage",
    "description": "free text",
    "preset": "the preset applied (set by --preset; recorded in plans and checkpoints)",
    "train": "training settings of the device stage (steps, global_batch, lr, ...; `pcdag nodes --train` lists them)",
}


@attrs.define
class Graph:
    """A pipeline graph: named node declarations plus graph-level settings."""

    name: str
    nodes: dict[str, NodeDecl] = attrs.field(factory=dict)
    settings: dict[str, Any] = attrs.field(factory=dict)
    origin: Origin | None = attrs.field(default=None, eq=False)
    presets: dict[str, dict[str, Any]] = attrs.field(factory=dict)  # name -> {"node.param" | "settings.k": value}
    # relative path parameters resolve against this folder (the graph file's); None: the working directory
    base_dir: str | None = attrs.field(default=None, eq=False)
    # a partial load (``yamlio.read_graph``): the shape problems found, and the nodes whose declaration was unusable
    # (kept as placeholders so references to them resolve); the compiler reports these problems first
    load_problems: tuple[Any, ...] = attrs.field(default=(), eq=False)
    broken: Mapping[str, frozenset[str]] = attrs.field(factory=dict, eq=False)  # node -> unusable parts

    def add(
        self,
        name: str,
        node: Node | str,
        placement: str | None = None,
        params: Mapping[str, Any] | None = None,
        **inputs: PortRef | NodeHandle | str,
    ) -> NodeHandle:
        """Add a node (a configured ``Node`` instance, or a type name plus ``params``) fed by ``inputs``."""
        if name in self.nodes:
            raise ValueError(f"graph {self.name!r} already has a node named {name!r}")
        if isinstance(node, Node):
            type_name, given = node.type_name(), dict(node.given)
            if params:
                raise ValueError("give parameters either to the node or as params=, not both")
        else:
            type_name, given = str(node), dict(params or {})
        self.nodes[name] = NodeDecl(name, type_name, given, {k: _ref(v) for k, v in inputs.items()}, placement)
        return NodeHandle(name)

    def edges(self) -> list[tuple[PortRef, str, str]]:
        """(source port, destination node, destination port) for every connection."""
        return [(ref, d.name, port) for d in self.nodes.values() for port, ref in d.inputs.items()]

    def to_networkx(self) -> nx.MultiDiGraph:
        """Node-level digraph (edges carry the ports); references to unknown nodes are left out."""
        g = nx.MultiDiGraph()
        g.add_nodes_from(self.nodes)
        for ref, dst, port in self.edges():
            if ref.node in self.nodes:
                g.add_edge(ref.node, dst, src_port=ref.port, dst_port=port)
        return g

    def subgraph(self, names: set[str]) -> Graph:
        """The graph restricted to ``names`` (inputs from outside are kept and will show as dangling)."""
        return Graph(
            self.name,
            {n: d for n, d in self.nodes.items() if n in names},
            dict(self.settings),
            presets=self.presets,
            base_dir=self.base_dir,
        )

    def upstream(self, name: str) -> set[str]:
        """All nodes ``name`` depends on (not including itself)."""
        return nx.ancestors(self.to_networkx(), name)


def _ref(value: PortRef | NodeHandle | str) -> PortRef:
    if isinstance(value, PortRef):
        return value
    if isinstance(value, NodeHandle):
        return PortRef(value.name)
    return PortRef.parse(value)
