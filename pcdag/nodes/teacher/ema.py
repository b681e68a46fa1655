"""EMATeacher: a frozen copy of a student module that follows it by exponential moving average."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    import torch

from pcdag.graphs.device import DeviceNode, StepContext
from pcdag.graphs.node import In, Out
from pcdag.graphs.params import param
from pcdag.graphs.ports import MODEL
from pcdag.graphs.registry import register
from pcdag.graphs.schedule import Schedule, schedule


@register
class EMATeacher(DeviceNode):
    """Teacher = EMA of the student: after each optimiser step θ_t ← m·θ_t + (1 − m)·θ_s, m from a schedule.

    The copy is made once from the student's initial weights, never receives gradients and always runs in
    eval mode (drop path, attention and projection dropout off). Buffers are copied from the student.
    Default momentum m(t) = 1 − 0.003·(1 + cos(π t / T)): 0.994 at the start, 1 at the end.
    """

    role = "teacher"
    version = 1
    trainable = False
    inputs = {"model": In(MODEL, doc="the student module to follow")}
    outputs = {"model": Out(MODEL, doc="the teacher copy")}

    @attrs.frozen
    class Params:
        momentum: Any = param([[0, 0.994], [1, 1.0, "cos"]], schedule(0.0, 1.0), doc="EMA momentum m over training")

    def __post_init__(self) -> None:
        self.momentum = Schedule.parse(self.params.momentum, "momentum")

    def build(self, inputs: Mapping[str, torch.nn.Module]) -> torch.nn.Module:
        teacher = copy.deepcopy(inputs["model"])
        teacher.requires_grad_(False)
        return teacher.eval()

    def forward(self, ctx: StepContext, module: torch.nn.Module | None, **inputs: Any) -> dict[str, Any]:
        return {"model": module}

    def after_step(self, ctx: StepContext, module: torch.nn.Module | None, inputs: Mapping[str, Any]) -> None:
        m = self.momentum(ctx.progress)
        ctx.log("momentum", m)
        ema_update(module, inputs["model"], m)


def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, momentum: float) -> None:
    """``teacher ← momentum·teacher + (1 − momentum)·student`` over parameters; buffers copied."""
    import torch

    with torch.no_grad():
        t_params, s_params = list(teacher.parameters()), list(student.parameters())
        if len(t_params) != len(s_params):
            raise ValueError(f"teacher has {len(t_params)} parameter tensors, student {len(s_params)}: not a copy")
        if momentum < 1.0:
            torch._foreach_lerp_(t_params, [p.detach() for p in s_params], 1.0 - momentum)
        for tb, sb in zip(teacher.buffers(), student.buffers(), strict=True):
            tb.copy_(sb)
