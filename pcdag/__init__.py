"""pcdag: typed pipeline graphs for 3D self-supervised pre-training on point clouds."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pcdag.graphs import Graph, GraphError, PointCloud, dump_graph, load_graph

__version__ = "0.1.0"
__all__ = ["Graph", "GraphError", "PointCloud", "__version__", "dump_graph", "load_graph"]


def __getattr__(name: str) -> Any:
    """The graph model is imported on first use, so ``pcdag --help`` does not pay for numpy and networkx."""
    if name in __all__:
        return getattr(importlib.import_module("pcdag.graphs"), name)
    raise AttributeError(f"module 'pcdag' has no attribute {name!r}")
