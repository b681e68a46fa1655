"""The compiler: validation, fusion, scheduling into stages, the execution plan and its rendering."""

from pcdag.compiler.compile import analyse, compile_graph, validate
from pcdag.compiler.plan import Plan

__all__ = ["Plan", "analyse", "compile_graph", "validate"]
