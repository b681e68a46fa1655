"""Backbones out of checkpoints: which file a run means, which node of its graph is the backbone, its module.

The runtime names no backbone type: a backbone is any node of the class ``BackboneNode`` (the backbone protocol,
``pcdag.graphs.backbone``), and two kinds of file hold one:

- a pcdag training checkpoint (``RUN/checkpoints/step-*.pt``, or the run directory: its newest checkpoint). It
  carries its resolved graph, so the backbone is rebuilt exactly as trained (``with_params``, ``build_module``,
  ``load_trained``). The backbone is the node named ``node``, or else the graph's only backbone node, or else its
  only trainable one (the student beside a frozen one);
- a foreign checkpoint or a ``pcdag export`` file (``{"config", "state_dict"}``): every registered backbone type
  is asked whether the ``config`` is its own (``params_from_foreign``); the one that says yes rebuilds it and
  reads the weights (``import_weights``).

``open_backbone`` returns the node, its module with the trained weights and, for a training checkpoint, the plan
of its graph; ``changes`` re-configure the node where no weight depends on them (``feature_params``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import torch

from pcdag.compiler import compile_graph
from pcdag.graphs import registry
from pcdag.graphs.backbone import BackboneNode, WeightsError
from pcdag.graphs.yamlio import loads_graph
from pcdag.runtime import checkpoint as ckpt


def checkpoint_file(source: str | Path) -> Path:
    """The file ``source`` names: itself, or a run directory's newest checkpoint."""
    source = Path(source)
    if source.is_dir():
        found = ckpt.list_checkpoints(source / "checkpoints") or ckpt.list_checkpoints(source)
        if not found:
            raise FileNotFoundError(f"no checkpoint in {source} (looked in {source / 'checkpoints'} and {source})")
        return found[-1][1]
    if not source.is_file():
        raise FileNotFoundError(f"no checkpoint at {source}")
    return source


def is_training_checkpoint(state: Any) -> bool:
    return isinstance(state, dict) and "modules" in state and "graph" in state


def backbone_step(plan: Any, node: str | None, where: str) -> Any:
    """The ``Step`` of the plan's backbone: ``node`` if given (it must be a backbone node), else the only backbone
    node of the device stage, else its only trainable one."""
    steps = plan.device.steps if plan.device is not None else ()
    backbones = [s for s in steps if isinstance(s.node, BackboneNode)]
    if node is not None:
        found = [s for s in steps if s.name == node]
        if not found:
            names = ", ".join(s.name for s in steps) or "none"
            raise ValueError(f"{where} has no device node {node!r}; its device nodes: {names}")
        if not isinstance(found[0].node, BackboneNode):
            names = ", ".join(s.name for s in backbones) or "none"
            raise ValueError(f"{where}: node {node!r} is no backbone node (its backbone nodes: {names})")
        return found[0]
    if len(backbones) != 1:
        trainable = [s for s in backbones if s.name in plan.device.trainable]
        if len(trainable) == 1:
            return trainable[0]
        names = ", ".join(f"{s.name} ({s.node.type_name()})" for s in backbones) or "none"
        raise ValueError(f"{where}: cannot tell which backbone to use (backbone nodes: {names}); name one")
    return backbones[0]


def backbone_types() -> list[type[BackboneNode]]:
    """Every registered backbone node class (built-in and plug-in; only modules of the backbone role load)."""
    found = []
    for name in registry.names():
        if registry.role(name) != "backbones":
            continue
        cls = registry.get(name)
        if isinstance(cls, type) and issubclass(cls, BackboneNode):
            found.append(cls)
    return found


def foreign_node(config: Any, where: str) -> BackboneNode:
    """The backbone node that rebuilds a foreign file's ``config``: the one registered type that claims it."""
    claims = []
    for cls in backbone_types():
        try:
            params = cls.params_from_foreign(config)
        except WeightsError as exc:
            raise WeightsError(f"{where}: {cls.type_name()} cannot rebuild it: {exc}") from None
        if params is not None:
            claims.append((cls, params))
    if not claims:
        keys = ", ".join(sorted(map(str, config))[:12]) if isinstance(config, dict) else type(config).__name__
        known = ", ".join(f"{c.type_name()} ({c.foreign or 'no foreign format'})" for c in backbone_types())
        raise WeightsError(f"{where}: its config ({keys}) is of no backbone type pcdag knows: {known}")
    if len(claims) > 1:
        names = ", ".join(c.type_name() for c, _ in claims)
        raise WeightsError(f"{where}: several backbone types claim its config: {names}")
    cls, params = claims[0]
    return cls(**params)


@attrs.frozen
class Loaded:
    """A backbone out of a file: the node (with the file's architecture), its module with the trained weights, the
    file, the node's name and the plan of the checkpoint's graph (both None for a foreign file)."""

    path: Path
    node: BackboneNode
    module: torch.nn.Module
    name: str | None = None
    plan: Any = None


def open_backbone(source: str | Path, node: str | None = None, features: bool = False, **changes: Any) -> Loaded:
    """The trained backbone of ``source`` (see the module docstring). ``features``: re-configured by its
    ``feature_params`` (per-point features at full resolution); ``changes``: further parameter changes."""
    path = checkpoint_file(source)
    state = ckpt.load(path) if path.suffix == ".pt" else torch.load(path, map_location="cpu", weights_only=True)
    if is_training_checkpoint(state):
        plan = compile_graph(loads_graph(state["graph"], f"{path}:graph"), check_files=False)  # config only
        step = backbone_step(plan, node, f"checkpoint {path}")
        backbone = _changed(step.node, features, changes)
        prefix = f"{step.name}."
        weights = {k[len(prefix) :]: v for k, v in state["modules"].items() if k.startswith(prefix)}
        if not weights:
            raise ValueError(f"checkpoint {path} holds no weights of node {step.name!r}")
        module = backbone.build_module()
        backbone.load_trained(module, weights, f"checkpoint {path}, node {step.name!r}")
        return Loaded(path, backbone, module, step.name, plan)
    if not isinstance(state, dict) or "config" not in state:
        raise ValueError(f"{path}: neither a pcdag training checkpoint nor a file with a backbone 'config'")
    backbone = _changed(foreign_node(state["config"], str(path)), features, changes)
    module = backbone.build_module()
    backbone.import_weights(module, path)
    return Loaded(path, backbone, module)


def _changed(node: BackboneNode, features: bool, changes: dict[str, Any]) -> BackboneNode:
    changes = {**(node.feature_params() if features else {}), **changes}
    return node.with_params(**changes) if changes else node


def load_backbone(
    source: str | Path, node: str | None = None, features: bool = False, **changes: Any
) -> tuple[BackboneNode, torch.nn.Module]:
    """``(node, module)`` of ``open_backbone``."""
    loaded = open_backbone(source, node, features, **changes)
    return loaded.node, loaded.module
