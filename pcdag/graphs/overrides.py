"""Overrides and presets: change parameters or settings of a graph by dotted key, before compiling.

    apply_overrides(graph, {"student.preset": "tiny", "settings.train.steps": 40})
    apply_preset(graph, "tiny")          # the graph's own ``presets: {tiny: {...}}`` entry

Keys are ``NODE.PARAM`` or ``settings.KEY`` (``settings.train.KEY`` for nested settings). A preset is a named set
of overrides written in the graph file, so ``--preset tiny`` is the same as the corresponding ``--set`` flags.
Every problem is collected; the graph given is never modified.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from typing import Any

import attrs

from pcdag.graphs.graph import Graph
from pcdag.graphs.problems import GraphError, Problem


def apply_overrides(graph: Graph, overrides: Mapping[str, Any], what: str = "--set") -> Graph:
    """A copy of ``graph`` with each ``key: value`` applied; raises ``GraphError`` listing every bad key."""
    out = Graph(graph.name, dict(graph.nodes), copy.deepcopy(graph.settings), graph.origin, dict(graph.presets))
    problems = []
    for key, value in overrides.items():
        target, dot, rest = str(key).partition(".")
        if not dot or not rest:
            problems.append(Problem("override", f"{what} {key!r}: write NODE.PARAM or settings.KEY"))
        elif target == "settings":
            _set_nested(out.settings, rest.split("."), value)
        elif target in out.nodes:
            decl = out.nodes[target]
            out.nodes[target] = attrs.evolve(decl, params={**decl.params, rest: value})
        else:
            close = difflib.get_close_matches(target, list(out.nodes), n=1)
            fix = f"did you mean {close[0]!r}?" if close else f"nodes: {', '.join(out.nodes)}"
            msg = f"{what} {key!r}: graph {graph.name!r} has no node {target!r}"
            problems.append(Problem("override", msg, fix=fix))
    if problems:
        raise GraphError(problems)
    return out


def apply_preset(graph: Graph, name: str | None) -> Graph:
    """``graph`` with its preset ``name`` applied (None: unchanged); the preset's name lands in
    ``settings.preset`` so plans and checkpoints record it."""
    if name is None:
        return graph
    if name not in graph.presets:
        have = ", ".join(graph.presets) or "none"
        raise GraphError([Problem("override", f"graph {graph.name!r} has no preset {name!r}", fix=f"presets: {have}")])
    out = apply_overrides(graph, graph.presets[name], what=f"preset {name!r}:")
    out.settings["preset"] = name
    return out


def _set_nested(settings: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        inner = settings.get(part)
        if not isinstance(inner, dict):
            inner = settings[part] = {}
        settings = inner
    settings[path[-1]] = value
