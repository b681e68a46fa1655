"""The contract every ``CloudTransform`` keeps, checked on a concrete cloud.

``check_transform_contract(node, cloud, rng)`` runs ``node.apply`` on a private copy of ``cloud`` (with every field
pending behind a lazy selection, as inside a fused chain) and checks that:

- a refusal is a ``CloudError`` whose message names the node; any other exception is a contract breach;
- the result is a ``PointCloud`` that passes ``validate()`` and has no more points than the input;
- every field in ``fields().writes`` is present, none in ``drops`` is, every other input field survives;
- fields the node does not write (nor optionally read) follow the kept points unchanged: ``out[f] == in[f][rows]``
  (so a node subsets through ``cloud.select`` and never reorders one field alone);
- the node only reads fields it declares (``reads``, ``optional_reads``, ``writes``; ``coord`` is always there);
- the same seed gives the same result (randomness comes only from ``rng``).

``check_reads_declared(node, cloud, rng)`` checks the declared reads are real: without a required field the node
fails (``KeyError`` or ``CloudError``); without an optional one it still runs.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np

from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.graphs.node import CloudTransform

ROW = "_contract_row"  # int64 [N] field added by the check: the input row of every point


class ContractError(Exception):
    """A node breaks the ``CloudTransform`` contract; the message names the node and the broken rule."""


class _TracingCloud(PointCloud):
    """A ``PointCloud`` that records which fields are read while ``tracing`` is on."""

    __slots__ = ("accessed", "tracing")

    def __init__(self, fields: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None):
        super().__init__(fields, meta)
        self.accessed: set[str] = set()
        self.tracing = False

    def __getitem__(self, name: str) -> np.ndarray:
        if self.tracing:
            self.accessed.add(name)
        return super().__getitem__(name)


def _snapshot(cloud: PointCloud) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Validated private copy of the input fields (plus the row field) and meta."""
    src = cloud.copy()
    try:
        src.validate("input cloud of the contract check")
    except CloudError as exc:
        raise ValueError(f"the contract check needs a valid input cloud: {exc}") from exc
    fields = dict(src.materialise())
    fields[ROW] = np.arange(len(src), dtype=np.int64)
    return fields, src.meta


def _fresh(fields: Mapping[str, np.ndarray], meta: Mapping[str, Any], without: str | None = None) -> _TracingCloud:
    """A new cloud of copies of ``fields``, all pending behind an identity selection (the lazy path)."""
    cloud = _TracingCloud({k: v.copy() for k, v in fields.items() if k != without}, copy.deepcopy(dict(meta)))
    return cloud.select(np.arange(len(cloud)))  # type: ignore[return-value]


def _apply(node: CloudTransform, cloud: _TracingCloud, rng: np.random.Generator) -> Any:
    """Run the node; a ``CloudError`` naming the node passes through, anything else becomes a ``ContractError``."""
    cloud.tracing = True
    try:
        return node.apply(cloud, rng)
    except CloudError as exc:
        if node.type_name() not in str(exc):
            msg = f"{node!r} refused a cloud with a CloudError that does not name the node: {exc}"
            raise ContractError(msg) from exc
        raise
    except Exception as exc:
        raise ContractError(
            f"{node!r}.apply raised {type(exc).__name__}: {exc} (on {cloud!r}; if it needs a field, declare it in "
            f"fields().reads; if it refuses the cloud, raise a CloudError naming the node)"
        ) from exc
    finally:
        cloud.tracing = False


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return bool(a == b)


