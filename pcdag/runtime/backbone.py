"""Backbones out of checkpoints: which file a run means, which node of its graph is the backbone, its module.

Two kinds of file hold a PointTransformerV3:

- a pcdag training checkpoint (``RUN/checkpoints/step-*.pt``, or the run directory: its newest checkpoint). It
  carries its resolved graph, so the backbone is rebuilt exactly as trained. The backbone is the node named
  ``node``, or else the one trainable ``PointTransformerV3`` of the graph (the student);
- a Pointcept / Sonata checkpoint or a ``pcdag export`` file (``{"config", "state_dict"}``): the architecture
  comes from its ``config`` (Pointcept's keyword arguments).

``load_backbone`` returns the module with its trained weights, optionally re-built in another mode (an encoder
trained with ``upcast_level: 2`` up-casts to level 0 for feature extraction: up-casting has no weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import torch

from pcdag.compiler import compile_graph
from pcdag.graphs.yamlio import loads_graph
from pcdag.nodes.backbones.ptv3.model import PointTransformerV3Module, PTv3Config
from pcdag.nodes.backbones.ptv3.pointcept import import_backbone
from pcdag.runtime import checkpoint as ckpt

BACKBONE_TYPE = "PointTransformerV3"


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


def backbone_node(plan: Any, node: str | None, where: str) -> Any:
    """The ``Step`` of the backbone node: ``node`` if given, else the graph's only trainable PointTransformerV3."""
    steps = plan.device.steps if plan.device is not None else ()
    if node is not None:
        found = [s for s in steps if s.name == node]
        if not found:
            raise ValueError(
                f"{where} has no device node {node!r}; its device nodes: {', '.join(s.name for s in steps)}"
            )
        return found[0]
    backbones = [s for s in steps if type(s.node).__name__ == BACKBONE_TYPE and s.name in plan.device.trainable]
    if len(backbones) != 1:
        names = ", ".join(s.name for s in backbones) or "none"
        raise ValueError(
            f"{where}: cannot tell which backbone to use (trainable {BACKBONE_TYPE} nodes: {names}); name one"
        )
    return backbones[0]


def config_from_pointcept(config: dict[str, Any], grid_size: float = 0.02) -> PTv3Config:
    """A ``PTv3Config`` from Pointcept's ``PointTransformerV3`` keyword arguments (as ``export_backbone`` writes)."""
    try:
        return PTv3Config(
            enc_depths=config["enc_depths"],
            enc_channels=config["enc_channels"],
            enc_heads=config["enc_num_head"],
            enc_patch_size=config["enc_patch_size"],
            dec_depths=config["dec_depths"],
            dec_channels=config["dec_channels"],
            dec_heads=config["dec_num_head"],
            dec_patch_size=config["dec_patch_size"],
            in_channels=config.get("in_channels", 9),
            mlp_ratio=config.get("mlp_ratio", 4.0),
            drop_path=config.get("drop_path", 0.3),
            orders=tuple(config.get("order", ("z", "z-trans", "hilbert", "hilbert-trans"))),
            shuffle_orders=config.get("shuffle_orders", True),
            mask_token=config.get("mask_token", False),
            mode="encoder" if config.get("enc_mode", True) else "encoder-decoder",
            grid_size=grid_size,
        )
    except KeyError as exc:
        raise ValueError(
            f"the checkpoint's config has no {exc.args[0]!r} (Pointcept PointTransformerV3 arguments)"
        ) from None


def load_backbone(source: str | Path, node: str | None = None, **changes: Any) -> PointTransformerV3Module:
    """The trained backbone of ``source`` (see the module docstring); ``changes`` re-configure it (e.g.
    ``mode="encoder", upcast_level=0``) where no weight depends on them."""
    path = checkpoint_file(source)
    state = ckpt.load(path) if path.suffix == ".pt" else torch.load(path, map_location="cpu", weights_only=True)
    if is_training_checkpoint(state):
        plan = compile_graph(loads_graph(state["graph"], f"{path}:graph"), check_files=False)  # config only
        step = backbone_node(plan, node, f"checkpoint {path}")
        config = attrs.evolve(step.node.config, **changes)
        prefix = f"{step.name}."
        weights = {k[len(prefix) :]: v for k, v in state["modules"].items() if k.startswith(prefix)}
        if not weights:
            raise ValueError(f"checkpoint {path} holds no weights of node {step.name!r}")
        module = PointTransformerV3Module(config)
        decoder = [k for k in module.state_dict() if k.startswith("decoder.")]
        missing, unexpected = module.load_state_dict(weights, strict=False)
        bad = [k for k in missing if k not in decoder] + [k for k in unexpected if not k.startswith("decoder.")]
        if bad:
            raise ValueError(f"checkpoint {path}, node {step.name!r}: weights do not fit: {', '.join(bad[:8])}")
        return module
    if not isinstance(state, dict) or "config" not in state:
        raise ValueError(f"{path}: neither a pcdag training checkpoint nor a file with a Pointcept 'config'")
    module = PointTransformerV3Module(attrs.evolve(config_from_pointcept(state["config"]), **changes))
    import_backbone(module, path)
    return module
