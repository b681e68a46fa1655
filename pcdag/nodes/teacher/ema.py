"""EMATeacher: a frozen copy of a student module that follows it by exponential moving average."""

from __future__ import annotations

import copy
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    import torch

from pcdag.graphs.device import DeviceNode, StepContext
from pcdag.graphs.node import In, Out
from pcdag.graphs.params import one_of, param
from pcdag.graphs.ports import MODEL
from pcdag.graphs.registry import register
from pcdag.graphs.schedule import Schedule, schedule


@register
class EMATeacher(DeviceNode):
    """Teacher = EMA of the student: after each optimiser step θ_t ← m·θ_t + (1 − m)·θ_s, m from a schedule.

    The copy is made once from the student's initial weights, never receives gradients and always runs in
    eval mode (drop path, attention and projection dropout off). Buffers are copied from the student.
    Default momentum m(t) = 1 − 0.003·(1 + cos(π t / T)): 0.994 at the start, 1 at the end.

    ``batch_norm`` says what the teacher's BatchNorm layers normalise with. ``running`` (default): the student's
    running statistics, as eval mode does. ``batch``: each forward's own batch statistics (BYOL's and MoCo's
    teachers), leaving the copied running statistics untouched. Pick ``batch`` for a BatchNorm backbone whose
    running statistics move slowly (SparseUNet's momentum is 0.01): early in training they are still near their
    initial (0, 1) while the activations are far smaller, and an eval-mode teacher then gives nearly the same
    feature at every point (GroupContrast put whole scenes into one group).
    """

    role = "teacher"
    version = 1
    trainable = False
    inputs = {"model": In(MODEL, doc="the student module to follow")}
    outputs = {"model": Out(MODEL, doc="the teacher copy")}

    @attrs.frozen
    class Params:
        momentum: Any = param([[0, 0.994], [1, 1.0, "cos"]], schedule(0.0, 1.0), doc="EMA momentum m over training")
        batch_norm: str = param(
            "running", one_of("running", "batch"), doc="BatchNorm statistics: the student's running ones or the batch's"
        )

    def __post_init__(self) -> None:
        self.momentum = Schedule.parse(self.params.momentum, "momentum")

    def build(self, inputs: Mapping[str, torch.nn.Module]) -> torch.nn.Module:
        teacher = copy.deepcopy(inputs["model"])
        teacher.requires_grad_(False)
        if self.params.batch_norm == "batch":
            use_batch_statistics(teacher)
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


def use_batch_statistics(module: torch.nn.Module) -> int:
    """Make every BatchNorm layer of ``module`` normalise with its input's own statistics in train and eval mode,
    never updating its running buffers (which stay in the state dict); returns how many layers changed."""
    import torch

    layers = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for layer in layers:
        layer.forward = types.MethodType(_batch_statistics_forward, layer)
    return len(layers)


def _batch_statistics_forward(self: torch.nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    self._check_input_dim(x)
    return F.batch_norm(x, None, None, self.weight, self.bias, training=True, momentum=0.0, eps=self.eps)
