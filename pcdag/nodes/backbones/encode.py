"""Encode: run a backbone on one kind of view of the batch (global or local), with or without its mask."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    import torch

from pcdag.graphs.batch import Encoded, MultiViewBatch
from pcdag.graphs.device import DeviceNode, StepContext
from pcdag.graphs.memory import FeatureRows, NodeMemory, ViewPoints
from pcdag.graphs.node import In, Out
from pcdag.graphs.params import one_of, param
from pcdag.graphs.ports import FEATURES, MODEL, MULTI_VIEW_BATCH
from pcdag.graphs.registry import register


@register
class Encode(DeviceNode):
    """Backbone forward pass over the ``views`` kind of the batch → per-point features (``Encoded``).

    With ``masked`` the points masked upstream (``GridMasking``) get the mask token; without, the mask is ignored.
    A backbone whose weights take no gradient (an ``EMATeacher``) runs under ``torch.no_grad``.
    """

    role = "backbones"
    version = 1
    inputs = {
        "model": In(MODEL, doc="a backbone module (a backbone node's, or its teacher)"),
        "views": In(MULTI_VIEW_BATCH),
    }
    outputs = {"features": Out(FEATURES)}

    @attrs.frozen
    class Params:
        views: str = param("global", one_of("global", "local"), doc="which views of each scene")
        masked: bool = param(False, one_of(False, True), doc="apply the batch's mask (mask token)")

    def forward(self, ctx: StepContext, module: torch.nn.Module | None, **inputs: Any) -> dict[str, Any]:
        import torch

        model, batch = inputs["model"], inputs["views"]
        if not isinstance(batch, MultiViewBatch):
            raise TypeError(f"Encode: 'views' must be a MultiViewBatch, got {type(batch).__name__}")
        points = batch.views(self.params.views)
        if self.params.masked and points.mask is None:
            raise ValueError("Encode(masked=true): the views carry no mask; feed them through a masking node first")
        if not self.params.masked and points.mask is not None:
            points = points.replace(mask=None)
        frozen = not any(p.requires_grad for p in model.parameters())
        with torch.no_grad() if frozen else torch.enable_grad():
            out: Encoded = model(points)
        out.kind, out.per_scene = self.params.views, batch.per_scene(self.params.views)
        return {"features": out}

    def memory(self, module: torch.nn.Module | None, inputs: Mapping[str, Any]) -> NodeMemory | None:
        """The backbone's activations over the expected points of this node's view kind: the module's own memory
        model (``BackboneModule.memory``, ``pcdag.graphs.backbone``); None when the module has none."""
        model, views = inputs["model"], inputs["views"]
        modelled = getattr(model, "memory", None)
        if not isinstance(views, ViewPoints) or not callable(modelled):
            return None
        grad = any(p.requires_grad for p in model.parameters())
        found = modelled(views.points.get(self.params.views, 0.0), grad)
        if found is None:
            return None
        mem, rows, channels = found
        return attrs.evolve(mem, outputs={"features": FeatureRows(rows, channels, grad)})