def _check_output(node: CloudTransform, fields: Mapping[str, np.ndarray], out: Any, accessed: set[str]) -> None:
    name, eff = repr(node), node.fields()
    if not isinstance(out, PointCloud):
        raise ContractError(f"{name}.apply returned {type(out).__name__}, not a PointCloud")
    out.materialise()  # settle pending selections before the (tracing-free) contract reads
    try:
        out.validate(f"output of {name}")
    except CloudError as exc:
        raise ContractError(str(exc)) from exc
    n_in, n_out = len(fields[ROW]), len(out)
    if n_out > n_in:
        raise ContractError(f"{name} returned {n_out} points from {n_in}; no transform may add points")
    missing_writes = sorted(eff.writes - out.fields)
    kept_drops = sorted(eff.drops & out.fields)
    lost = sorted(set(fields) - eff.drops - out.fields)
    for what, names in (("declared writes missing", missing_writes), ("declared drops still present", kept_drops)):
        if names:
            raise ContractError(f"{name}: {what} in its output: {names}")
    if lost:
        raise ContractError(f"{name} removed fields it does not declare in drops: {lost}")
    undeclared = sorted(accessed - eff.reads - eff.optional_reads - eff.writes - {"coord", ROW})
    if undeclared:
        raise ContractError(f"{name} read fields it does not declare (add them to fields().reads): {undeclared}")
    rows = out[ROW]
    if rows.dtype != np.int64 or rows.ndim != 1 or (n_out and (rows.min() < 0 or rows.max() >= n_in)):
        raise ContractError(f"{name} changed the contract's row field {ROW!r}; it must only be selected")
    for field in sorted(set(fields) - eff.writes - eff.optional_reads - eff.drops - {ROW}):
        if not _same(out[field], fields[field][rows]):
            raise ContractError(
                f"{name} changed field {field!r} without declaring it in writes (or its rows no longer follow the "
                f"points: subset with cloud.select, never one field alone)"
            )


def _check_deterministic(node: CloudTransform, first: PointCloud, second: PointCloud) -> None:
    a, b = first.materialise(), second.materialise()
    differs = sorted(k for k in set(a) | set(b) if k not in a or k not in b or not _same(a[k], b[k]))
    differs += sorted(f"meta[{k!r}]" for k in set(first.meta) | set(second.meta) if not _meta_same(first, second, k))
    if differs:
        raise ContractError(
            f"{node!r} gave different results for the same seed ({', '.join(differs)}); draw randomness only "
            f"from the rng passed to apply"
        )


def _meta_same(first: PointCloud, second: PointCloud, key: str) -> bool:
    return key in first.meta and key in second.meta and _same(first.meta[key], second.meta[key])


def check_transform_contract(node: CloudTransform, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
    """Apply ``node`` to a copy of ``cloud`` and check the transform contract; return the output cloud.

    Raises ``ContractError`` naming the node when a rule is broken, re-raises a ``CloudError`` by which the node
    (by name) refuses the cloud, and raises ``ValueError`` when ``cloud`` itself is invalid. ``cloud`` is not
    modified; ``rng`` is advanced as by one ``apply``.
    """
    if not isinstance(node, CloudTransform):
        raise TypeError(f"{node!r} is not a CloudTransform")
    fields, meta = _snapshot(cloud)
    replay = copy.deepcopy(rng)
    first = _fresh(fields, meta)
    out = _apply(node, first, rng)
    _check_output(node, fields, out, first.accessed)
    try:
        again = _apply(node, _fresh(fields, meta), replay)
    except CloudError as exc:
        msg = f"{node!r} refused, on a second run with the same seed, a cloud it accepted: {exc}"
        raise ContractError(msg) from exc
    _check_deterministic(node, out, again)
    del out[ROW]
    return out


def check_reads_declared(node: CloudTransform, cloud: PointCloud, rng: np.random.Generator) -> None:
    """Without a declared read field the node must fail (KeyError/CloudError); without an optional read it runs.

    ``cloud`` must carry every field the node reads (``coord`` cannot be removed, so it is not tried).
    """
    eff = node.fields()
    fields, meta = _snapshot(cloud)
    absent = sorted(eff.reads - set(fields))
    if absent:
        raise ValueError(f"check_reads_declared({node!r}) needs a cloud with the fields it reads; missing {absent}")
    for field in sorted(eff.reads - {"coord"}):
        try:
            node.apply(_fresh(fields, meta, without=field), copy.deepcopy(rng))
        except (KeyError, CloudError):
            continue
        except Exception as exc:
            raise ContractError(
                f"{node!r} without its declared read {field!r} raised {type(exc).__name__} ({exc}); expected a "
                f"KeyError or CloudError"
            ) from exc
        raise ContractError(
            f"{node!r} declares it reads {field!r} but ran on a cloud without it; declare it in optional_reads "
            f"if it is only used when present, or drop it"
        )
    for field in sorted((eff.optional_reads & set(fields)) - {"coord"}):
        try:
            node.apply(_fresh(fields, meta, without=field), copy.deepcopy(rng))
        except CloudError:
            continue  # a refusal for another reason (too few points, ...) is not this check's business
        except Exception as exc:
            raise ContractError(
                f"{node!r} declares {field!r} optional but failed without it: {type(exc).__name__} {exc}"
            ) from exc
