"""InstanceLoss: trains an ``InstanceHead``: offsets towards instance centres and a foreground classifier.

For every point of the global views, with its instance id (−1 = none) and sample (view) s:

    centre(s, i)  = mean coord of the points of instance i in view s       (scatter means, augmented coordinates)
    target        = centre(s, instance) − coord                            (metres; instance points only)
    offset term   = mean over instance points of Σ_xyz |offset − target|   (L1)
    direction     = mean over instance points of 1 − cos(offset, target)   (points at their centre left out)
    foreground    = BCE(logit, instance ≥ 0) over all points
    loss          = offset_weight · offset + direction_weight · direction + foreground_weight · foreground

Points whose semantic class is in ``stuff_classes`` count as no instance (−1): ScanNet gives walls and floors
instance ids, but its instance benchmark evaluates the 18 object classes only, so wall (0), floor (1) and points of
no ScanNet-20 class (−1: ceiling, other structure, other props) are stuff by default. The views then need both
labels: ``MultiViewGenerator(labels: [segment, instance])``; with ``stuff_classes: []`` instance alone suffices.
Centres are taken per view, so two crops of one scene each vote for the centre of the part they hold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    import torch

from pcdag.graphs.batch import MultiViewBatch, PointBatch
from pcdag.graphs.device import DeviceNode, LossValue, StepContext
from pcdag.graphs.node import FieldEffect, In, Out, effect
from pcdag.graphs.params import ParamError, in_range, param
from pcdag.graphs.ports import FEATURES, LOSS, MULTI_VIEW_BATCH
from pcdag.graphs.registry import register
from pcdag.nodes.heads.instance_head import point_predictions

SCANNET_STUFF = [-1, 0, 1]  # no ScanNet-20 class, wall, floor
MIN_DIRECTION = 1e-6  # m: targets shorter than this have no direction


def segment_ids():
    """Validator: a list of distinct whole numbers >= -1 (semantic class ids; -1 = the ignore label)."""

    def check(_inst: Any, a: attrs.Attribute, value: Any) -> None:
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        if not ok or any(v < -1 for v in value):
            raise ParamError(f"{a.name} = {value!r} must be a list of semantic class ids (whole numbers >= -1)")
        if len(set(value)) != len(value):
            raise ParamError(f"{a.name} = {value!r} repeats an id")

    check.allowed = "list of class ids >= -1"  # type: ignore[attr-defined]
    return check


def centre_offsets(coord: torch.Tensor, instance: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
    """``[N, 3]``: mean coord of each point's (sample, instance) group minus the point's coord; 0 where instance < 0."""
    import torch

    fg = instance >= 0  # [N]
    target = torch.zeros_like(coord)  # [N, 3]
    if not bool(fg.any()):
        return target
    key = sample[fg] * (int(instance.max()) + 1) + instance[fg]  # [F] one key per (sample, instance)
    _, group = torch.unique(key, return_inverse=True)  # [F] group of each instance point
    n_groups = int(group.max()) + 1
    sums = coord.new_zeros(n_groups, 3).index_add_(0, group, coord[fg])  # [G, 3]
    counts = torch.bincount(group, minlength=n_groups).to(coord.dtype)  # [G]
    target[fg] = sums[group] / counts[group, None] - coord[fg]
    return target


def instance_labels(views: PointBatch, stuff: list[int], who: str) -> torch.Tensor:
    """``[N]`` int64 instance ids of the views, −1 where the semantic class is in ``stuff``."""
    import torch

    need = ["instance", "segment"] if stuff else ["instance"]
    missing = [n for n in need if n not in views.extra]
    if missing:
        raise ValueError(
            f"{who}: the views carry no {' or '.join(map(repr, missing))} labels; give the view generator "
            f"`labels: [{', '.join(need)}]`" + (" (stuff_classes needs the semantic classes)" if stuff else "")
        )
    instance = views.extra["instance"].long()  # [N]
    if not stuff:
        return instance
    segment = views.extra["segment"].long()  # [N]
    return torch.where(torch.isin(segment, segment.new_tensor(stuff)), -1, instance)


@register
class InstanceLoss(DeviceNode):
    """L1 + cosine loss of offsets to instance centres on instance points, BCE of the foreground logit on all."""

    role = "losses"
    version = 1
    trainable = False
    inputs = {
        "predictions": In(FEATURES, doc="per-point offset (3) + foreground logit (1) (InstanceHead)"),
        "views": In(MULTI_VIEW_BATCH, doc="the batch whose global views carry instance (and segment) labels"),
    }
    outputs = {"loss": Out(LOSS)}

    @attrs.frozen
    class Params:
        stuff_classes: list = param(list(SCANNET_STUFF), segment_ids(), doc="semantic ids counted as no instance")
        offset_weight: float = param(1.0, in_range(0.0, None), doc="weight of the L1 offset term")
        direction_weight: float = param(1.0, in_range(0.0, None), doc="weight of the 1 − cosine direction term")
        foreground_weight: float = param(1.0, in_range(0.0, None), doc="weight of the foreground BCE term")
        weight: float = param(1.0, in_range(0.0, None), doc="weight of the whole loss in the step's total")

    def fields(self) -> FieldEffect:
        return effect()

    def forward(self, ctx: StepContext, module: Any, **inputs: Any) -> dict[str, Any]:
        batch: MultiViewBatch = inputs["views"]
        views = batch.global_views
        offset, logit = point_predictions(inputs["predictions"])  # [N, 3], [N]
        offset, logit = offset.float(), logit.float()
        if offset.shape[0] != len(views):
            raise ValueError(
                f"{self.type_name()}: {offset.shape[0]} predicted points for {len(views)} points of the global views "
                f"of scene(s) {', '.join(batch.scenes)}; feed the head features of the global views"
            )
        instance = instance_labels(views, list(self.params.stuff_classes), self.type_name())  # [N]
        fg = instance >= 0  # [N]
        target = centre_offsets(views.coord.float(), instance, views.batch)  # [N, 3]
        terms = self._terms(offset[fg], target[fg], logit, fg)
        p = self.params
        value = p.offset_weight * terms["offset"] + p.direction_weight * terms["direction"]
        value = value + p.foreground_weight * terms["foreground"]
        accuracy = ((logit > 0) == fg).float().mean()
        diagnostics = {k: v.detach() for k, v in terms.items()}
        return {
            "loss": LossValue(value, p.weight, {**diagnostics, "acc": accuracy, "instance_share": fg.float().mean()})
        }

    @staticmethod
    def _terms(offset: torch.Tensor, target: torch.Tensor, logit: torch.Tensor, fg: torch.Tensor) -> dict:
        import torch.nn.functional as F

        foreground = F.binary_cross_entropy_with_logits(logit, fg.float())
        zero = offset.sum() * 0.0  # keeps the graph when a batch holds no instance point
        if offset.shape[0] == 0:
            return {"offset": zero, "direction": zero, "foreground": foreground}
        l1 = (offset - target).abs().sum(dim=1).mean()
        aimed = target.norm(dim=1) > MIN_DIRECTION  # [F]
        if bool(aimed.any()):
            cosine = F.cosine_similarity(offset[aimed], target[aimed], dim=1, eps=1e-8)  # [F']
            direction = (1.0 - cosine).mean()
        else:
            direction = zero
        return {"offset": l1, "direction": direction, "foreground": foreground}

    def plan_notes(self) -> list[str]:
        p = self.params
        return [
            f"{p.offset_weight}·L1(offset) + {p.direction_weight}·(1 − cos) + {p.foreground_weight}·BCE(foreground); "
            f"segments {list(p.stuff_classes)} count as no instance"
        ]
