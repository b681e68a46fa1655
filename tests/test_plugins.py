"""Third-party node packages register through the ``pcdag.nodes`` entry-point group."""

from __future__ import annotations

import attrs
import pytest

from pcdag.compiler import validate
from pcdag.graphs import CloudTransform, Graph, registry


class Smooth(CloudTransform):
    """A plug-in transform (does nothing; only its registration matters here)."""

    def apply(self, cloud, rng):
        return cloud


@attrs.define
class _EntryPoint:
    name: str
    value: str
    obj: object

    def load(self):
        if isinstance(self.obj, Exception):
            raise self.obj
        return self.obj


@pytest.fixture
def fresh_registry(monkeypatch):
    """Entry points are read again; whatever they register is forgotten after the test."""
    registry.names()  # built-ins loaded
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_LOADED", False)


def test_entry_point_nodes_are_found_by_graphs(monkeypatch, fresh_registry) -> None:
    eps = [_EntryPoint("smooth", "mypkg.nodes:Smooth", Smooth)]
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: eps if group == "pcdag.nodes" else [])
    assert registry.get("Smooth") is Smooth and registry.get("GridSample") is not None
    g = Graph("g")
    g.add("store", "Store", params={"path": "stores/x", "fields": ["color"]})
    g.add("smooth", "Smooth", cloud="store")
    assert [p for p in validate(g) if p.severity == "error"] == []


def test_a_broken_plugin_warns_and_builtins_still_load(monkeypatch, fresh_registry) -> None:
    eps = [_EntryPoint("bad", "broken.module:Node", ImportError("No module named 'broken'"))]
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: eps)
    with pytest.warns(UserWarning, match="node plug-in 'bad'.*failed to load"):
        names = registry.names()
    assert "GridSample" in names
