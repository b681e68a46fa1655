"""ClusteringLoss: cross-entropy of student prototype scores against Sinkhorn-balanced teacher assignments.

Each student view is paired with one teacher view of the same scene (``pairing``); every student point takes its
nearest teacher point of the paired view on ``origin_coord``, kept within ``radius``. Per matched point

    ℓ = −Σ_k q_k log softmax(s / τ_s)_k,    s = head(student feat),
    q = SinkhornKnopp(teacher_head(teacher feat at the matched point) / τ_t)   (no gradient, float32)

averaged per student view, then over the views that have matches. One Sinkhorn runs over all matched points
of the batch (all ranks together). Sonata / LAM3C use three of these:

    mask       pairing same   student masked global views ← teacher global views          weight 2/8
    roll-mask  pairing other  student masked global view v ← teacher's other global view  weight 2/8
    unmask     pairing first  student local views ← teacher's first (major) global view   weight 4/8

``semantics``: ``paper`` keeps pairs with d < radius (Sonata's rule); ``reference`` keeps d < radius², as the
released LAM3C code does (its kNN returns d, its loss code treats it as d²): radius 0.32 → d < 0.1024 m.
Unlike the reference, views without a single match do not enter the mean as zeros.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    import torch
    from torch import nn

from pcdag.graphs.batch import Encoded
from pcdag.graphs.device import DeviceNode, LossValue, StepContext
from pcdag.graphs.memory import FeatureRows, NodeMemory
from pcdag.graphs.node import FieldEffect, In, Out, effect
from pcdag.graphs.params import in_range, integer, one_of, param
from pcdag.graphs.ports import FEATURES, LOSS, MODEL
from pcdag.graphs.registry import register
from pcdag.graphs.schedule import Schedule, schedule

PAIRINGS = ("same", "other", "first")


def view_pairs(student: Encoded, teacher: Encoded, pairing: str) -> torch.Tensor:
    """``[P, 2]`` (student sample, teacher sample) for every student view; raises ValueError naming the ports."""
    import torch

    n_s, n_t = student.per_scene, teacher.per_scene
    for port, enc in (("student", student), ("teacher", teacher)):
        if enc.per_scene < 1 or enc.n_samples % enc.per_scene:
            raise ValueError(
                f"port {port!r}: {enc.n_samples} {enc.kind} views are not a whole number of scenes "
                f"of {enc.per_scene} views"
            )
    scenes = student.n_samples // n_s
    if teacher.n_samples // n_t != scenes:
        raise ValueError(
            f"ports 'student' and 'teacher' disagree on the number of scenes: {scenes} ({student.n_samples} "
            f"{student.kind} views, {n_s} per scene) vs {teacher.n_samples // n_t} ({teacher.n_samples} "
            f"{teacher.kind} views, {n_t} per scene)"
        )
    if pairing in ("same", "other") and n_s != n_t:
        raise ValueError(
            f"pairing {pairing!r} needs as many views per scene on port 'student' ({n_s} {student.kind}) as on "
            f"port 'teacher' ({n_t} {teacher.kind}); use pairing 'first' for local student views"
        )
    if pairing == "other" and n_t < 2:
        raise ValueError(f"pairing 'other' needs ≥ 2 views per scene on port 'teacher', it has {n_t}")
    v = torch.arange(n_s)  # [n_s] student view within its scene
    target = {"same": v, "other": (v + 1) % n_t, "first": torch.zeros_like(v)}[pairing]  # [n_s]
    s = torch.arange(scenes).unsqueeze(1)  # [S, 1]
    return torch.stack([(s * n_s + v).reshape(-1), (s * n_t + target).reshape(-1)], dim=1)  # [S * n_s, 2]


@register
class ClusteringLoss(DeviceNode):
    """Cross-entropy between student prototype scores and Sinkhorn-balanced teacher targets at matched points."""

    role = "losses"
    version = 1
    trainable = False
    inputs = {
        "student": In(FEATURES, doc="student features (masked global or local views)"),
        "teacher": In(FEATURES, doc="teacher features (unmasked global views)"),
        "head": In(MODEL, doc="student clustering head"),
        "teacher_head": In(MODEL, doc="teacher clustering head (no gradient)"),
    }
    outputs = {"loss": Out(LOSS)}

    @attrs.frozen
    class Params:
        pairing: str = param("same", one_of(*PAIRINGS), doc="teacher view of student view v: v, the other, the 1st")
        radius: float = param(0.32, in_range(0.0, 100.0, lo_open=True), unit="m", doc="matching radius")
        semantics: str = param("paper", one_of("paper", "reference"), doc="reference: d < radius² (LAM3C code)")
        student_temperature: float = param(0.1, in_range(0.0, 100.0, lo_open=True), doc="τ_s")
        teacher_temperature: Any = param([[0, 0.04], [0.05, 0.07]], schedule(1e-6, 100.0), doc="τ_t schedule")
        sinkhorn_iterations: int = param(3, integer(1, 1000))
        weight: Any = param(0.25, schedule(0.0, None), doc="loss weight schedule")

    def __post_init__(self) -> None:
        self._t_teacher = Schedule.parse(self.params.teacher_temperature, "teacher_temperature")
        self._weight = Schedule.parse(self.params.weight, "weight")

    def fields(self) -> FieldEffect:
        return effect()

    @property
    def match_radius(self) -> float:
        """The distance pairs must stay under: radius (paper) or radius² (reference)."""
        r = self.params.radius
        return r * r if self.params.semantics == "reference" else r

    def build(self, inputs: Mapping[str, nn.Module]) -> nn.Module:
        from pcdag.ops.sinkhorn import SinkhornKnopp

        return SinkhornKnopp(self.params.sinkhorn_iterations)

    def forward(self, ctx: StepContext, module: nn.Module | None, **inputs: Any) -> dict[str, Any]:
        import torch

        from pcdag.ops.segment import mean_over_views
        from pcdag.ops.soft_cross_entropy import soft_cross_entropy

        student, teacher = inputs["student"], inputs["teacher"]
        head, teacher_head = inputs["head"], inputs["teacher_head"]
        qi, ti = self._match(student, teacher)  # [P], [P]
        t_teacher = self._t_teacher(ctx.progress)
        s_logits = head(student.feat[qi])  # [P, K], the autocast dtype (float32 inside the loss)
        with torch.no_grad():
            rows, where = torch.unique(ti, return_inverse=True)  # evaluate each teacher point once
            t_logits = teacher_head(teacher.feat[rows]).float()[where]  # [P, K]
            targets = module(t_logits, t_teacher)  # [P, K]; collective: every rank calls it, even with P = 0
        self._check_finite(ctx, t_logits, targets)
        ctx.log("pairs", len(qi))
        ctx.log("t_teacher", t_teacher)
        ctx.log("empty", float(len(qi) == 0))
        if len(qi) == 0:  # still connected to the student graph, so every parameter gets a (zero) gradient
            value = 0.0 * s_logits.sum()
        else:
            per_point = soft_cross_entropy(s_logits, targets, self.params.student_temperature)  # [P]
            value = mean_over_views(per_point, student.batch[qi], student.n_samples)
        return {"loss": LossValue(value, self._weight(ctx.progress), {"pairs": len(qi)})}

    def _match(self, student: Encoded, teacher: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
        from pcdag.ops.neighbours import nearest_between

        for port, enc in (("student", student), ("teacher", teacher)):
            if enc.origin_coord is None:
                raise ValueError(f"{self.type_name()}: port {port!r} carries no origin_coord to match views on")
        try:
            pairs = view_pairs(student, teacher, self.params.pairing).to(student.offset.device)
        except ValueError as exc:
            raise ValueError(f"{self.type_name()}: {exc}") from None
        qi, ti, _ = nearest_between(
            student.origin_coord, student.offset, teacher.origin_coord, teacher.offset, pairs, self.match_radius
        )
        return qi, ti

    def _check_finite(self, ctx: StepContext, t_logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Raise on NaN/inf; checking the targets too makes every rank raise (the sums are shared)."""
        import torch

        if bool(torch.isfinite(t_logits).all() & torch.isfinite(targets).all()):  # one host sync
            return
        if not bool(torch.isfinite(t_logits).all()):
            raise FloatingPointError(f"{self.type_name()} at step {ctx.step}: the teacher head's logits hold NaN/inf")
        if not bool(torch.isfinite(targets).all()):
            raise FloatingPointError(
                f"{self.type_name()} at step {ctx.step}: Sinkhorn targets are not finite (the teacher logits of "
                "another rank, or an overflow at this teacher temperature)"
            )

    def memory(self, module: nn.Module | None, inputs: Mapping[str, Any]) -> NodeMemory | None:
        """Per matched pair (about one per student row), bf16 autocast: the student head keeps its input (2·C),
        the MLP hidden twice (2·2·h) and the embedding (6·e); ``soft_cross_entropy`` keeps the logits and the
        targets (6·K). Counted with saved-tensor hooks under bf16 autocast: within 1.2 %. A checkpointed head
        keeps its float32 input (4·C) instead of its input and hidden, and re-makes the hidden (4·h) in the
        backward. The teacher head and Sinkhorn hold ~(2·h + 16·K) per pair while they run."""
        student, head = inputs["student"], inputs["head"]
        if not isinstance(student, FeatureRows) or not hasattr(head, "mlp"):
            return None
        hidden, embed = head.mlp[0].weight.shape[0], head.mlp[2].weight.shape[0]
        k, pairs = head.out_channels, student.points
        mlp = 4 * student.channels if getattr(head, "checkpoint", False) else 2 * student.channels + 4 * hidden
        saved = pairs * (mlp + 6 * embed + 6 * k)
        return NodeMemory(saved=saved, transient=pairs * (2 * hidden + 16 * k))
