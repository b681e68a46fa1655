"""The floors of pcdag import one way (docs/architecture.md, "Floors").

    floor 0  pcdag.graphs, pcdag.ops, pcdag.atomic        the vocabulary: ports, node API, shared kernels
    floor 1  pcdag.nodes, pcdag.datasets, pcdag.compiler  what a graph is made of, and the passes over it
    floor 2  pcdag.runtime, pcdag.testing                 running plans; the node authors' test kit
    floor 3  pcdag.cli, pcdag.stats, pcdag.doctor          commands

A module imports only from its own floor or below, and some parts stay apart though the floors would allow it: the
compiler and the runtime never import a node (they meet nodes through the registry, by type name, and through the
node API of ``pcdag.graphs``), readers in ``datasets`` know no node, and nodes know no compiler. Every import
statement counts, also those inside functions and under ``TYPE_CHECKING``. A second test reads the runtime and the
compiler for the names of node types and of the methods pcdag ships: they must work for any graph, so they name
none.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pcdag"

FLOORS = {
    "graphs": 0,
    "ops": 0,
    "atomic": 0,
    "__init__": 0,
    "nodes": 1,
    "datasets": 1,
    "compiler": 1,
    "runtime": 2,
    "testing": 2,
    "cli": 3,
    "stats": 3,
    "doctor": 3,
}
APART = {  # (importer, imported) that must not meet, though the floors would allow it
    ("compiler", "nodes"),
    ("compiler", "datasets"),
    ("datasets", "nodes"),
    ("datasets", "compiler"),
    ("nodes", "compiler"),
    ("runtime", "nodes"),
    ("runtime", "testing"),
}
METHODS = ("LAM3C", "Sonata", "GroupContrast", "GaussianCross", "CMCR", "UnScene3D", "PTv3", "SpUNet")


def _part(module: str) -> str | None:
    """The top-level part of pcdag a dotted module name belongs to (``pcdag.nodes.heads.x`` -> ``nodes``)."""
    names = module.split(".")
    if names[0] != "pcdag":
        return None
    return names[1] if len(names) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every pcdag import in ``path`` (``from pcdag.x import y`` also yields ``pcdag.x.y``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            if node.module == "pcdag":
                found += [(node.lineno, f"pcdag.{a.name}") for a in node.names]
    return [(line, m) for line, m in found if _part(m) is not None]


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _own_part(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return rel.parts[0]


def test_every_part_of_the_package_has_a_floor() -> None:
    parts = {_own_part(p) for p in _sources()}
    assert parts <= set(FLOORS), f"give these a floor in tests/test_layers.py: {sorted(parts - set(FLOORS))}"


def test_imports_go_one_way() -> None:
    wrong = []
    for path in _sources():
        own = _own_part(path)
        for line, module in _imports(path):
            target = _part(module)
            if target not in FLOORS:
                continue  # a module this test does not know is caught by the test above
            rel = f"pcdag/{path.relative_to(PACKAGE)}:{line}"
            if FLOORS[target] > FLOORS[own]:
                wrong.append(f"{rel} imports {module}: floor {FLOORS[own]} ({own}) reaches up to {target}")
            elif (own, target) in APART:
                wrong.append(f"{rel} imports {module}: {own} and {target} stay apart")
    assert not wrong, "imports against the floors:\n" + "\n".join(wrong)


def _node_type_names() -> list[str]:
    from pcdag.graphs import registry

    # ``Store`` is the node of the store placement, the boundary of stages the compiler and runtime are built around
    return [n for n, found in registry.builtins().items() if found.module.startswith("pcdag.nodes.") and n != "Store"]


@pytest.mark.parametrize("part", ["runtime", "compiler"])
def test_runtime_and_compiler_name_no_node_type_or_method(part: str) -> None:
    types = re.compile(r"\b(" + "|".join(map(re.escape, _node_type_names())) + r")\b")  # class names: as written
    methods = re.compile(r"\b(" + "|".join(map(re.escape, METHODS)) + r")\b", re.IGNORECASE)  # also in file names
    hits = []
    for path in sorted((PACKAGE / part).rglob("*.py")):
        for k, text in enumerate(path.read_text().splitlines(), 1):
            for m in [*types.finditer(text), *methods.finditer(text)]:
                hits.append(f"pcdag/{path.relative_to(PACKAGE)}:{k}: {m.group(0)}")
    assert not hits, f"pcdag/{part} must work for any graph; it names node types or methods:\n" + "\n".join(hits)


def test_every_module_directly_under_a_role_registers_a_node() -> None:
    """Helpers live in ``pcdag/ops`` (shared), ``nodes/<role>/parts`` or a backbone's own package."""
    from pcdag.graphs import registry

    modules = {found.module for found in registry.builtins().values()}
    loose = [
        str(p.relative_to(PACKAGE.parent))
        for p in sorted((PACKAGE / "nodes").glob("*/*.py"))
        if p.name != "__init__.py" and ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts) not in modules
    ]
    assert not loose, "these files under pcdag/nodes/<role>/ register no node; move them:\n" + "\n".join(loose)
