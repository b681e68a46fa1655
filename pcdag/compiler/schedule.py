"""Pass 6 — schedule: stages, offline jobs and the loader program, and content-addressed cache keys.

A node's key hashes its type, version, full parameters (defaults filled in) and the keys of its inputs, so
changing any parameter upstream changes every key downstream. Offline keys also include the graph seed.
Per-scene keys add the scene's input fingerprint (``pcdag.runtime.offline.scene_key``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import TypeVar

import attrs
import networkx as nx

from pcdag.compiler.program import StageProgram, Step
from pcdag.compiler.resolve import Bound
from pcdag.compiler.structure import Edge
from pcdag.graphs.node import SceneSource
from pcdag.graphs.ports import Placement
from pcdag.graphs.problems import Problem

T = TypeVar("T")

MAX_PARTITION = 256  # scenes per task at most
FINE_TASKS = 64  # with few scenes, aim for this many tasks (progress finer than a quarter of the run)
TASKS_PER_SLOT = 4  # otherwise aim for this many tasks per worker thread


def default_partition_size(n_scenes: int, slots: int) -> int:
    """Scenes per task: about ``TASKS_PER_SLOT`` tasks per worker thread (at least ``FINE_TASKS`` tasks when
    there are that many scenes, for a finer progress bar), never more than ``MAX_PARTITION`` scenes, at least 1."""
    target = max(TASKS_PER_SLOT * max(1, slots), min(n_scenes, FINE_TASKS))
    return int(min(MAX_PARTITION, max(1, math.ceil(n_scenes / target))))


def partition(items: Sequence[T], size: int) -> list[list[T]]:
    """Consecutive batches of ``size`` items (the last may be shorter)."""
    if size < 1:
        raise ValueError(f"partition_size must be at least 1, got {size}")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


@attrs.frozen
class OfflineJob:
    """One source → offline nodes → one store: run per scene on Dask."""

    source: str
    store: str
    program: StageProgram


@attrs.frozen
class Stage:
    placement: Placement
    nodes: tuple[str, ...]


def cache_keys(bound: dict[str, Bound], edges: list[Edge], g: nx.MultiDiGraph, seed: int) -> dict[str, str]:
    keys: dict[str, str] = {}
    if not nx.is_directed_acyclic_graph(g):
        return keys
    for name in nx.topological_sort(g):
        b = bound[name]
        if b.node is None:
            continue
        record = {
            "type": b.decl.type,
            "version": b.cls.version,
            "params": {
                f.name: getattr(b.node.params, f.name)
                for f in attrs.fields(type(b.node.params))
                if f.metadata.get("cache", True)
            },
            "inputs": sorted(f"{e.dst_port}={keys.get(e.src, '?')}:{e.src_port}" for e in edges if e.dst == name),
        }
        if b.placement == Placement.OFFLINE:
            record["seed"] = seed
        text = json.dumps(record, sort_keys=True, default=str)
        keys[name] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return keys


def stages(bound: dict[str, Bound], g: nx.MultiDiGraph) -> list[Stage]:
    order = list(nx.topological_sort(g)) if nx.is_directed_acyclic_graph(g) else list(bound)
    out = []
    for placement in Placement:
        names = tuple(n for n in order if bound[n].placement == placement)
        if names:
            out.append(Stage(placement, names))
    return out


def program(
    entry: tuple[str, str], names: list[str], exit_: tuple[str, str], bound: dict[str, Bound], edges: list[Edge]
) -> StageProgram:
    steps = tuple(
        Step(n, bound[n].node, tuple((e.dst_port, e.src, e.src_port) for e in edges if e.dst == n)) for n in names
    )
    return StageProgram(entry, steps, exit_)


def offline_jobs(
    bound: dict[str, Bound], edges: list[Edge], g: nx.MultiDiGraph
) -> tuple[list[OfflineJob], list[Problem]]:
    """One job per written store: its single source and the offline nodes between them, in order."""
    jobs, problems = [], []
    if not nx.is_directed_acyclic_graph(g):
        return jobs, problems
    order = list(nx.topological_sort(g))
    fed: set[str] = set()
    for store in (n for n in order if bound[n].placement == Placement.STORE):
        into = [e for e in edges if e.dst == store]
        if not into:
            continue  # a read-only store
        ups = nx.ancestors(g, store)
        sources = [n for n in order if n in ups and bound[n].cls is not None and issubclass(bound[n].cls, SceneSource)]
        if len(sources) != 1:
            what = "no source" if not sources else f"{len(sources)} sources ({', '.join(sources)})"
            problems.append(
                Problem(
                    "offline-shape",
                    f"the store is fed by {what}; each store is written from exactly one source",
                    store,
                    "use one Store per source",
                    bound[store].decl.where(),
                )
            )
            continue
        src = sources[0]
        middle = [n for n in order if n in ups and n != src and bound[n].placement == Placement.OFFLINE]
        fed.update(ups)
        entry = (src, next(iter(bound[src].cls.outputs)))
        if bound[src].node is not None and all(bound[n].node is not None for n in middle):
            jobs.append(OfflineJob(src, store, program(entry, middle, (into[0].src, into[0].src_port), bound, edges)))
    for name in order:
        b = bound[name]
        if b.placement == Placement.OFFLINE and name not in fed:
            problems.append(
                Problem(
                    "no-store",
                    "this offline node's results are not written anywhere",
                    name,
                    "connect the end of its chain to a Store node",
                    b.decl.where(),
                )
            )
    for e in edges:
        if bound[e.src].placement == Placement.OFFLINE and bound[e.dst].placement not in (
            Placement.OFFLINE,
            Placement.STORE,
            None,
        ):
            problems.append(
                Problem(
                    "placement",
                    f"offline node {e.src!r} feeds {e.dst!r} ({bound[e.dst].placement})"
                    " directly; offline results reach later stages through a Store",
                    e.dst,
                    f"insert a Store between {e.src!r} and {e.dst!r}",
                    bound[e.dst].decl.where(f"inputs.{e.dst_port}"),
                )
            )
    return jobs, problems


def loader_program(
    bound: dict[str, Bound], edges: list[Edge], g: nx.MultiDiGraph
) -> tuple[StageProgram | None, list[Problem]]:
    """The per-sample function: from the store the loader reads to the value the train step consumes."""
    if not nx.is_directed_acyclic_graph(g):
        return None, []
    order = list(nx.topological_sort(g))
    loader = [n for n in order if bound[n].placement == Placement.LOADER]
    if not loader:
        return None, []
    stores = sorted({e.src for e in edges if e.dst in loader and bound[e.src].placement == Placement.STORE})
    if len(stores) != 1:
        what = "no store" if not stores else f"{len(stores)} stores ({', '.join(stores)})"
        return None, [
            Problem(
                "loader-shape",
                f"the loader stage reads from {what}; it reads exactly one Store",
                loader[0],
                "feed the first loader node from one Store node",
                bound[loader[0]].decl.where(),
            )
        ]
    exits = [e for e in edges if e.src in loader and e.dst not in loader]
    sinks = [n for n in loader if not any(e.src == n for e in edges)]
    if exits:
        exit_ = (exits[0].src, exits[0].src_port)
    elif len(sinks) == 1:
        exit_ = (sinks[0], next(iter(bound[sinks[0]].cls.outputs)))
    else:
        return None, [
            Problem(
                "loader-shape",
                f"the loader stage ends in {len(sinks)} nodes ({', '.join(sinks)}); it must produce one sample",
                sinks[0],
                "join the branches or remove one",
            )
        ]
    if any(bound[n].node is None for n in loader):
        return None, []
    return program((stores[0], "cloud"), loader, exit_, bound, edges), []
