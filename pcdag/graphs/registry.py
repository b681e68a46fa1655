"""Node registry: node types by name. Built-ins are found by scanning the source files of ``pcdag.nodes``
(``nodescan``) and imported one module at a time, when a graph first names their type; third-party packages add
theirs through the ``pcdag.nodes`` entry-point group (each entry point names a module or a Node class), loaded when
a name is not a built-in or when every name is asked for."""

from __future__ import annotations

import contextlib
import difflib
import importlib
import warnings
from collections.abc import Iterator
from functools import cache
from importlib import metadata

from pcdag.graphs.node import Node
from pcdag.graphs.nodescan import Found, scan

_REGISTRY: dict[str, type[Node]] = {}
_LOADED = False  # entry-point plug-ins loaded


def register(cls: type[Node]) -> type[Node]:
    """Class decorator: make ``cls`` available to graphs under its class name."""
    name = cls.type_name()
    other = _REGISTRY.get(name)
    if other is not None and other is not cls and other.__qualname__ != cls.__qualname__:
        raise ValueError(f"node type {name!r} is registered twice: {other.__module__} and {cls.__module__}")
    _REGISTRY[name] = cls
    return cls


@cache
def builtins() -> dict[str, Found]:
    """Built-in node type name -> defining module and role, from the source files (nothing is imported)."""
    return scan("pcdag.nodes")


def _load() -> None:
    """Load the entry-point plug-ins (once)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for ep in metadata.entry_points(group="pcdag.nodes"):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plug-in must not break the built-in nodes
            warnings.warn(f"pcdag: node plug-in {ep.name!r} ({ep.value}) failed to load: {exc}", stacklevel=2)
            continue
        if isinstance(obj, type) and issubclass(obj, Node):
            register(obj)


def get(name: str) -> type[Node] | None:
    """The node class of type ``name``, importing its module if it is a built-in not yet imported; None: unknown."""
    cls = _REGISTRY.get(name)
    if cls is not None:
        return cls
    found = builtins().get(name)
    if found is not None:
        cls = getattr(importlib.import_module(found.module), name)
        return _REGISTRY.setdefault(name, cls)  # registered on import, or again after ``registered`` forgot it
    _load()
    return _REGISTRY.get(name)


def names() -> list[str]:
    _load()
    return sorted(set(builtins()) | set(_REGISTRY))


def role(name: str) -> str | None:
    """The role of node type ``name`` (sources, geometry, …) without importing a built-in's module."""
    cls = _REGISTRY.get(name)
    if cls is not None:
        return cls.role
    found = builtins().get(name)
    if found is not None:
        return found.role
    cls = get(name)
    return None if cls is None else cls.role


def suggest(name: str) -> str:
    """A did-you-mean hint for an unknown node type."""
    close = difflib.get_close_matches(name, names(), n=2)
    return f"did you mean {' or '.join(map(repr, close))}?" if close else "run `pcdag nodes` to list node types"


@contextlib.contextmanager
def registered(*classes: type[Node]) -> Iterator[None]:
    """Register node classes for the duration of a ``with`` block (tests, notebooks)."""
    _load()
    before = dict(_REGISTRY)
    try:
        for cls in classes:
            register(cls)
        yield
    finally:
        _REGISTRY.clear()
        _REGISTRY.update(before)
