"""Pass 4 — splits: a pre-training graph must not read the scenes its evaluations test on.

The purpose of a graph is its ``purpose`` setting, or derived from its placements (eval nodes → eval; device
nodes → pretrain; otherwise preprocess). In a pre-training graph, reading a val/test split is an error unless
``settings.include_eval_splits: true``, and then it is a warning printed in every plan (leakage of
evaluation scenes into pre-training inflates results).
"""

from __future__ import annotations

from pcdag.compiler.resolve import Bound
from pcdag.graphs.graph import Graph
from pcdag.graphs.node import EVAL_SPLITS
from pcdag.graphs.ports import Placement
from pcdag.graphs.problems import Problem

PURPOSES = ("preprocess", "pretrain", "eval")


def graph_purpose(graph: Graph, bound: dict[str, Bound]) -> str:
    given = graph.settings.get("purpose")
    if given in PURPOSES:
        return given
    placements = {b.placement for b in bound.values()}
    if Placement.EVAL in placements:
        return "eval"
    if Placement.DEVICE in placements:
        return "pretrain"
    return "preprocess"


def check_splits(graph: Graph, bound: dict[str, Bound]) -> list[Problem]:
    problems = []
    purpose = graph.settings.get("purpose")
    if purpose is not None and purpose not in PURPOSES:
        problems.append(
            Problem("bad-setting", f"purpose = {purpose!r} is not one of {', '.join(PURPOSES)}", origin=graph.origin)
        )
    allowed = graph.settings.get("include_eval_splits", False)
    if not isinstance(allowed, bool):
        problems.append(
            Problem("bad-setting", f"include_eval_splits = {allowed!r} must be true or false", origin=graph.origin)
        )
        allowed = False
    if graph_purpose(graph, bound) != "pretrain":
        return problems
    for b in bound.values():
        if b.node is None:
            continue
        leaked = [s for s in b.node.data_splits() if s in EVAL_SPLITS]
        if not leaked:
            continue
        what = f"this pre-training graph reads the evaluation split{'s' if len(leaked) > 1 else ''} {', '.join(leaked)}"
        if allowed:
            problems.append(
                Problem(
                    "eval-leak",
                    what + " (allowed by include_eval_splits: results are not comparable to papers that exclude them)",
                    b.name,
                    severity="warning",
                    origin=b.decl.where("params.splits"),
                )
            )
        else:
            problems.append(
                Problem(
                    "eval-leak",
                    what + "; evaluation scenes must not be pre-trained on",
                    b.name,
                    "use splits: [train], or set `settings: {include_eval_splits: true}` to do it deliberately",
                    b.decl.where("params.splits"),
                )
            )
    return problems
