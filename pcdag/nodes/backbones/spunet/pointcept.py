"""Pointcept ``SpUNet-v1m1`` checkpoints: the module's parameter names are Pointcept's, so only the file changes.

State-dict names (``{s}`` level 0..3, ``{i}`` block, BN tensors ``weight|bias|running_mean|running_var|
num_batches_tracked``; convolution weights ``[out, k, k, k, in]`` as spconv 2.x stores them):

    conv_input.0.weight                 5x5x5 stem          conv_input.1.*          its BN
    down.{s}.0.weight                   2x2x2 stride 2      down.{s}.1.*            its BN
    enc.{s}.block{i}.conv1.weight       3x3x3               enc.{s}.block{i}.bn1.*, conv2.weight, bn2.*
    enc|dec.{s}.block{i}.proj.0.weight  1x1x1 (width change) proj.1.*                its BN
    up.{s}.0.weight                     2x2x2 inverse       up.{s}.1.*              its BN
    dec.{s}.block{i}.conv1.weight ...   as enc

``mask_token`` ([1, in_channels]) is pcdag's, written only by a module that has one (with ``mask_token: true`` in
the config); Pointcept's non-strict loading ignores it. ``final.*`` (a segmentor's classifier) is not the
backbone's and is skipped on import. Files: ``{"config", "state_dict"}`` (what ``export_backbone`` writes), a bare
state dict, or a Pointcept training checkpoint (``module.`` and a ``...backbone.`` prefix are taken off).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pcdag.atomic import atomic_write_bytes
from pcdag.graphs.backbone import WeightsError, read_weights_file, weight_problems
from pcdag.nodes.backbones.spunet.config import PRESETS

TYPE = "SpUNet-v1m1"
ANCHOR = "conv_input.0.weight"
_DEFAULTS = PRESETS["34c"]  # SpUNet-v1m1's own keyword defaults


def pointcept_config(config: Any) -> dict[str, Any]:
    """Keyword arguments of Pointcept's ``SpUNet-v1m1`` (no classifier) for a ``SparseUNetConfig``."""
    out = dict(
        type=TYPE,
        in_channels=config.in_channels,
        num_classes=0,
        base_channels=config.base_channels,
        channels=list(config.channels),
        layers=list(config.layers),
        enc_mode=False,
    )
    if config.mask_token:
        out["mask_token"] = True  # pcdag's extension
    return out


def params_from_pointcept(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """SparseUNet parameters rebuilding a ``SpUNet-v1m1`` config, or None for another type."""
    if config.get("type", TYPE if {"channels", "layers"} <= set(config) else None) != TYPE:
        return None
    arch = dict(
        base_channels=int(config.get("base_channels", _DEFAULTS["base_channels"])),
        channels=[int(c) for c in config.get("channels", _DEFAULTS["channels"])],
        layers=[int(n) for n in config.get("layers", _DEFAULTS["layers"])],
    )
    preset = next(
        (k for k, v in PRESETS.items() if {**v, "channels": list(v["channels"]), "layers": list(v["layers"])} == arch),
        None,
    )
    params = {"preset": preset} if preset else {"preset": "34c", **arch}
    return {
        **params,
        "in_channels": int(config.get("in_channels", 9)),
        "mask_token": bool(config.get("mask_token", False)),
    }


def export_backbone(module: torch.nn.Module, path: Path) -> None:
    """Write ``{"config": SpUNet-v1m1 keyword arguments, "state_dict"}`` (atomic)."""
    state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"config": pointcept_config(module.config), "state_dict": state}, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def import_backbone(module: torch.nn.Module, path: Path, node: str, architecture: Mapping[str, Any]) -> None:
    """Load ``path`` into ``module``; ``WeightsError`` naming every differing architecture field (files with a
    config) and every missing, unexpected or mis-shaped tensor by its Pointcept name."""
    where = f"{path} for {node}"
    state, config = read_weights_file(path, where)
    if config is not None:
        theirs = params_from_pointcept(config)
        if theirs is None:
            raise WeightsError(f"{where}: the file holds a {config.get('type')!r} backbone, not {TYPE}")
        arch = {**{k: list(v) if isinstance(v, tuple) else v for k, v in PRESETS[theirs["preset"]].items()}, **theirs}
        diffs = [f"{k}: file {arch.get(k)!r} vs node {v!r}" for k, v in architecture.items() if arch.get(k) != v]
        if diffs:
            raise WeightsError(f"{where}: the architecture differs: " + "; ".join(diffs))
    state = _strip(state, where)
    expected = module.state_dict()
    problems = weight_problems(expected, state)
    if problems:
        raise WeightsError(f"{where}: the weights do not fit: " + "; ".join(problems))
    module.load_state_dict(state)


def _strip(state: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """The backbone's tensors under their own names: ``module.`` and the prefix before ``conv_input`` taken off,
    a classifier (``final.*``) left out."""
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    found = sorted(k[: -len(ANCHOR)] for k in state if k.endswith(ANCHOR))
    if len(found) > 1:
        raise WeightsError(f"{where}: the file holds several backbones ({', '.join(found)})")
    prefix = found[0] if found else ""
    out = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return {k: v for k, v in out.items() if not k.startswith("final.")}
