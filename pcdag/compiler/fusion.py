"""Pass 5 — fusion: group consecutive per-item nodes of one stage into chains that run as one function.

Offline chains run as one Dask task per scene (intermediate clouds are never written); loader chains run as
one function per sample working on a single ``PointCloud`` (no per-transform dict copies; selections are
gathered once). A chain breaks where the placement changes, where a node feeds several nodes (its output is
copied), where a node joins several inputs, or at a node that is not per-item. Each break is recorded with
its reason so the plan can say why.
"""

from __future__ import annotations

import attrs
import networkx as nx

from pcdag.compiler.resolve import Bound
from pcdag.compiler.structure import Edge
from pcdag.graphs.node import CloudTransform, SceneSource
from pcdag.graphs.ports import Placement

FUSABLE = (Placement.OFFLINE, Placement.LOADER)


@attrs.frozen
class FusedGroup:
    placement: Placement
    nodes: tuple[str, ...]
    ends: str  # why the chain stops after its last node


def per_item(b: Bound) -> bool:
    """True for nodes executed once per scene/sample with one cloud in and out (or a source)."""
    return b.cls is not None and (issubclass(b.cls, (CloudTransform, SceneSource)) or b.cls.per_item)


def fuse(bound: dict[str, Bound], edges: list[Edge], g: nx.MultiDiGraph) -> list[FusedGroup]:
    if not nx.is_directed_acyclic_graph(g):
        return []
    succ = {n: [e for e in edges if e.src == n] for n in bound}
    pred = {n: [e for e in edges if e.dst == n] for n in bound}
    groups: list[list[str]] = []
    group_of: dict[str, int] = {}
    for name in nx.topological_sort(g):
        b = bound[name]
        if b.placement not in FUSABLE or not per_item(b):
            continue
        ins = pred[name]
        parent = ins[0].src if len(ins) == 1 else None
        if (
            parent in group_of
            and bound[parent].placement == b.placement
            and len(succ[parent]) == 1
            and groups[group_of[parent]][-1] == parent
        ):
            groups[group_of[parent]].append(name)
            group_of[name] = group_of[parent]
        else:
            group_of[name] = len(groups)
            groups.append([name])
    return [FusedGroup(bound[c[0]].placement, tuple(c), _why_ends(c[-1], bound, succ, pred)) for c in groups]


def _why_ends(last: str, bound: dict[str, Bound], succ: dict[str, list[Edge]], pred: dict[str, list[Edge]]) -> str:
    out = succ[last]
    if not out:
        return "end of the graph"
    later = {bound[e.dst].placement for e in out} - {bound[last].placement}
    if later == {Placement.DEVICE} and all(bound[e.dst].placement == Placement.DEVICE for e in out):
        return "stage boundary loader → device: samples are collated into one batch for the training step"
    if len(out) > 1:
        return f"{last!r} feeds {len(out)} nodes ({', '.join(e.dst for e in out)}): its output is copied per branch"
    nxt = bound[out[0].dst]
    if nxt.placement != bound[last].placement:
        boundary = (
            "store boundary: written once, read by the loader"
            if nxt.placement == Placement.STORE
            else f"stage boundary {bound[last].placement} → {nxt.placement}"
        )
        return f"next node {nxt.name!r} runs in the {nxt.placement} stage ({boundary})"
    if len(pred[nxt.name]) > 1:
        return f"next node {nxt.name!r} joins {len(pred[nxt.name])} inputs"
    return f"next node {nxt.name!r} ({nxt.decl.type}) is not a per-item transform"
