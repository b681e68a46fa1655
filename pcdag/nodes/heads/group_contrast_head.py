"""GroupContrastHead: GroupContrast's projector g, point projector h, predictor h′ and weight-normalised prototypes.

One module (``parts/group_contrast_head.py``) so that one ``EMATeacher`` follows all of it (the spec's EMA over
projector and prototypes, and the teacher's h). The MLP shapes are not in the paper [I]: Linear–GELU–Linear with
``hidden`` channels, no normalisation layer (the segments of a small batch are few).
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
class GroupContrastHead(DeviceNode):
    """Projector (segments), point projector and predictor (points), and unit prototypes, as one module."""

    role = "heads"
    version = 1
    inputs = {"backbone": In(MODEL, required=False, doc="its out_channels give in_channels when that is 0")}
    outputs = {"model": Out(MODEL, doc="the head module (GroupContrastLoss uses its parts)")}

    @attrs.frozen
    class Params:
        hidden: int = param(512, integer(1, 1 << 16), doc="hidden width of the three MLPs")
        embed: int = param(128, integer(1, 1 << 14), doc="segment embedding width D (projector g, prototypes)")
        point_embed: int = param(128, integer(1, 1 << 14), doc="point embedding width D′ (h, h′)")
        prototypes: int = param(32, integer(1, 1 << 14), doc="number of prototypes n (paper ablation 16..128)")
        predictor: bool = param(True, one_of(False, True), doc="predictor h′ on the student (paper ablation)")
        in_channels: int = param(0, integer(0, 1 << 16), doc="input feature width; 0 = the backbone's out_channels")

    def fields(self) -> FieldEffect:
        return effect()

    def build(self, inputs: Mapping[str, nn.Module]) -> nn.Module:
        from pcdag.nodes.heads.parts.group_contrast_head import GroupContrastHeadModule
        from pcdag.nodes.heads.parts.width import input_width

        p = self.params
        width = input_width(self.type_name(), p.in_channels, inputs)
        return GroupContrastHeadModule(width, p.hidden, p.embed, p.point_embed, p.prototypes, p.predictor)

    def forward(self, ctx: StepContext, module: nn.Module | None, **inputs: Any) -> dict[str, Any]:
        return {"model": module}
