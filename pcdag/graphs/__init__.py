"""The graph model: typed ports, node specs, the graph builder, YAML load/dump."""

from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.graphs.graph import Graph, NodeDecl, Origin, PortRef
from pcdag.graphs.node import CloudTransform, FieldEffect, In, Node, Out, SceneRef, SceneSource, effect
from pcdag.graphs.params import ParamError, in_range, integer, of_type, one_of, pair, param, subset_of
from pcdag.graphs.ports import FIELDS, PORT_TYPES, Placement, PortType
from pcdag.graphs.problems import GraphError, Problem
from pcdag.graphs.registry import register
from pcdag.graphs.yamlio import dump_graph, dumps_graph, load_graph, loads_graph

__all__ = [
    "FIELDS",
    "PORT_TYPES",
    "CloudError",
    "CloudTransform",
    "FieldEffect",
    "Graph",
    "GraphError",
    "In",
    "Node",
    "NodeDecl",
    "Origin",
    "Out",
    "ParamError",
    "Placement",
    "PointCloud",
    "PortRef",
    "PortType",
    "Problem",
    "SceneRef",
    "SceneSource",
    "dump_graph",
    "dumps_graph",
    "effect",
    "in_range",
    "integer",
    "load_graph",
    "loads_graph",
    "of_type",
    "one_of",
    "pair",
    "param",
    "register",
    "subset_of",
]
