"""InstanceHead: per-point votes for class-agnostic instance segmentation (offset to the centre + foreground logit).

    features.feat [M, C] → Linear(C → hidden) → GELU → Linear(hidden → 4) → predictions [M, 4]
    predictions[:, :3]   offset from the point to the centre of its instance, metres (the vote)
    predictions[:, 3]    foreground logit: does the point belong to an instance at all (wall, floor: no)

The simplest head of the offset-voting family (PointGroup and its successors): no normalisation layer, so a probe
on frozen features stays a probe. ``InstanceLoss`` trains it; ``InstanceSegmentationEval`` moves the foreground
points by their offsets and groups them into proposals (``pcdag.ops.instance_clustering``). The input
width comes from the backbone on port ``backbone`` unless ``in_channels`` is set. The predictions keep the
features' points, offsets and inverse map (``point_predictions`` gives one row per input point).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    import torch
    from torch import nn

from pcdag.graphs.batch import Encoded
from pcdag.graphs.device import DeviceNode, StepContext
from pcdag.graphs.node import FieldEffect, In, Out, effect
from pcdag.graphs.params import integer, param
from pcdag.graphs.ports import FEATURES, MODEL
from pcdag.graphs.registry import register

OUTPUTS = 4  # 3 offset components + 1 foreground logit


@register
class InstanceHead(DeviceNode):
    """Per-point offset to the instance centre (m) and foreground logit: a two-layer MLP on backbone features."""

    role = "heads"
    version = 1
    owns_module = True
    inputs = {
        "backbone": In(MODEL, required=False, doc="its out_channels give in_channels when that is 0"),
        "features": In(FEATURES, doc="per-point features (Encode of the backbone)"),
    }
    outputs = {"predictions": Out(FEATURES, doc="[M, 4]: offset to the instance centre (3, m) + foreground logit")}

    @attrs.frozen
    class Params:
        hidden: int = param(128, integer(1, 1 << 14), doc="width of the hidden layer")
        in_channels: int = param(0, integer(0, 1 << 16), doc="input feature width; 0 = the backbone's out_channels")

    def fields(self) -> FieldEffect:
        return effect()

    def build(self, inputs: Mapping[str, nn.Module]) -> nn.Module:
        from torch import nn

        from pcdag.nodes.heads.parts.width import input_width

        width = input_width(self.type_name(), self.params.in_channels, inputs)
        mlp = nn.Sequential(nn.Linear(width, self.params.hidden), nn.GELU(), nn.Linear(self.params.hidden, OUTPUTS))
        for layer in (mlp[0], mlp[2]):
            nn.init.trunc_normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)
        return mlp

    def forward(self, ctx: StepContext, module: nn.Module | None, **inputs: Any) -> dict[str, Any]:
        from pcdag.nodes.heads.parts.width import apply_head

        width = module[0].in_features if module is not None else 0  # type: ignore[index]
        return {"predictions": apply_head(self.type_name(), module, inputs["features"], width)}  # [M, 4]

    def plan_notes(self) -> list[str]:
        return [f"MLP(→ {self.params.hidden} → GELU → 4): offset to the instance centre (m) + foreground logit"]


def point_predictions(predictions: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
    """``(offset [N, 3], foreground logit [N])`` of every input point of the batch (through ``extra['inverse']``)."""
    rows = predictions.at_points()  # [N, 4]
    if rows.ndim != 2 or rows.shape[1] != OUTPUTS:
        raise ValueError(f"instance predictions must be [N, {OUTPUTS}] (InstanceHead), got {list(rows.shape)}")
    return rows[:, :3], rows[:, 3]
