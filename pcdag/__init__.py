"""pcdag: typed pipeline graphs for 3D self-supervised pre-training on point clouds."""

from pcdag.graphs import Graph, GraphError, PointCloud, dump_graph, load_graph

__version__ = "0.1.0"
__all__ = ["Graph", "GraphError", "PointCloud", "__version__", "dump_graph", "load_graph"]
