"""SegmentationHead: one linear layer from per-point backbone features to class logits.

    features.feat [M, C] → Linear(C → classes) → logits [M, classes]

The linear probe of spec E (a frozen encoder up-cast to level 0: 1232 channels for Base, 1728 for Large) and the
classifier of full fine-tuning (the decoder's 64 channels). The input width comes from the backbone on port
``backbone`` unless ``in_channels`` is set. The logits keep the features' points, offsets and inverse map.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from torch import nn

from pcdag.graphs.device import DeviceNode, StepContext
from pcdag.graphs.node import FieldEffect, In, Out, effect
from pcdag.graphs.params import integer, param
from pcdag.graphs.ports import FEATURES, MODEL
from pcdag.graphs.registry import register


@register
class SegmentationHead(DeviceNode):
    """Per-point class logits: one linear layer on the backbone's features (linear probe or fine-tune head)."""

    role = "heads"
    version = 1
    owns_module = True
    inputs = {
        "backbone": In(MODEL, required=False, doc="its out_channels give in_channels when that is 0"),
        "features": In(FEATURES, doc="per-point features (Encode of the backbone)"),
    }
    outputs = {"logits": Out(FEATURES, doc="per-point class logits, same points as the features")}

    @attrs.frozen
    class Params:
        classes: int = param(20, integer(1, 1 << 14), doc="number of classes (ScanNet-20: 20)")
        in_channels: int = param(0, integer(0, 1 << 16), doc="input feature width; 0 = the backbone's out_channels")

    def fields(self) -> FieldEffect:
        return effect()

    def build(self, inputs: Mapping[str, nn.Module]) -> nn.Module:
        from torch import nn

        from pcdag.nodes.heads.parts.width import input_width

        width = input_width(self.type_name(), self.params.in_channels, inputs)
        layer = nn.Linear(width, self.params.classes)
        nn.init.trunc_normal_(layer.weight, std=0.02)
        nn.init.zeros_(layer.bias)
        return layer

    def forward(self, ctx: StepContext, module: nn.Module | None, **inputs: Any) -> dict[str, Any]:
        from pcdag.nodes.heads.parts.width import apply_head

        width = getattr(module, "in_features", 0)
        return {"logits": apply_head(self.type_name(), module, inputs["features"], width)}  # [M, classes]

    def plan_notes(self) -> list[str]:
        return [f"Linear(→ {self.params.classes}) on the backbone's features"]
