"""Start-up: the node registry finds built-ins without importing them; cheap commands import no heavy package."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pcdag.nodes
from pcdag.cli import node_listing
from pcdag.graphs import registry
from pcdag.graphs.nodescan import scan

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "dask", "distributed", "zarr", "matplotlib", "xarray", "pycolmap", "av")


def test_scan_finds_exactly_what_importing_every_module_registers() -> None:
    for mod in pkgutil.walk_packages(pcdag.nodes.__path__, prefix="pcdag.nodes."):
        importlib.import_module(mod.name)
    imported = {
        name: (cls.__module__, cls.role)
        for name, cls in registry._REGISTRY.items()
        if cls.__module__.startswith("pcdag.nodes.")
    }
    scanned = {name: (found.module, found.role) for name, found in scan("pcdag.nodes").items()}
    assert scanned == imported


def _package(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


BASE = """
    from pcdag.graphs.node import CloudTransform

    class Shaper(CloudTransform):
        role = "shaping"
"""


def test_scan_follows_roles_through_files_aliases_and_framework_bases(tmp_path, monkeypatch) -> None:
    _package(
        tmp_path,
        {
            "scanpkg/__init__.py": "",
            "scanpkg/base.py": BASE,
            "scanpkg/sub/__init__.py": "",
            "scanpkg/sub/a.py": """
                from pcdag.graphs.device import DeviceNode
                from pcdag.graphs.registry import register
                from scanpkg.base import Shaper as S

                @register
                class Own(S):
                    role: str = "mine"

                @register
                class Inherits(S):
                    pass

                class Local(Own):
                    pass

                @register
                class ViaLocal(Local):
                    pass

                @register
                class Device(DeviceNode):
                    pass

                class NotRegistered(S):
                    pass
            """,
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = {name: (f.module, f.role) for name, f in scan("scanpkg").items()}
    assert found == {
        "Own": ("scanpkg.sub.a", "mine"),
        "Inherits": ("scanpkg.sub.a", "shaping"),
        "ViaLocal": ("scanpkg.sub.a", "mine"),
        "Device": ("scanpkg.sub.a", "device"),
    }
    assert "scanpkg.sub.a" not in sys.modules  # found without importing it


def test_scan_refuses_a_type_registered_in_two_files(tmp_path, monkeypatch) -> None:
    twice = "from pcdag.graphs.registry import register\n\n@register\nclass Same:\n    role = 'x'\n"
    _package(tmp_path, {"twicepkg/__init__.py": "", "twicepkg/a.py": twice, "twicepkg/b.py": twice})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="'Same' is registered twice: twicepkg.a and twicepkg.b"):
        scan("twicepkg")


def test_a_builtin_is_found_again_after_registered_restores_the_registry() -> None:
    with registry.registered():
        registry._REGISTRY.pop("GridSample", None)  # as if first imported inside the block
    cls = registry.get("GridSample")
    assert cls is not None and cls.__name__ == "GridSample" and registry.role("GridSample") == "geometry"


def test_node_listing_is_one_wrapped_line_per_role() -> None:
    names = ["A" * 8, "B" * 8, "C" * 8, "D" * 8, "Src"]
    roles = {"Src": "sources"}
    text = node_listing(names, lambda n: roles.get(n, "geometry"), width=40)
    lines = text.splitlines()
    assert lines[0].startswith("geometry: ") and lines[1].startswith(" " * 10) and "DDDDDDDD" in lines[1]
    assert lines[2] == "sources:  Src"
    assert all(len(line) <= 40 for line in lines[:-1]) and "pcdag nodes TYPE" in lines[-1]


_PROBE = """
import json, sys
from pcdag.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = {heavy}
print(json.dumps(sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy))))
"""


@pytest.mark.parametrize(
    "argv", [["--help"], ["validate", "graphs/lam3c.yaml"], ["validate", "graphs/scannet.yaml"], ["nodes"]]
)
def test_cheap_commands_import_no_heavy_package(argv: list[str]) -> None:
    code = _PROBE.format(heavy=set(HEAVY))
    out = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == []


def test_help_builds_the_parser_without_the_graph_model() -> None:
    code = _PROBE.format(heavy={"numpy", "networkx", "yaml", "pcdag.graphs", "scipy"})
    out = subprocess.run([sys.executable, "-c", code, "--help"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "``" not in out.stdout and "validate" in out.stdout
    assert json.loads(out.stdout.splitlines()[-1]) == []
