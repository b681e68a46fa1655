"""NoiseConsistency: the student's features on masked views should equal the teacher's on noise-perturbed views.

Student: the masked global views after up-cast. Teacher: the same global views with coordinate noise (unmasked,
features unchanged, ``CoordinateNoise``) through the EMA teacher, no gradient, after up-cast. Both have the same
samples in the same order. Per view v, every student point is paired with its nearest teacher point of view v on
``origin_coord`` (pooled pre-augmentation coordinates) when the distance is below the radius:

    paper:      d < radius             (0.32 m)
    reference:  d < radius²            (0.1024 m: the released code reads its kNN distance as d²)

Per pair, with both features L2-normalised in float32: ‖ŝ − t̂‖² = 2 − 2 cos(s, t). The loss is the mean over
the pairs of each view, then over the views that have a pair; 0 (connected to the graph) when nothing matches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    import torch

from pcdag.graphs.batch import Encoded
from pcdag.graphs.device import DeviceNode, LossValue, StepContext
from pcdag.graphs.memory import FeatureRows, NodeMemory
from pcdag.graphs.node import FieldEffect, In, Out, effect
from pcdag.graphs.params import in_range, one_of, param
from pcdag.graphs.ports import FEATURES, LOSS
from pcdag.graphs.registry import register
from pcdag.graphs.schedule import Schedule, schedule


def noise_consistency(
    student: Encoded, teacher: Encoded, radius: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss (scalar, float32; no gradient to ``teacher``) and diagnostics ``pairs``, ``matched``, ``cos``."""
    import torch
    import torch.nn.functional as F

    from pcdag.ops.neighbours import nearest_between
    from pcdag.ops.segment import mean_over_views

    views = torch.arange(student.n_samples, device=student.offset.device)  # [B]
    qi, ti, _ = nearest_between(
        student.origin_coord, student.offset, teacher.origin_coord, teacher.offset, views[:, None].repeat(1, 2),
        radius,
    )  # fmt: skip
    s_hat = F.normalize(student.feat.float()[qi], dim=1)  # [R, C]
    with torch.no_grad():
        t_hat = F.normalize(teacher.feat.detach().float()[ti], dim=1)  # [R, C]
    per_pair = ((s_hat - t_hat) ** 2).sum(dim=1)  # [R] = 2 - 2 cos
    loss = mean_over_views(per_pair, student.batch[qi], student.n_samples)
    stats = {
        "pairs": per_pair.new_tensor(float(len(qi))),
        "matched": per_pair.new_tensor(len(qi) / max(1, len(student))),
        "cos": (1.0 - 0.5 * per_pair.detach()).mean() if len(qi) else per_pair.new_tensor(float("nan")),
    }
    return loss, stats


def _check(student: Encoded, teacher: Encoded) -> None:
    for side, enc in (("student", student), ("teacher", teacher)):
        if enc.origin_coord is None:
            raise ValueError(f"NoiseConsistency: {side} features carry no origin_coord to match points on")
    if student.n_samples != teacher.n_samples:
        raise ValueError(
            f"NoiseConsistency: student has {student.n_samples} views, teacher {teacher.n_samples}; feed both "
            "the same global views (masked for the student, noise-perturbed for the teacher)"
        )


@register
class NoiseConsistency(DeviceNode):
    """Pull the student's masked-view features toward the teacher's features on noise-perturbed views."""

    role = "losses"
    version = 1
    inputs = {
        "student": In(FEATURES, doc="student on the masked global views, after up-cast"),
        "teacher": In(FEATURES, doc="teacher on the noise-perturbed global views, after up-cast"),
    }
    outputs = {"loss": Out(LOSS)}

    @attrs.frozen
    class Params:
        radius: float = param(0.32, in_range(0.0, None, lo_open=True), unit="m", doc="matching radius")
        semantics: str = param("paper", one_of("paper", "reference"), doc="reference: radius compared as radius²")
        weight: Any = param(0.05, schedule(0.0, None), doc="loss weight μ")

    def __post_init__(self) -> None:
        self.weight_schedule = Schedule.parse(self.params.weight, "weight")

    def fields(self) -> FieldEffect:
        return effect()  # works on device batches, not on point-cloud fields

    def forward(self, ctx: StepContext, module: torch.nn.Module | None, **inputs: Any) -> dict[str, Any]:
        import torch

        student, teacher = inputs["student"], inputs["teacher"]
        _check(student, teacher)
        r = self.params.radius
        with torch.autocast(student.feat.device.type, enabled=False):
            loss, stats = noise_consistency(student, teacher, r if self.params.semantics == "paper" else r * r)
        return {"loss": LossValue(loss, self.weight_schedule(ctx.progress), dict(stats))}

    def memory(self, module: torch.nn.Module | None, inputs: Mapping[str, Any]) -> NodeMemory | None:
        """Per student row: the matched teacher row and the normalised pair, float32 (~3 · 4·C bytes)."""
        student = inputs["student"]
        if not isinstance(student, FeatureRows):
            return None
        return NodeMemory(saved=student.points * student.channels * 12)
