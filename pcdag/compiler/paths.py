"""Pass — paths: every path parameter checked against the file system, reading nothing but ``stat``.

A node declares its path parameters with ``param(..., path=KIND)`` (``pcdag.graphs.params.PATH_KINDS``) and may
refine a kind from what is connected (``Node.path_kinds``: a store written or read). By the time this pass runs
the resolve pass has made every value absolute, so each message names the node, the parameter, the value as
written, the absolute path tried and the YAML line. The checks need no structure, so they run on a graph with
connection errors too.
"""

from __future__ import annotations

import os
from pathlib import Path

from pcdag.compiler.resolve import Bound
from pcdag.compiler.structure import Edge
from pcdag.graphs.problems import Problem

_FIX = "relative paths in a graph file are relative to its folder; --set values to the working directory"


def check_paths(bound: dict[str, Bound], edges: list[Edge]) -> list[Problem]:
    problems = []
    for b in bound.values():
        if b.node is None:
            continue
        connected = frozenset(e.dst_port for e in edges if e.dst == b.name)
        for name, kind in b.node.path_kinds(connected).items():
            value = getattr(b.node.params, name)
            if not isinstance(value, str):
                continue  # optional path left out (None)
            why = path_problem(Path(value), kind)
            if why:
                given = b.decl.params.get(name, value)
                shown = f"{name} = {given!r}" + ("" if given == value else f" ({value})")
                where = b.decl.where(f"params.{name}" if name in b.decl.params else None)
                problems.append(Problem("path", f"{shown}: {why}", b.name, _FIX, where))
    return problems


def path_problem(path: Path, kind: str) -> str | None:
    """Why ``path`` (absolute) cannot serve as ``kind``; None when it can."""
    if kind == "in-dir":
        return None if path.is_dir() else ("is not a folder" if path.exists() else "does not exist")
    if kind == "in-file":
        return None if path.is_file() else ("is not a file" if path.exists() else "does not exist")
    if kind == "in":
        return None if path.exists() else "does not exist"
    if kind == "later-dir":
        return "exists and is not a folder" if path.exists() and not path.is_dir() else None
    if kind == "out-dir":
        return _not_writable(path)
    raise ValueError(f"unknown path kind {kind!r}")


def _not_writable(path: Path) -> str | None:
    """A folder at ``path`` can be written: it is a writable folder, or its nearest existing ancestor is."""
    if path.exists():
        if not path.is_dir():
            return "exists and is not a folder"
        return None if os.access(path, os.W_OK | os.X_OK) else "is a folder this user cannot write"
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot be created: {parent} is not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: {parent} is not writable by this user"
    return None
