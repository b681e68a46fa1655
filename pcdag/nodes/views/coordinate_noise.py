"""CoordinateNoise: the global views with Gaussian noise on every coordinate, for the teacher's noisy pass.

LAM3C's noise-consistency target: the same global views as the student's, unmasked, with coord + N(0, σ²) per
axis and per point (no clip). ``feat`` stays as the loader made it and ``origin_coord`` is unchanged (matching
uses it); only the voxelisation, serialisation and pooling of the backbone see the noise (``grid_coord`` None
so that the backbone recomputes it). Local views pass through untouched; ``mask`` is cleared.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    import torch

from pcdag.graphs.batch import MultiViewBatch
from pcdag.graphs.device import DeviceNode, StepContext
from pcdag.graphs.memory import NodeMemory
from pcdag.graphs.node import FieldEffect, In, Out, effect
from pcdag.graphs.params import in_range, param
from pcdag.graphs.ports import MULTI_VIEW_BATCH
from pcdag.graphs.registry import register


@register
class CoordinateNoise(DeviceNode):
    """Add N(0, sigma²) noise to every coordinate of the global views (features unchanged, no mask)."""

    role = "views"
    version = 1
    inputs = {"views": In(MULTI_VIEW_BATCH)}
    outputs = {"views": Out(MULTI_VIEW_BATCH, doc="global views with perturbed coordinates")}

    @attrs.frozen
    class Params:
        sigma: float = param(0.01, in_range(0.0, None), unit="m", doc="noise standard deviation per axis")

    def fields(self) -> FieldEffect:
        return effect()  # works on device batches, not on point-cloud fields

    def forward(self, ctx: StepContext, module: torch.nn.Module | None, **inputs: Any) -> dict[str, Any]:
        import torch

        batch: MultiViewBatch = inputs["views"]
        views = batch.global_views
        coord = views.coord.float()  # [N, 3]
        noise = torch.randn(coord.shape, generator=ctx.generator, device=coord.device, dtype=torch.float32)
        noisy = views.replace(coord=coord + noise * self.params.sigma, mask=None, grid_coord=None)  # [N, 3]
        return {"views": batch.replace(global_views=noisy)}

    def memory(self, module: torch.nn.Module | None, inputs: Mapping[str, Any]) -> NodeMemory:
        """Views in, views out: the same points (their copies are a few bytes a point)."""
        return NodeMemory(outputs={"views": inputs["views"]})
