"""Export a trained backbone from a training checkpoint in the layout Pointcept/Sonata users load.

The checkpoint carries its resolved graph, so the backbone is rebuilt exactly as trained (preset, channels) and
its weights are written under Pointcept's names (``pcdag.nodes.backbones.pointcept_io``, ``docs/pointcept.md``).
"""

from __future__ import annotations

from pathlib import Path

from pcdag.compiler import compile_graph
from pcdag.graphs.yamlio import loads_graph
from pcdag.nodes.backbones.pointcept_io import export_backbone
from pcdag.runtime import checkpoint as ckpt


def export_from_checkpoint(source: Path, out: Path, node: str = "student") -> Path:
    """Write node ``node``'s module of the checkpoint ``source`` (a file, or a run directory: its newest
    checkpoint) to ``out``; returns the checkpoint used."""
    path = source
    if source.is_dir():
        found = ckpt.list_checkpoints(source / "checkpoints") or ckpt.list_checkpoints(source)
        if not found:
            raise ValueError(f"no checkpoint in {source}")
        path = found[-1][1]
    state = ckpt.load(path)
    plan = compile_graph(loads_graph(state["graph"], f"{path}:graph"))
    step = next((s for s in plan.device.steps if s.name == node), None) if plan.device else None
    if step is None:
        names = ", ".join(s.name for s in plan.device.steps) if plan.device else "none"
        raise ValueError(f"checkpoint {path} has no device node {node!r}; its device nodes: {names}")
    module = step.node.build({})
    prefix = f"{node}."
    weights = {k[len(prefix) :]: v for k, v in state["modules"].items() if k.startswith(prefix)}
    if not weights:
        raise ValueError(f"checkpoint {path} holds no weights of node {node!r}")
    module.load_state_dict(weights)
    export_backbone(module, out)
    return path
