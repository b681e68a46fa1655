"""Overrides and presets: change parameters or settings of a graph by dotted key, before compiling.

    apply_overrides(graph, {"student.preset": "tiny", "settings.train.steps": 40})
    apply_preset(graph, "tiny")          # the graph's own ``presets: {tiny: {...}}`` entry

Keys are ``NODE.PARAM`` or ``settings.KEY`` (``settings.train.KEY`` for nested settings). A preset is a named set
of overrides written in the graph file, so ``--preset tiny`` is the same as the corresponding ``--set`` flags.

Paths: a preset's relative path values are relative to the graph file's folder, like the rest of the file. Values
given with ``base`` (the command line's ``--set``, with ``base`` = the working directory) are made absolute
against ``base`` here, for the parameters a node type declares as paths (``param(..., path=KIND)``).
Every problem is collected; the graph given is never modified.
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Mapping
from typing import Any

import attrs

from pcdag.graphs import registry
from pcdag.graphs.graph import Graph, NodeDecl
from pcdag.graphs.params import absolute_path, path_fields
from pcdag.graphs.problems import GraphError, Problem


def apply_overrides(
    graph: Graph, overrides: Mapping[str, Any], what: str = "--set", base: str | os.PathLike | None = None
) -> Graph:
    """A copy of ``graph`` with each ``key: value`` applied; raises ``GraphError`` listing every bad key.

    With ``base``, a relative value of a path parameter is made absolute against ``base``."""
    out = attrs.evolve(
        graph, nodes=dict(graph.nodes), settings=copy.deepcopy(graph.settings), presets=dict(graph.presets)
    )
    problems = []
    for key, value in overrides.items():
        target, dot, rest = str(key).partition(".")
        if not dot or not rest:
            problems.append(Problem("override", f"{what} {key!r}: write NODE.PARAM or settings.KEY"))
        elif target == "settings":
            _set_nested(out.settings, rest.split("."), value)
        elif target in out.nodes:
            decl = out.nodes[target]
            if base is not None:
                value = _anchored(decl, rest, value, base)
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


def _anchored(decl: NodeDecl, name: str, value: Any, base: str | os.PathLike) -> Any:
    """``value`` made absolute against ``base`` when ``name`` is a path parameter of the node's type."""
    cls = registry.get(decl.type)
    if cls is None or not isinstance(value, str) or name not in path_fields(cls.Params):
        return value
    return absolute_path(value, base)


def _set_nested(settings: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        inner = settings.get(part)
        if not isinstance(inner, dict):
            inner = settings[part] = {}
        settings = inner
    settings[path[-1]] = value
