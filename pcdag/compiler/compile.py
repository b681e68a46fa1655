"""``compile_graph``: run every pass, collect every problem, return the ``Plan`` or raise ``GraphError``.

    (load problems) → resolve → structure → paths → fields → splits → offline/loader/device shape → fusion
    → cache keys → plan

Each pass is a small function over plain data returning what the next one reuses. Every pass runs whatever the
others found, except the stage-shape checks, which need resolved types and a well-connected graph; a problem
that only repeats a shape problem found while loading (a node without a type is an unknown type, a node whose
inputs could not be read is unconnected) is left out.
"""

from __future__ import annotations

from collections.abc import Mapping

from pcdag.compiler.fields import check_fields
from pcdag.compiler.fusion import fuse
from pcdag.compiler.paths import check_paths
from pcdag.compiler.plan import Plan
from pcdag.compiler.resolve import resolve
from pcdag.compiler.schedule import cache_keys, loader_program, offline_jobs, stages
from pcdag.compiler.splits import check_splits, graph_purpose
from pcdag.compiler.structure import check_structure
from pcdag.compiler.training import device_program, train_settings
from pcdag.graphs.graph import Graph
from pcdag.graphs.problems import GraphError, Problem

# errors about one node alone: the stage-shape checks still mean something after them
_LOCAL = frozenset({"bad-param", "missing-dep", "path"})


def analyse(graph: Graph, check_files: bool = True) -> tuple[Plan | None, list[Problem]]:
    """All passes; returns the plan (None when there are errors) and every problem found, warnings included.

    ``check_files=False`` skips the file-system checks of path parameters (a graph kept in a checkpoint, compiled
    only for its model configuration)."""
    bound, problems = resolve(graph)
    edges, g, p = check_structure(bound)
    problems += p
    if check_files:
        problems += check_paths(bound, edges)
    problems = _new(problems, graph.broken)
    structure_ok = not graph.broken and not any(x.severity == "error" and x.code not in _LOCAL for x in problems)
    problems = list(graph.load_problems) + problems
    fields, p = check_fields(bound, edges, g)
    problems += _new(p, graph.broken)
    problems += check_splits(graph, bound)
    jobs, loader, device = [], None, None
    train, p = train_settings(graph)
    problems += p
    if structure_ok:  # stage shapes are only meaningful on a well-connected graph; else they repeat its errors
        jobs, p = offline_jobs(bound, edges, g)
        problems += p
        loader, p = loader_program(bound, edges, g)
        problems += p
        device, p = device_program(bound, edges, g)
        problems += p
    seed = graph.settings.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        problems.append(Problem("bad-setting", f"seed = {seed!r} must be a whole number ≥ 0", origin=graph.origin))
        seed = 0
    if any(p.severity == "error" for p in problems):
        return None, problems
    plan = Plan(
        graph=graph,
        purpose=graph_purpose(graph, bound),
        seed=seed,
        bound=bound,
        edges=tuple(edges),
        stages=tuple(stages(bound, g)),
        groups=tuple(fuse(bound, edges, g)),
        keys=cache_keys(bound, edges, g, seed),
        fields=fields,
        offline=tuple(jobs),
        loader=loader,
        device=device,
        train=train if device is not None else None,
        warnings=tuple(p for p in problems if p.severity != "error"),
    )
    return plan, problems


def _new(problems: list[Problem], broken: Mapping[str, frozenset[str]]) -> list[Problem]:
    """``problems`` less those that repeat a loading problem of a node in ``broken`` (node -> unusable parts)."""

    def repeats(p: Problem) -> bool:
        parts = broken.get(p.node or "", frozenset())
        if parts & {"node", "type"}:
            return True  # nothing of the node could be checked
        if "params" in parts and p.code == "bad-param":
            return True
        return "inputs" in parts and p.code not in (_LOCAL | {"placement"})

    return [p for p in problems if not repeats(p)]


def validate(graph: Graph) -> list[Problem]:
    """Every problem of the graph (errors and warnings), including those found while loading it and every
    file-system check of its paths; empty when it compiles cleanly."""
    return analyse(graph)[1]


def compile_graph(graph: Graph, check_files: bool = True) -> Plan:
    plan, problems = analyse(graph, check_files)
    if plan is None:
        raise GraphError(problems)
    return plan
