"""The backbone protocol: what the runtime needs of a backbone to train, evaluate, export and extract with it.

A backbone is a device node (``BackboneNode``) that owns a module mapping a ``PointBatch`` to per-point
features (``Encoded``) and exposes it on its ``model`` port. The runtime never names a backbone type; for any
node of this class it can

    rebuild the trained module of a checkpoint      ``with_params(...)``, ``build_module()``, ``load_trained()``
    check two backbones can share weights           ``architecture()``: the fields that must be equal
    read / write a foreign checkpoint (Pointcept)   ``params_from_foreign()``, ``import_weights()``,
                                                    ``export_weights()``
    extract per-point features at full resolution   ``feature_params()``
    estimate the step's memory                      the module's ``memory(points, grad)`` (``BackboneModule``)

Every backbone node has the parameters ``weights`` (a path, ``param(..., path="in-file")``: initial weights from
a foreign checkpoint or a ``pcdag export`` file) and ``frozen`` (no gradient: linear probing). ``pcdag eval
--checkpoint`` installs a trained backbone by setting ``weights``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import attrs

from pcdag.graphs.device import DeviceNode, StepContext
from pcdag.graphs.memory import NodeMemory
from pcdag.graphs.node import Node, Out
from pcdag.graphs.ports import MODEL

if TYPE_CHECKING:
    import torch

    from pcdag.graphs.batch import Encoded, PointBatch


@runtime_checkable
class BackboneModule(Protocol):
    """The module a backbone node builds.

    ``out_channels``: width of the features it returns (heads size themselves on it). ``memory``: the bytes one
    forward over ``points`` input points keeps for the backward (``grad``) or holds transiently, and the size of
    its output, as ``(NodeMemory, output rows, output channels)``; None when not modelled.
    """

    out_channels: int

    def __call__(self, points: PointBatch) -> Encoded: ...

    def memory(self, points: float, grad: bool) -> tuple[NodeMemory, float, int] | None: ...


class WeightsError(ValueError):
    """Weights that do not fit a backbone: the message names the file, the node and every difference."""


def read_weights_file(path: Path, where: str) -> tuple[dict[str, Any], Mapping[str, Any] | None]:
    """``(state dict, config or None)`` of a weights file: ``{"config", "state_dict"}``, ``{"state_dict", ...}``
    or a bare state dict of tensors, read with ``torch.load(weights_only=True)``; ``FileNotFoundError`` when
    there is no file, ``WeightsError`` when it is none of these (both naming ``where``)."""
    import torch

    if not Path(path).is_file():
        raise FileNotFoundError(f"{where}: no such file")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{where}: not a state dict (nor a dict with 'state_dict') of tensors")
    config = checkpoint.get("config") if isinstance(checkpoint, dict) else None
    return state, config if isinstance(config, Mapping) else None


def weight_problems(
    expected: Mapping[str, Any], given: Mapping[str, Any], name: Any = str, shown: int = 8
) -> list[str]:
    """What keeps the tensors ``given`` (a file's, by our names) from loading into a module whose state dict is
    ``expected``: missing, unexpected and mis-shaped names, each list cut at ``shown`` names. ``name`` turns one of
    our names into the one the file uses, for the message. Empty: they fit."""

    def listing(names: list[str]) -> str:
        return ", ".join(names[:shown]) + (f" ... ({len(names)} in all)" if len(names) > shown else "")

    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = [
        f"{name(k)} {list(given[k].shape)} vs {list(expected[k].shape)}"
        for k in sorted(set(expected) & set(given))
        if tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    out = []
    if missing:
        hint = " (build with mask_token off if the file has none)" if any("mask_token" in k for k in missing) else ""
        out.append(f"missing {listing([name(k) for k in missing])}{hint}")
    if unexpected:
        out.append(f"unexpected {listing([name(k) for k in unexpected])}")
    if shapes:
        out.append(f"shape mismatch (file vs model) {listing(shapes)}")
    return out


class BackboneNode(DeviceNode):
    """Base class of backbone nodes. Subclasses set ``Params`` (with ``weights`` and ``frozen``), ``foreign`` and
    implement ``build_module``, ``architecture``, ``import_weights``, ``export_weights`` and
    ``params_from_foreign``."""

    role = "backbones"
    inputs = {}
    outputs = {"model": Out(MODEL, "the backbone module: PointBatch -> Encoded")}
    foreign: ClassVar[str] = ""  # the foreign checkpoint format, for messages (e.g. "Pointcept SpUNet-v1m1")

    @property
    def trainable(self) -> bool:  # type: ignore[override]
        return not self.params.frozen

    # -- building ---------------------------------------------------------------------------------------------

    def build_module(self) -> torch.nn.Module:
        """A freshly initialised module of this architecture (no initial weights read)."""
        raise NotImplementedError(f"{self.type_name()} does not implement build_module()")

    def build(self, inputs: Mapping[str, torch.nn.Module]) -> torch.nn.Module:
        module = self.build_module()
        if self.params.weights is not None:
            self.import_weights(module, Path(self.params.weights))
        return module

    def forward(self, ctx: StepContext, module: torch.nn.Module | None, **inputs: Any) -> dict[str, Any]:
        if module is None:
            raise ValueError(f"{self.type_name()}: forward() needs the module returned by build()")
        return {"model": module}

    def with_params(self, **changes: Any) -> BackboneNode:
        """This node with some parameters changed (validated as any parameter is)."""
        unknown = sorted(set(changes) - set(attrs.fields_dict(type(self.params))))
        if unknown:
            raise ValueError(f"{self.type_name()} has no parameter {', '.join(unknown)}")
        return type(self).from_built(attrs.evolve(self.params, **changes), {**self.given, **changes})

    # -- weights ----------------------------------------------------------------------------------------------

    def architecture(self) -> dict[str, Any]:
        """The fields two backbones must agree on to share weights, as plain data (lists, numbers, strings)."""
        raise NotImplementedError(f"{self.type_name()} does not implement architecture()")

    def architecture_differences(self, other: Node, names: tuple[str, str] = ("", "")) -> list[str]:
        """``"field: other's value vs this node's"`` for every differing field; the type first if it differs.
        ``names`` label the two values (e.g. ``("checkpoint", "graph")``: ``"depths: checkpoint [2] vs graph [3]"``)."""
        theirs_label, ours_label = (f"{n} " if n else "" for n in names)
        if type(other) is not type(self):
            return [f"type: {theirs_label}{other.type_name()} vs {ours_label}{self.type_name()}"]
        ours, theirs = self.architecture(), other.architecture()  # type: ignore[attr-defined]
        return [
            f"{k}: {theirs_label}{theirs.get(k)!r} vs {ours_label}{ours.get(k)!r}"
            for k in ours
            if ours.get(k) != theirs.get(k)
        ]

    def load_trained(self, module: torch.nn.Module, weights: Mapping[str, torch.Tensor], where: str) -> None:
        """Install weights saved from a module of this node type (a pcdag training checkpoint); the default is a
        strict ``load_state_dict`` whose error names ``where`` and the first differing keys."""
        missing, unexpected = module.load_state_dict(dict(weights), strict=False)
        bad = [f"missing {k}" for k in missing] + [f"unexpected {k}" for k in unexpected]
        if bad:
            raise WeightsError(f"{where}: the weights do not fit {self.type_name()}: {', '.join(bad[:8])}")

    def import_weights(self, module: torch.nn.Module, path: Path) -> None:
        """Load a foreign checkpoint or a ``pcdag export`` file into ``module``; ``WeightsError`` naming every
        missing, unexpected or mis-shaped tensor."""
        raise NotImplementedError(f"{self.type_name()} does not implement import_weights()")

    def export_weights(self, module: torch.nn.Module, path: Path) -> None:
        """Write ``module`` as a foreign checkpoint ``{"config", "state_dict"}`` (atomically)."""
        raise NotImplementedError(f"{self.type_name()} does not implement export_weights()")

    @classmethod
    def params_from_foreign(cls, config: Mapping[str, Any]) -> dict[str, Any] | None:
        """Parameters of this node type that rebuild the architecture of a foreign checkpoint's ``config``
        (what ``export_weights`` writes), or None when ``config`` is not of this type; ``WeightsError`` naming
        what the parameters cannot express when it is of this type but not buildable. The runtime asks every
        registered backbone type and uses the one that claims the file."""
        return None

    def feature_params(self) -> dict[str, Any]:
        """Parameter changes under which the module returns features for every input point at full resolution
        (``pcdag extract``); none by default."""
        return {}
