"""Node registry: node types by name. Built-ins register on import of ``pcdag.nodes``; third-party packages
add theirs through the ``pcdag.nodes`` entry-point group (each entry point names a module or a Node class)."""

from __future__ import annotations

import contextlib
import difflib
import importlib
import pkgutil
import warnings
from collections.abc import Iterator
from importlib import metadata

from pcdag.graphs.node import Node

_REGISTRY: dict[str, type[Node]] = {}
_LOADED = False


def register(cls: type[Node]) -> type[Node]:
    """Class decorator: make ``cls`` available to graphs under its class name."""
    name = cls.type_name()
    other = _REGISTRY.get(name)
    if other is not None and other is not cls and other.__qualname__ != cls.__qualname__:
        raise ValueError(f"node type {name!r} is registered twice: {other.__module__} and {cls.__module__}")
    _REGISTRY[name] = cls
    return cls


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import pcdag.nodes as builtin

    for mod in pkgutil.walk_packages(builtin.__path__, prefix="pcdag.nodes."):
        importlib.import_module(mod.name)
    for ep in metadata.entry_points(group="pcdag.nodes"):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plug-in must not break the built-in nodes
            warnings.warn(f"pcdag: node plug-in {ep.name!r} ({ep.value}) failed to load: {exc}", stacklevel=2)
            continue
        if isinstance(obj, type) and issubclass(obj, Node):
            register(obj)


def get(name: str) -> type[Node] | None:
    _load()
    return _REGISTRY.get(name)


def names() -> list[str]:
    _load()
    return sorted(_REGISTRY)


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
