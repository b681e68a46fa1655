"""``compile_graph``: run every pass, collect every problem, return the ``Plan`` or raise ``GraphError``.

    resolve → structure → fields → splits → offline/loader/device shape → fusion → cache keys → plan

Each pass is a small function over plain data returning what the next one reuses.
"""

from __future__ import annotations

from pcdag.compiler.fields import check_fields
from pcdag.compiler.fusion import fuse
from pcdag.compiler.plan import Plan
from pcdag.compiler.resolve import resolve
from pcdag.compiler.schedule import cache_keys, loader_program, offline_jobs, stages
from pcdag.compiler.splits import check_splits, graph_purpose
from pcdag.compiler.structure import check_structure
from pcdag.compiler.training import device_program, train_settings
from pcdag.graphs.graph import Graph
from pcdag.graphs.problems import GraphError, Problem


def analyse(graph: Graph) -> tuple[Plan | None, list[Problem]]:
    """All passes; returns the plan (None when there are errors) and every problem found, warnings included."""
    bound, problems = resolve(graph)
    edges, g, p = check_structure(bound)
    problems += p
    structure_ok = not any(x.severity == "error" for x in problems)
    fields, p = check_fields(bound, edges, g)
    problems += p
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


def validate(graph: Graph) -> list[Problem]:
    """Every problem of the graph (errors and warnings); empty when it compiles cleanly."""
    return analyse(graph)[1]


def compile_graph(graph: Graph) -> Plan:
    plan, problems = analyse(graph)
    if plan is None:
        raise GraphError(problems)
    return plan
