"""Training checkpoints: written atomically, loaded with ``weights_only=True``, refused when they belong to
another graph or preset (the message names every difference).

A checkpoint is a plain dict of tensors, numbers and strings:

    format, pcdag_version, graph (YAML of the resolved graph), signature (node types and parameters, training
    settings), graph_hash, preset, seed, world_size, step (optimiser steps done), modules {node: state_dict},
    optimizer, scheduler

Files are ``DIR/step-00001234.pt``; the newest ``keep`` are kept. A writer killed mid-save leaves only a
``.step-*.pt.tmp-PID`` file (never listed or loaded), removed by the next save.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import attrs
import torch

import pcdag

FORMAT = 1
# training settings that change how a run is executed or logged, not what it computes
RUNTIME_SETTINGS = ("out", "workers", "checkpoint_every", "keep_checkpoints", "log_every", "batch_per_device")
_NAME = re.compile(r"^step-(\d+)\.pt$")


def signature(plan: Any) -> dict[str, Any]:
    """What a checkpoint must agree on: each node's type and parameters (those in cache keys), and the
    training settings that change the computation."""
    out: dict[str, Any] = {}
    for name, b in plan.bound.items():
        params = {
            f.name: getattr(b.node.params, f.name)
            for f in attrs.fields(type(b.node.params))
            if f.metadata.get("cache", True)
        }
        out[name] = {"type": b.decl.type, "params": params}
    if plan.train is not None:
        train = attrs.asdict(plan.train)
        out["settings.train"] = {k: v for k, v in train.items() if k not in RUNTIME_SETTINGS}
    out["settings.seed"] = plan.seed
    return json.loads(json.dumps(out, default=str))


def signature_hash(sig: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(sig, sort_keys=True).encode()).hexdigest()[:16]


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two signatures: ``student.preset: 'tiny' → 'base'``."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if a is None or b is None:
            out.append(f"node {key!r} {'added' if a is None else 'removed'}")
        elif isinstance(a, dict) and "type" in a and a.get("type") != b.get("type"):
            out.append(f"{key}: type {a['type']} → {b['type']}")
        else:
            pa, pb = (a.get("params", a), b.get("params", b)) if isinstance(a, dict) else (a, b)
            if isinstance(pa, dict) and isinstance(pb, dict):
                for k in sorted(set(pa) | set(pb)):
                    if pa.get(k) != pb.get(k):
                        out.append(f"{key}.{k}: {pa.get(k)!r} → {pb.get(k)!r}")
            else:
                out.append(f"{key}: {a!r} → {b!r}")
    return out


def save(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` to a temporary name in the same directory, fsync, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"step-{step:08d}.pt"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the checkpoints in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def prune(directory: Path, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints; also remove half-written temporaries of killed writers (one process
    writes a run's checkpoints, so another pid's temporary is a leftover)."""
    for _, p in list_checkpoints(directory)[:-keep]:
        p.unlink(missing_ok=True)
    mine = f".tmp-{os.getpid()}"
    for p in directory.glob(".step-*.pt.tmp-*"):
        if not p.name.endswith(mine):
            p.unlink(missing_ok=True)


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint (``weights_only=True``: no code runs); a bad file names itself."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ValueError(f"checkpoint {path} cannot be read: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a pcdag checkpoint of format {FORMAT}")
    return state


def check_compatible(state: dict[str, Any], sig: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint written by another graph or preset, naming each difference."""
    if state.get("graph_hash") == signature_hash(sig):
        return
    diff = differences(state.get("signature", {}), sig)
    was = f"graph {state.get('graph_name')!r} preset {state.get('preset')!r}"
    raise ValueError(
        f"checkpoint {path} was written by {was} and does not fit this graph: "
        + "; ".join(diff[:20])
        + (f"; … {len(diff) - 20} more" if len(diff) > 20 else "")
        + ". Use a new --out directory, or the same graph, preset and --set flags as that run."
    )


def header(plan: Any, graph_yaml: str, world_size: int) -> dict[str, Any]:
    sig = signature(plan)
    return {
        "format": FORMAT,
        "pcdag_version": pcdag.__version__,
        "graph_name": plan.graph.name,
        "graph": graph_yaml,
        "signature": sig,
        "graph_hash": signature_hash(sig),
        "preset": plan.graph.settings.get("preset"),
        "seed": plan.seed,
        "world_size": world_size,
    }
