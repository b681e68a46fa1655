"""Pass 1 — resolve: node type names to classes, given parameters to validated ``Params``, placements.

Every problem is collected; a node that cannot be resolved is kept (``node is None``) so later passes can
still check its connections. Relative values of path parameters (``param(..., path=KIND)``) become absolute
against ``graph.base_dir`` (the graph file's folder; the working directory when None); ``decl.params`` keeps what
was written.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping

import attrs

from pcdag.graphs import registry
from pcdag.graphs.graph import Graph, NodeDecl
from pcdag.graphs.node import Node
from pcdag.graphs.params import absolute_path, build_params, path_fields
from pcdag.graphs.ports import Placement
from pcdag.graphs.problems import Problem

# optional module -> what to install, for missing-dependency messages
INSTALL_HINTS = {
    "spconv": "pip install spconv-cu126 (GPU) or spconv (CPU, forward only)",
    "pycolmap": "pip install pycolmap",
    "av": "pip install av  (PyAV, for video decoding)",
}


@attrs.frozen
class Bound:
    """A declaration with its node class, configured node and placement (None where resolution failed)."""

    decl: NodeDecl
    cls: type[Node] | None
    node: Node | None
    placement: Placement | None

    @property
    def name(self) -> str:
        return self.decl.name


def resolve(graph: Graph) -> tuple[dict[str, Bound], list[Problem]]:
    bound: dict[str, Bound] = {}
    problems: list[Problem] = []
    base = graph.base_dir or os.getcwd()
    for decl in graph.nodes.values():
        b, p = _resolve_one(decl, base)
        bound[decl.name] = b
        problems += p
    return bound, problems


def _resolve_one(decl: NodeDecl, base: str) -> tuple[Bound, list[Problem]]:
    cls = registry.get(decl.type)
    if cls is None:
        msg = f"unknown node type {decl.type!r}"
        try:  # keep a declared placement so stage checks around the unknown node stay meaningful
            placement = Placement.parse(decl.placement) if decl.placement else None
        except ValueError:
            placement = None
        return Bound(decl, None, None, placement), [
            Problem("unknown-type", msg, decl.name, registry.suggest(decl.type), decl.where())
        ]
    problems = _missing_deps(decl, cls)
    placement, p = _placement(decl, cls)
    problems += p
    params, messages = build_params(cls.Params, decl.params)
    for msg in messages:
        key = _param_named(msg, decl.params)
        problems.append(
            Problem(
                "bad-param",
                msg,
                decl.name,
                f"`pcdag nodes {decl.type}` lists its parameters and allowed values",
                decl.where(f"params.{key}" if key else None),
            )
        )
    node = None
    if params is not None:
        params = _anchor_paths(params, base)
        try:
            node = cls.from_built(params, decl.params)
        except Exception as exc:  # a node's own cross-parameter checks
            problems.append(Problem("bad-param", str(exc), decl.name, origin=decl.where()))
    return Bound(decl, cls, node, placement), problems


def _anchor_paths(params: object, base: str) -> object:
    """``params`` with each relative path parameter made absolute against ``base``."""
    changes = {
        name: absolute_path(value, base)
        for name in path_fields(type(params))
        if isinstance(value := getattr(params, name), str)
    }
    return attrs.evolve(params, **changes) if changes else params


def _param_named(message: str, given: Mapping[str, object]) -> str | None:
    for key in given:
        if message.startswith(f"{key} ") or f"parameter {key!r}" in message:
            return str(key)
    return None


def _placement(decl: NodeDecl, cls: type[Node]) -> tuple[Placement, list[Problem]]:
    default = cls.placements[0]
    if decl.placement is None:
        return default, []
    allowed = ", ".join(map(str, cls.placements))
    try:
        placement = Placement.parse(decl.placement)
    except ValueError as exc:
        return default, [Problem("placement", str(exc), decl.name, f"{decl.type} runs in: {allowed}", decl.where())]
    if placement not in cls.placements:
        msg = f"{decl.type} cannot run in the {placement} stage"
        return default, [Problem("placement", msg, decl.name, f"{decl.type} runs in: {allowed}", decl.where())]
    return placement, []


def _missing_deps(decl: NodeDecl, cls: type[Node]) -> list[Problem]:
    out = []
    for module in cls.requires:
        if importlib.util.find_spec(module) is None:
            hint = INSTALL_HINTS.get(module, f"pip install {module}")
            msg = f"{decl.type} needs the optional package {module!r}, which is not installed"
            out.append(Problem("missing-dep", msg, decl.name, hint, decl.where()))
    return out
