"""Pass 3 — fields: propagate which point fields exist along every edge and check each node's reads.

A source provides some fields (only ``coord`` is guaranteed); each node reads, writes and drops fields.
A node reading a field nothing upstream provides is an error that names the field and a node that writes it.
Returns the fields on each node's output (``None`` = unknown) for the plan.
"""

from __future__ import annotations

from functools import cache

import networkx as nx

from pcdag.compiler.resolve import Bound
from pcdag.compiler.structure import Edge
from pcdag.graphs import registry
from pcdag.graphs.node import FieldEffect
from pcdag.graphs.params import build_params
from pcdag.graphs.ports import POINT_CLOUD
from pcdag.graphs.problems import Problem

Fields = frozenset[str] | None


def check_fields(
    bound: dict[str, Bound], edges: list[Edge], g: nx.MultiDiGraph
) -> tuple[dict[str, Fields], list[Problem]]:
    out: dict[str, Fields] = {}
    problems: list[Problem] = []
    if not nx.is_directed_acyclic_graph(g):
        return out, problems  # cycles are reported by the structure pass
    for name in nx.topological_sort(g):
        b = bound[name]
        if b.node is None:
            out[name] = None
            continue
        eff = b.node.fields()
        cloud_in = [e for e in edges if e.dst == name and POINT_CLOUD.accepts(b.cls.inputs[e.dst_port].type)]
        declared = [
            p
            for p, spec in b.cls.inputs.items()
            if POINT_CLOUD.accepts(spec.type) and (spec.required or p in b.decl.inputs)
        ]
        if len(cloud_in) < len(declared):
            out[name] = None  # a broken connection, reported by the structure pass: nothing to check here
            continue
        upstream = [out.get(e.src) for e in cloud_in] if cloud_in else [b.node.source_fields()]
        if any(f is None for f in upstream):
            out[name] = None  # unknown before run time (e.g. a store not written yet): skip checks downstream
            continue
        have = frozenset().union(*upstream)
        for field in sorted(eff.reads - have):
            problems.append(_missing(b, field, have, [e.src for e in cloud_in]))
        out[name] = (have - eff.drops) | eff.writes
    return out, problems


def _missing(b: Bound, field: str, have: frozenset[str], sources: list[str]) -> Problem:
    writers = writers_of(field)
    where = f"between {' / '.join(map(repr, sources))} and {b.name!r}" if sources else f"before {b.name!r}"
    if writers:
        fix = f"add a {' or '.join(writers)} node {where}, or read {field!r} from a source that has it"
    else:
        fix = f"read {field!r} from a source that provides it"
    have_text = ", ".join(sorted(have)) or "nothing"
    return Problem(
        "missing-field",
        f"{b.decl.type} reads field {field!r} but nothing upstream provides it (upstream provides: {have_text})",
        b.name,
        fix,
        b.decl.where(),
    )


def writers_of(field: str) -> tuple[str, ...]:
    """Registered node types that create ``field`` with default parameters (for fix suggestions)."""
    return _writers(field, tuple(registry.names()))  # keyed on the registry: plug-ins registered later count


@cache
def _writers(field: str, names: tuple[str, ...]) -> tuple[str, ...]:
    found = []
    for name in names:
        cls = registry.get(name)
        if cls is None or cls.role == "sources" or cls.inputs == {}:
            continue
        params, problems = build_params(cls.Params, {})
        if problems:
            continue
        try:
            eff: FieldEffect = cls.from_built(params, {}).fields()
        except Exception:
            continue
        if field in eff.writes and field not in eff.reads | eff.optional_reads:  # creates it, not just updates
            found.append(name)
    return tuple(found)
