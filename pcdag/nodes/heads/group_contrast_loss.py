"""GroupContrastLoss: the grouping loss and the semantic-aware contrastive loss of GroupContrast, on two views.

Per direction (student view a, teacher view b; both directions by default, averaged), with the batch's overlap
segments and sampled pairs (``TwoViewGenerator``) and the math of ``parts/group_contrast.py``:

    z_q = pool(g_θ(student feat of view a)),  z_k = pool(g_Θ(teacher feat of view b))      [P, D], unit rows
    Q = z_q S_θᵀ / τ_s,   K = softmax(centre(z_k S_Θᵀ) / τ_t)                                  [P, n]
    L_group  (entropy-weighted),  Ŷ_s = argmax K_s,  confidences max K_s
    v_q = h′_θ(h_θ(student feat at the pairs in view a)),  v_k = h_Θ(teacher feat at the pairs in view b)
    L_con over the pairs (positives: same group; each against its anchor's other-group negatives; τ)
    L = group_weight · L_group + contrast_weight · L_con

Only segments with points in both views enter (the loader guarantees it; checked again); a pair counts when both
its points' segments do. Keys are the pairs of the anchor's own scene unless ``across_scenes`` [I]. The centre
(``pcdag.ops.centering``) is the module of this node: updated once per forward in training with the teacher
logits of every rank (λ = ``center_momentum``) [I: DINO-style, in logit space], while the student head is in
training mode (this node's own module is not trained, so the runtime keeps it in eval mode). Degenerate batches
never give NaN: no overlap segment (``empty_group`` 1, L_group 0), no counted positive (``empty_contrast`` 1,
L_con 0), anchors whose scene is all one group (``no_negative``: how many, left out), each logged; the zeros stay
connected to the student so every parameter gets a (zero) gradient. Teacher values (K, H, C, v_k) take no gradient.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from torch import nn

from pcdag.graphs.batch import MultiViewBatch
from pcdag.graphs.device import DeviceNode, LossValue, StepContext
from pcdag.graphs.memory import FeatureRows, NodeMemory, ViewPoints
from pcdag.graphs.node import FieldEffect, In, Out, effect
from pcdag.graphs.params import in_range, one_of, param
from pcdag.graphs.ports import FEATURES, LOSS, MODEL, MULTI_VIEW_BATCH
from pcdag.graphs.registry import register
from pcdag.graphs.schedule import Schedule, schedule

TEMPERATURE = in_range(0.0, 100.0, lo_open=True)


@register
class GroupContrastLoss(DeviceNode):
    """Grouping loss + semantic-aware contrastive loss over the overlap of two views (module doc)."""

    role = "losses"
    version = 1
    trainable = False
    inputs = {
        "student": In(FEATURES, doc="student features of both views (Encode of the global views)"),
        "teacher": In(FEATURES, doc="teacher features of both views (no gradient)"),
        "head": In(MODEL, doc="student GroupContrastHead"),
        "teacher_head": In(MODEL, doc="teacher GroupContrastHead (EMATeacher)"),
        "views": In(MULTI_VIEW_BATCH, doc="the batch with overlap_segment and pair ids (TwoViewGenerator)"),
    }
    outputs = {"loss": Out(LOSS)}

    @attrs.frozen
    class Params:
        student_temperature: float = param(0.1, TEMPERATURE, doc="τ_s")
        teacher_temperature: float = param(0.07, TEMPERATURE, doc="τ_t (sharpening; set to τ_s to switch it off)")
        contrast_temperature: float = param(0.4, TEMPERATURE, doc="τ of the contrastive loss")
        centering: bool = param(True, one_of(False, True), doc="subtract the running centre of teacher logits")
        center_momentum: float = param(0.9, in_range(0.0, 1.0), doc="λ of the centre update")
        entropy_weights: bool = param(True, one_of(False, True), doc="weight segments by H_i in L_group")
        confidence: bool = param(True, one_of(False, True), doc="weight positives by C_ij in L_con")
        predictor: bool = param(True, one_of(False, True), doc="use the head's predictor h′ (if it has one)")
        across_scenes: bool = param(False, one_of(False, True), doc="keys from every scene of the batch")
        symmetric: bool = param(True, one_of(False, True), doc="both directions (a→b, b→a), averaged")
        group_weight: float = param(1.0, in_range(0.0, None), doc="weight of L_group")
        contrast_weight: float = param(1.0, in_range(0.0, None), doc="weight of L_con")
        weight: Any = param(1.0, schedule(0.0, None), doc="loss weight schedule")

    def __post_init__(self) -> None:
        self._weight = Schedule.parse(self.params.weight, "weight")

    def fields(self) -> FieldEffect:
        return effect()

    def build(self, inputs: Mapping[str, nn.Module]) -> nn.Module:
        from pcdag.ops.centering import LogitCentering

        head = inputs.get("head")
        size = getattr(head, "out_channels", None)
        if not isinstance(size, int) or not hasattr(head, "prototype_logits"):
            raise ValueError(f"{self.type_name()}: port 'head' needs a GroupContrastHead module, got {type(head)}")
        return LogitCentering(size, self.params.center_momentum, self.params.centering)

    def memory(self, module: nn.Module | None, inputs: Mapping[str, Any]) -> NodeMemory | None:
        """Bytes of one forward under bf16 autocast, both directions: the student's projector g keeps its input
        and hidden (2·C + 4·h per overlap-segment row; every row is counted, an upper bound: ~75 % of rows have
        a segment), the point projector h and predictor h′ the same per sampled pair and direction, and the
        contrast ~10 bytes per entry of each scene's m × m similarity (m = pairs per scene). The teacher's
        projector of one view and one m × m block's temporaries live while it runs. Checked against saved-tensor
        hooks on CPU bf16 autocast: 1.00–1.05 × what autograd keeps over five sizes (tests/test_group_contrast_loss.py
        checks two, allowing 0.95–1.3)."""
        student, views, head = inputs.get("student"), inputs.get("views"), inputs.get("head")
        if not isinstance(student, FeatureRows) or not isinstance(views, ViewPoints) or head is None:
            return None
        c, hidden = student.channels, head.projector[0].out_features
        point_embed = head.point_projector[2].out_features
        directions = 2 if self.params.symmetric else 1
        m = views.pairs / max(views.scenes, 1.0)  # pairs per scene
        per_pair = 2 * c + 4 * hidden + 4 * point_embed
        if head.predictor is not None and self.params.predictor:
            per_pair += 2 * point_embed + 4 * hidden + 4 * point_embed
        rows = student.points * directions / 2  # each direction projects one view's rows
        saved = rows * (2 * c + 4 * hidden) + directions * (views.pairs * per_pair + views.scenes * 10 * m * m)
        transient = student.points / 2 * (2 * c + 4 * hidden) + 16 * m * m
        return NodeMemory(saved=saved, transient=transient)

    def forward(self, ctx: StepContext, module: nn.Module | None, **inputs: Any) -> dict[str, Any]:
        import torch

        from pcdag.nodes.heads.parts.group_contrast_step import GroupContrastStep

        batch = inputs["views"]
        if not isinstance(batch, MultiViewBatch) or batch.n_global != 2:
            raise ValueError(f"{self.type_name()}: port 'views' needs a MultiViewBatch of 2 global views per scene")
        step = GroupContrastStep(self.params, batch, inputs["student"], inputs["teacher"], self.type_name())
        directions = ((0, 1), (1, 0)) if self.params.symmetric else ((0, 1),)
        parts = [step.direction(a, b, inputs["head"], inputs["teacher_head"], module) for a, b in directions]
        if module is not None and inputs["head"].training:  # this node is not trained: the runtime keeps it in eval
            module.update(torch.cat([d.teacher_logits for d in parts]))  # collective: every rank, every forward
            ctx.log("center_norm", module.center.norm())
        group = torch.stack([d.group for d in parts]).mean()
        positives = sum(d.contrast.positives for d in parts)
        total = torch.stack([d.contrast.total for d in parts]).sum()
        contrast = total / max(positives, 1)
        value = self.params.group_weight * group + self.params.contrast_weight * contrast
        segments, no_negative = sum(d.segments for d in parts), sum(d.contrast.no_negative for d in parts)
        for name, v in (
            ("segments", segments / len(parts)),
            ("groups", sum(d.groups for d in parts) / len(parts)),
            ("positives", positives / len(parts)),
            ("no_negative", no_negative / len(parts)),
            ("empty_group", float(segments == 0)),
            ("empty_contrast", float(positives == 0)),
        ):
            ctx.log(name, v)
        terms = {"group": group.detach(), "contrast": contrast.detach()}
        return {"loss": LossValue(value, self._weight(ctx.progress), terms)}
