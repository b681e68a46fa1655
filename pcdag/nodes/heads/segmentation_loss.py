"""SegmentationLoss: cross-entropy plus Lovász-softmax of per-point class logits against the batch's labels.

    loss = ce_weight · CE(logits, y) + lovasz_weight · Lovász(softmax(logits), y)      points with y = ignore skipped

as in spec E (both weights 1). Logits are taken at every input point of the views (``extra['inverse']``), the
labels from the views' ``extra[label]`` (``MultiViewGenerator(labels: [segment])`` puts them there). A label
outside ``0..classes−1`` other than ``ignore_index`` is an error naming the scenes of the batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    import torch

from pcdag.graphs.batch import MultiViewBatch
from pcdag.graphs.device import DeviceNode, LossValue, StepContext
from pcdag.graphs.node import FieldEffect, In, Out, effect
from pcdag.graphs.params import in_range, integer, one_of, param
from pcdag.graphs.ports import FEATURES, LOSS, MULTI_VIEW_BATCH
from pcdag.graphs.registry import register


@register
class SegmentationLoss(DeviceNode):
    """Cross-entropy + Lovász-softmax of per-point logits against the views' labels (ignore −1)."""

    role = "losses"
    version = 1
    trainable = False
    inputs = {
        "logits": In(FEATURES, doc="per-point class logits (SegmentationHead)"),
        "views": In(MULTI_VIEW_BATCH, doc="the batch whose global views carry the labels"),
    }
    outputs = {"loss": Out(LOSS)}

    @attrs.frozen
    class Params:
        label: str = param("segment", one_of("segment", "instance"), doc="which per-point labels of the views")
        ignore_index: int = param(-1, integer(-(1 << 31), None), doc="label of points that take no part")
        ce_weight: float = param(1.0, in_range(0.0, None), doc="weight of the cross-entropy term")
        lovasz_weight: float = param(1.0, in_range(0.0, None), doc="weight of the Lovász-softmax term")
        weight: float = param(1.0, in_range(0.0, None), doc="weight of the whole loss in the step's total")

    def fields(self) -> FieldEffect:
        return effect()

    def forward(self, ctx: StepContext, module: Any, **inputs: Any) -> dict[str, Any]:
        import torch.nn.functional as F

        from pcdag.ops.lovasz import lovasz_softmax

        batch: MultiViewBatch = inputs["views"]
        logits = inputs["logits"].at_points().float()  # [N, classes]
        labels = self._labels(batch, logits.shape[1])  # [N]
        p = self.params
        labelled = labels != p.ignore_index  # [N]; with a point budget a view may hold no labelled point at all
        count = labelled.sum().clamp(min=1)  # a mean over no point is 0, not NaN (and no host sync)
        ce = F.cross_entropy(logits, labels, ignore_index=p.ignore_index, reduction="sum") / count
        lovasz = lovasz_softmax(logits.softmax(dim=1), labels, p.ignore_index)
        accuracy = ((logits.argmax(dim=1) == labels) & labelled).sum() / count
        value = p.ce_weight * ce + p.lovasz_weight * lovasz
        return {"loss": LossValue(value, p.weight, {"ce": ce.detach(), "lovasz": lovasz.detach(), "acc": accuracy})}

    def _labels(self, batch: MultiViewBatch, classes: int) -> torch.Tensor:
        views = batch.global_views
        if self.params.label not in views.extra:
            raise ValueError(
                f"{self.type_name()}: the views carry no {self.params.label!r} labels; give the view generator "
                f"`labels: [{self.params.label}]`"
            )
        labels = views.extra[self.params.label].long()  # [N]
        bad = (labels != self.params.ignore_index) & ((labels < 0) | (labels >= classes))
        if bool(bad.any()):
            values = sorted(set(labels[bad].tolist()))[:5]
            raise ValueError(
                f"{self.type_name()}: labels {values} of scene(s) {', '.join(batch.scenes)} lie outside "
                f"0..{classes - 1} "
                f"(and are not ignore_index {self.params.ignore_index}); fix the label files or the head's classes"
            )
        return labels
