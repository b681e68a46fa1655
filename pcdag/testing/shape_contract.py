"""Contracts of the offline and loader node shapes other than transforms: sources, ``Node.run`` nodes and the
store (evaluators: ``eval_contract``). Each check raises ``ContractError`` naming the node type and the broken rule.

``check_source(node)``              ``scenes()`` reads no file and lists ``SceneRef``s of the chosen splits with
                                    distinct ids; ``load(ref)`` gives the port's type (a valid ``PointCloud`` with
                                    exactly the fields ``provides()`` names, or ``Frames``), meta scene / split /
                                    room from the ref, the same twice; a missing ``root`` is an error naming it
``check_run_node(node, inputs)``    ``run`` returns the declared ports with values of their types (``Parts`` of
                                    them when the node expands), the same for the same seed
``check_store(node_type, path)``    the read side knows nothing before a store is written, then the fields and
                                    scenes the store holds; its path is written when connected, read otherwise
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import io
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from unittest import mock

import attrs
import numpy as np

from pcdag.graphs.batch import ViewSample
from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.graphs.frames import Frames
from pcdag.graphs.node import Node, Parts, SceneRef, SceneSource
from pcdag.graphs.ports import FRAMES, MULTI_VIEW_BATCH, POINT_CLOUD
from pcdag.testing.contract import ContractError


def runtime_type(port_type: Any) -> type:
    """The Python type a value on an offline or loader port of ``port_type`` has."""
    for port, kind in ((POINT_CLOUD, PointCloud), (FRAMES, Frames), (MULTI_VIEW_BATCH, ViewSample)):
        if port.accepts(port_type):
            return kind
    raise ValueError(f"the shape contracts know no runtime type of port type {port_type}")


def arrays(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every leaf inside ``value`` (clouds, frames, parts, attrs classes, mappings, lists) with its path."""
    if isinstance(value, PointCloud):
        yield from arrays({"fields": dict(value.materialise()), "meta": value.meta}, path)
    elif attrs.has(type(value)):
        for f in attrs.fields(type(value)):
            yield from arrays(getattr(value, f.name), f"{path}.{f.name}")
    elif isinstance(value, Mapping):
        for k in sorted(value, key=str):
            yield from arrays(value[k], f"{path}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from arrays(v, f"{path}[{i}]")
    else:
        yield path, value


def differences(a: Any, b: Any) -> list[str]:
    """Paths at which two values differ (arrays by dtype, shape and content; NaN equals NaN)."""
    la, lb = dict(arrays(a)), dict(arrays(b))
    out = [p for p in sorted(set(la) | set(lb)) if p not in la or p not in lb or not _same(la[p], lb[p])]
    return out


def _same(x: Any, y: Any) -> bool:
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)) or x.dtype != y.dtype:
            return False
        return x.shape == y.shape and bool(np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"))
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return bool(x == y)


# -------------------------------------------------------------------------------------------------- sources


@contextlib.contextmanager
def _no_reading(who: str) -> Iterator[None]:
    """Within: opening a file for reading (``open``, ``io.open``, ``Path.read_*``, ``numpy.load``) is an error."""
    real = builtins.open

    def refuse(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(c in mode for c in "wax+"):
            return real(file, mode, *args, **kwargs)
        raise ContractError(f"{who}: scenes() opened {file} for reading; list scenes without reading data")

    with mock.patch.object(builtins, "open", refuse), mock.patch.object(io, "open", refuse):
        yield


def check_source(node: SceneSource, missing_root: Path | None = None) -> list[SceneRef]:
    """The source contract over ``node``'s first scene; returns the listed refs."""
    who = node.type_name()
    with _no_reading(who):
        refs = node.scenes()
    if not refs or not all(isinstance(r, SceneRef) for r in refs):
        raise ContractError(f"{who}: scenes() must list SceneRefs; got {refs!r:.200}")
    ids = [r.id for r in refs]
    strays = sorted({r.split for r in refs} - set(node.data_splits()))
    if len(set(ids)) != len(ids) or strays:
        raise ContractError(f"{who}: scenes() lists repeated ids or scenes of splits it was not asked for {strays}")
    ref = refs[0]
    first, second = node.load(ref), node.load(ref)
    kind = runtime_type(next(iter(node.outputs.values())).type)
    if not isinstance(first, kind):
        raise ContractError(f"{who}: load() returned {type(first).__name__}, not {kind.__name__}")
    if isinstance(first, PointCloud):
        try:
            first.validate(f"{who} scene {ref.id}")
        except CloudError as exc:
            raise ContractError(str(exc)) from exc
        if set(first.fields) != set(node.provides()):
            raise ContractError(
                f"{who}: load() gave fields {sorted(first.fields)}, provides() {sorted(node.provides())}"
            )
    meta = {k: first.meta.get(k) for k in ("scene", "split", "room")}
    if meta != {"scene": ref.id, "split": ref.split, "room": ref.room}:
        raise ContractError(f"{who}: load() meta {meta} does not carry its ref's id, split and room")
    if differences(first, second):
        raise ContractError(f"{who}: two loads of scene {ref.id} differ: {differences(first, second)[:5]}")
    if missing_root is not None and "root" in attrs.fields_dict(type(node.params)):
        _check_missing_root(node, missing_root, who)
    return refs


def _check_missing_root(node: SceneSource, missing: Path, who: str) -> None:
    lost = type(node)(**{**node.given, "root": str(missing)})
    try:
        lost.scenes()
    except (OSError, ValueError) as exc:
        if missing.name not in str(exc):
            raise ContractError(f"{who}: a missing root gave an error that does not name it: {exc}") from exc
        return
    raise ContractError(f"{who}: a root that does not exist ({missing}) listed scenes instead of an error")


# -------------------------------------------------------------------------------------------------- run nodes


def check_run_node(node: Node, inputs: Mapping[str, Any], seed: int = 0) -> dict[str, Any]:
    """The ``Node.run`` contract on ``inputs`` (each run gets its own copy: a stage program hands a node values it
    may change); returns the outputs."""
    who = node.type_name()
    out = _run(node, copy.deepcopy(dict(inputs)), seed, who)
    if set(out) != set(node.outputs):
        raise ContractError(f"{who}: run() must return the ports {sorted(node.outputs)}, returned {sorted(out)}")
    for port, value in out.items():
        _check_value(node, port, value, who)
    again = _run(node, copy.deepcopy(dict(inputs)), seed, who)
    if differences(out, again):
        raise ContractError(f"{who}: two runs with one seed differ ({differences(out, again)[:5]}); use the rng given")
    return out


def _run(node: Node, inputs: Mapping[str, Any], seed: int, who: str) -> dict[str, Any]:
    try:
        return node.run(np.random.default_rng(seed), **inputs)
    except Exception as exc:
        raise ContractError(f"{who}: run() raised {type(exc).__name__}: {exc}") from exc


def _check_value(node: Node, port: str, value: Any, who: str) -> None:
    kind = runtime_type(node.outputs[port].type)
    if node.expands:
        if not isinstance(value, Parts) or len({name for name, _ in value.items}) != len(value):
            raise ContractError(f"{who}: an expanding node puts Parts with distinct names on {port!r}")
        values = [v for _, v in value.items]
    else:
        values = [value]
    for v in values:
        if not isinstance(v, kind):
            raise ContractError(f"{who}: output {port!r} holds a {type(v).__name__}, not a {kind.__name__}")
        if isinstance(v, PointCloud):
            try:
                v.validate(f"output {port!r} of {who}")
            except CloudError as exc:
                raise ContractError(str(exc)) from exc
            missing = sorted(node.fields().writes - set(v.fields))
            if missing:
                raise ContractError(f"{who}: output {port!r} lacks the fields it declares it writes: {missing}")


# -------------------------------------------------------------------------------------------------- the store


def check_store(store_type: type[Node], path: Path, clouds: Mapping[str, PointCloud]) -> None:
    """Write ``clouds`` (scene id -> cloud, split ``train``) into a store at ``path`` and check the node's read
    side before and after; ``path`` must not exist yet."""
    from pcdag.runtime.store import SceneStore

    who = store_type.type_name()
    node = store_type(path=str(path), splits=["train"])
    kinds = (node.path_kinds(frozenset({"cloud"})).get("path"), node.path_kinds(frozenset()).get("path"))
    if kinds[0] != "out-dir" or kinds[1] == "out-dir":
        raise ContractError(f"{who}: its path must be written when 'cloud' is connected and read when not: {kinds}")
    if node.source_fields() is not None:
        raise ContractError(f"{who}: a store not yet written claims fields {node.source_fields()}")
    store = SceneStore(path)
    for scene, cloud in clouds.items():
        store.write(scene, cloud, key="contract", split="train", room=scene)
    store.write_manifest({})
    common = frozenset.intersection(*(frozenset(c.fields) for c in clouds.values()))
    if node.source_fields() != common:
        raise ContractError(f"{who}: reads fields {node.source_fields()} from a store holding {sorted(common)}")
    if node.data_splits() != ("train",) or not any(str(len(clouds)) in note for note in node.plan_notes()):
        raise ContractError(f"{who}: its splits {node.data_splits()} or plan notes {node.plan_notes()} are wrong")
