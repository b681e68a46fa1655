"""ClusteringHead: the projection head whose logits are cosines between point embeddings and unit prototypes.

    feat [M, C] → Linear(C→hidden) → GELU → Linear(hidden→embed) → L2-normalise → z [M, embed]
    logits = z · (W / ‖W‖_row)ᵀ                                     [M, prototypes], each in [-1, 1]

The prototype layer is a weight-normalised linear map without bias whose magnitude is fixed at 1. Here it is a
plain ``prototype.weight`` ``[prototypes, embed]`` whose rows are normalised in ``forward``, so the state dict
holds one tensor per layer and scaling a row of the parameter changes nothing.

Pointcept's Sonata head (``OnlineCluster``) uses torch's weight norm with the magnitude frozen at 1. Its state
dict maps onto this module as (``pointcept_state`` does it):

    mlp.0.weight / mlp.0.bias, mlp.2.weight / mlp.2.bias           same names
    prototype.parametrizations.weight.original1  (torch ≥ 2.1)    → prototype.weight   (the direction v)
    prototype.weight_v                           (older torch)    → prototype.weight
    prototype.parametrizations.weight.original0 / prototype.weight_g   (the magnitude g, [K, 1], all 1) → dropped

``checkpoint``: in training with grad enabled the MLP runs under activation checkpointing: it keeps its float32
input [M, C] instead of its bf16 input and two hidden activations [M, hidden] (4·hidden bytes a row, 16 kB at
hidden 4096), and runs once more in the backward. The teacher's copy (eval, no grad) runs plainly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from torch import nn

from pcdag.graphs.device import DeviceNode, StepContext
from pcdag.graphs.node import FieldEffect, In, Out, effect
from pcdag.graphs.params import integer, one_of, param
from pcdag.graphs.ports import MODEL
from pcdag.graphs.registry import register


@register
class ClusteringHead(DeviceNode):
    """Projection head for clustering losses: MLP, L2-normalised embedding, cosines to unit prototypes."""

    role = "heads"
    version = 1
    inputs = {"backbone": In(MODEL, required=False, doc="its out_channels give in_channels when that is 0")}
    outputs = {"model": Out(MODEL, doc="the head module: feat [M, C] -> logits [M, prototypes]")}

    @attrs.frozen
    class Params:
        hidden: int = param(4096, integer(1, 1 << 16), doc="MLP hidden width")
        embed: int = param(256, integer(1, 1 << 14), doc="embedding width (L2-normalised)")
        prototypes: int = param(4096, integer(1, 1 << 17), doc="number of unit-norm prototypes K")
        in_channels: int = param(0, integer(0, 1 << 16), doc="input feature width; 0 = the backbone's out_channels")
        checkpoint: bool = param(
            False, one_of(False, True), doc="recompute the MLP in the backward (less memory)", cache=False
        )

    def fields(self) -> FieldEffect:
        return effect()

    def build(self, inputs: Mapping[str, nn.Module]) -> nn.Module:
        from pcdag.nodes.heads.parts.clustering_module import ClusteringHeadModule
        from pcdag.nodes.heads.parts.width import input_width

        p = self.params
        return ClusteringHeadModule(
            input_width(self.type_name(), p.in_channels, inputs), p.hidden, p.embed, p.prototypes, p.checkpoint
        )

    def forward(self, ctx: StepContext, module: nn.Module | None, **inputs: Any) -> dict[str, Any]:
        return {"model": module}
