"""Which module defines which built-in node type, and its role, found without importing the node modules.

Importing every module under ``pcdag.nodes`` to learn the node types costs seconds (torch, scipy, …). Instead the
source files are parsed (``ast``) for classes decorated with ``@register``; a class's role is its own
``role = "…"`` or, failing that, its first base class's: a base in another ``pcdag.nodes`` file is looked up the
same way, a base from elsewhere (``pcdag.graphs``: ``DeviceNode``, ``SceneSource``, …) is imported and asked.
``registry`` imports one module when its node type is first asked for. ``tests/test_graph_model.py`` checks that
the scan finds exactly the classes that importing every module registers.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import attrs


@attrs.frozen
class Found:
    """A registered class seen in a source file."""

    module: str  # dotted name, e.g. pcdag.nodes.geometry.grid_sample
    role: str


@attrs.define
class _Source:
    module: str
    classes: dict[str, ast.ClassDef]  # every top-level class of the file
    imported: dict[str, tuple[str, str]]  # local name -> (module, name) of ``from M import name [as local]``


def scan(package: str = "pcdag.nodes") -> dict[str, Found]:
    """Node type name -> where it is defined, for every ``@register``-decorated class of ``package``'s files."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{package!r} is not a package")
    sources: dict[str, _Source] = {}
    for root in spec.submodule_search_locations:
        for path in sorted(Path(root).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("").parts
            module = ".".join((package, *rel[: -1 if rel[-1] == "__init__" else None]))
            sources[module] = _parse(path, module)
    found: dict[str, Found] = {}
    for src in sources.values():
        for name, node in src.classes.items():
            if not any(_is_register(d) for d in node.decorator_list):
                continue
            if name in found:
                raise ValueError(f"node type {name!r} is registered twice: {found[name].module} and {src.module}")
            found[name] = Found(src.module, _role(src, node, sources))
    return found


def _parse(path: Path, module: str) -> _Source:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    imported = {}
    for n in tree.body:
        if isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            for alias in n.names:
                imported[alias.asname or alias.name] = (n.module, alias.name)
    return _Source(module, classes, imported)


def _is_register(decorator: ast.expr) -> bool:
    return (isinstance(decorator, ast.Name) and decorator.id == "register") or (
        isinstance(decorator, ast.Attribute) and decorator.attr == "register"
    )


def _own_role(node: ast.ClassDef) -> str | None:
    for stmt in node.body:
        target = stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else None
        if isinstance(stmt, ast.AnnAssign):
            target = stmt.target
        value = getattr(stmt, "value", None)
        if isinstance(target, ast.Name) and target.id == "role" and isinstance(value, ast.Constant):
            return str(value.value)
    return None


def _role(src: _Source, node: ast.ClassDef, sources: dict[str, _Source]) -> str:
    """The class's role: its own, else that of its first base (followed through files or imported)."""
    own = _own_role(node)
    if own is not None:
        return own
    if not node.bases or not isinstance(node.bases[0], ast.Name):
        return _imported_role(src.module, node.name)  # an unusual base: ask the class itself
    base = node.bases[0].id
    if base in src.classes:
        return _role(src, src.classes[base], sources)
    module, name = src.imported.get(base, (src.module, node.name))
    if module in sources and name in sources[module].classes:
        return _role(sources[module], sources[module].classes[name], sources)
    return _imported_role(module, name)


def _imported_role(module: str, name: str) -> str:
    return str(getattr(importlib.import_module(module), name).role)
