"""Pass 2 — structure: every connection names a real port of a compatible type, required inputs are
connected, the graph is acyclic and data flows only forward through the stages.

Returns the resolved connection list the later passes reuse (``Edge`` with both port names filled in).
"""

from __future__ import annotations

import difflib

import attrs
import networkx as nx

from pcdag.compiler.resolve import Bound
from pcdag.graphs.graph import PortRef
from pcdag.graphs.problems import Problem


@attrs.frozen
class Edge:
    src: str
    src_port: str
    dst: str
    dst_port: str


def check_structure(bound: dict[str, Bound]) -> tuple[list[Edge], nx.MultiDiGraph, list[Problem]]:
    edges: list[Edge] = []
    problems: list[Problem] = []
    for b in bound.values():
        for port, ref in b.decl.inputs.items():
            edge, p = _connection(bound, b, port, ref)
            problems += p
            if edge is not None:
                edges.append(edge)
        problems += _unconnected(bound, b)
    g = nx.MultiDiGraph()
    g.add_nodes_from(bound)
    for e in edges:
        g.add_edge(e.src, e.dst, src_port=e.src_port, dst_port=e.dst_port)
    problems += _cycles(g, bound)
    problems += _placement_flow(bound, edges)
    problems += _node_input_checks(bound, edges)
    return edges, g, problems


def _node_input_checks(bound: dict[str, Bound], edges: list[Edge]) -> list[Problem]:
    out = []
    for b in bound.values():
        if b.node is None:
            continue
        types = {e.dst_port: bound[e.src].cls.outputs[e.src_port].type for e in edges if e.dst == b.name}
        for msg in b.node.check_inputs(types):
            out.append(Problem("input", msg, b.name, origin=b.decl.where()))
    return out


def _connection(bound: dict[str, Bound], b: Bound, port: str, ref: PortRef) -> tuple[Edge | None, list[Problem]]:
    where = b.decl.where(f"inputs.{port}")
    src = bound.get(ref.node)
    if src is None:
        close = difflib.get_close_matches(ref.node, list(bound), n=1)
        fix = f"did you mean {close[0]!r}?" if close else f"nodes in this graph: {', '.join(bound)}"
        return None, [
            Problem(
                "unknown-node",
                f"input {port!r} comes from {ref.node!r}, which is not a node of this graph",
                b.name,
                fix,
                where,
            )
        ]
    problems: list[Problem] = []
    if b.cls is not None and port not in b.cls.inputs:
        names = ", ".join(b.cls.inputs) or "none"
        problems.append(
            Problem(
                "unknown-port", f"{b.decl.type} has no input port {port!r}", b.name, f"its input ports: {names}", where
            )
        )
    if src.cls is None:
        return None, problems  # unknown type already reported; nothing more to check on this edge
    outs = list(src.cls.outputs)
    if ref.port is None:
        if len(outs) != 1:
            problems.append(
                Problem(
                    "unknown-port",
                    f"input {port!r} names node {ref.node!r} without a port, but "
                    f"{src.decl.type} has {len(outs)} outputs",
                    b.name,
                    f"write '{ref.node}.<port>' with one of: {', '.join(outs) or 'none'}",
                    where,
                )
            )
            return None, problems
        src_port = outs[0]
    elif ref.port not in src.cls.outputs:
        problems.append(
            Problem(
                "unknown-port",
                f"{ref.node!r} ({src.decl.type}) has no output port {ref.port!r}",
                b.name,
                f"its output ports: {', '.join(outs) or 'none'}",
                where,
            )
        )
        return None, problems
    else:
        src_port = ref.port
    if b.cls is None or port not in b.cls.inputs:
        return None, problems
    want, got = b.cls.inputs[port].type, src.cls.outputs[src_port].type
    if not want.accepts(got):
        problems.append(
            Problem(
                "type-mismatch",
                f"input {port!r} expects {want} but {ref.node}.{src_port} gives {got}",
                b.name,
                f"feed {b.name}.{port} from a node that outputs {want}",
                where,
            )
        )
        return None, problems
    return Edge(ref.node, src_port, b.name, port), problems


def _unconnected(bound: dict[str, Bound], b: Bound) -> list[Problem]:
    if b.cls is None or any(port not in b.cls.inputs for port in b.decl.inputs):
        return []  # a misnamed input port is reported as such; "unconnected" would only repeat it
    out = []
    for port, spec in b.cls.inputs.items():
        if spec.required and port not in b.decl.inputs:
            candidates = [
                f"{o.name}.{op}"
                for o in bound.values()
                if o.cls is not None and o.name != b.name
                for op, ospec in o.cls.outputs.items()
                if spec.type.accepts(ospec.type)
            ]
            fix = f"add `inputs: {{{port}: <node>}}`" + (
                f"; candidates: {', '.join(candidates[:4])}" if candidates else f"; nothing here outputs {spec.type}"
            )
            out.append(
                Problem(
                    "unconnected",
                    f"required input {port!r} ({spec.type}) is not connected",
                    b.name,
                    fix,
                    b.decl.where(),
                )
            )
    return out


def _cycles(g: nx.MultiDiGraph, bound: dict[str, Bound]) -> list[Problem]:
    out = []
    rank = {name: i for i, name in enumerate(bound)}
    for cycle in nx.simple_cycles(nx.DiGraph(g)):
        first = min(range(len(cycle)), key=lambda i: rank[cycle[i]])
        cycle = cycle[first:] + cycle[:first]  # start at the node declared first, for stable messages
        path = " → ".join([*cycle, cycle[0]])
        out.append(
            Problem(
                "cycle",
                f"data flows in a circle: {path}",
                cycle[0],
                "a dataflow graph must be acyclic; repeated rounds are stages, not back-edges",
                bound[cycle[0]].decl.where(),
            )
        )
        if len(out) >= 5:
            break
    return out


def _placement_flow(bound: dict[str, Bound], edges: list[Edge]) -> list[Problem]:
    out = []
    for e in edges:
        a, b = bound[e.src].placement, bound[e.dst].placement
        if a is not None and b is not None and a > b:
            out.append(
                Problem(
                    "placement",
                    f"{e.src!r} runs in the {a} stage but feeds {e.dst!r} in the earlier "
                    f"{b} stage; data only flows offline → store → loader → device → eval",
                    e.dst,
                    f"move {e.dst!r} to the {a} stage or later, or feed it from an earlier node",
                    bound[e.dst].decl.where(f"inputs.{e.dst_port}"),
                )
            )
    return out
