"""GridMasking: mask whole grid cells of the global views and jitter the masked points' coordinates.

Per global view, cell = ⌊(coord − view min) / size⌋ (the view index is part of the cell, so a cell never spans
views). One random permutation over all cells of the batch picks ⌊ratio · #cells⌋ of them; every point of a
picked cell is masked (``PointBatch.mask``; the backbone replaces its stem output by the mask token). Masked
points get coord += clip(N(0, noise²)) per axis. ``clip_sides: above`` (default) clips only from above at
``clip``, as the reference does (``torch.clip(noise, max=2 · noise_std)``); ``both`` clips to [−clip, clip].

As in the reference, ``feat`` is left alone (it was computed in the loader from the unmasked coordinates) and
``origin_coord`` too; the backbone voxelises and serialises the jittered coordinates (``grid_coord`` is set to
None so that it does). Local views pass through untouched. Mask size and ratio are schedules: linear warm-up
over the first 5 % of training, then constant (0.1 → 0.4 m, 0.3 → 0.7).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    import torch

from pcdag.graphs.batch import MultiViewBatch, PointBatch
from pcdag.graphs.device import DeviceNode, StepContext
from pcdag.graphs.memory import NodeMemory
from pcdag.graphs.node import FieldEffect, In, Out, effect
from pcdag.graphs.params import in_range, one_of, param
from pcdag.graphs.ports import MULTI_VIEW_BATCH
from pcdag.graphs.registry import register
from pcdag.graphs.schedule import Schedule, schedule


def grid_cells(coord: torch.Tensor, batch: torch.Tensor, n_views: int, size: float) -> tuple[torch.Tensor, int]:
    """Cell id of every point (``[N]`` int64 in 0..n_cells-1) and the number of cells; cells never span views."""
    import torch

    lo = torch.full((n_views, 3), float("inf"), dtype=coord.dtype, device=coord.device)
    lo = lo.scatter_reduce(0, batch[:, None].expand(-1, 3), coord, "amin")  # [B, 3] per-view minimum
    cell = torch.floor((coord - lo[batch]) / size).long()  # [N, 3]
    cells, cell_id = torch.unique(torch.cat([batch[:, None], cell], dim=1), dim=0, return_inverse=True)  # [N]
    return cell_id, len(cells)


def mask_cells(cell_id: torch.Tensor, n_cells: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """``[N]`` bool: the points of ⌊ratio · n_cells⌋ cells drawn without replacement."""
    import torch

    picked = torch.randperm(n_cells, generator=generator, device=cell_id.device)[: int(ratio * n_cells)]
    masked_cell = torch.zeros(n_cells, dtype=torch.bool, device=cell_id.device)  # [n_cells]
    masked_cell[picked] = True
    return masked_cell[cell_id]


def clipped_noise(
    shape: tuple[int, ...], std: float, clip: float, sides: str, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    import torch

    noise = torch.randn(shape, generator=generator, device=device, dtype=torch.float32) * std
    return noise.clamp(max=clip) if sides == "above" else noise.clamp(-clip, clip)


@register
class GridMasking(DeviceNode):
    """Mask random grid cells of every global view and jitter the masked coordinates (local views untouched)."""

    role = "views"
    version = 1
    inputs = {"views": In(MULTI_VIEW_BATCH)}
    outputs = {"views": Out(MULTI_VIEW_BATCH, doc="global views with mask set and masked coords jittered")}

    @attrs.frozen
    class Params:
        size: Any = param([[0, 0.1], [0.05, 0.4]], schedule(1e-4, 100.0), unit="m", doc="mask cell edge")
        ratio: Any = param([[0, 0.3], [0.05, 0.7]], schedule(0.0, 1.0), doc="fraction of cells masked")
        noise: float = param(0.01, in_range(0.0, None), unit="m", doc="std of the masked points' jitter")
        clip: float = param(0.02, in_range(0.0, None), unit="m", doc="jitter clip")
        clip_sides: str = param("above", one_of("above", "both"), doc="above: reference clip(max=clip) only")

    def __post_init__(self) -> None:
        self.size_schedule = Schedule.parse(self.params.size, "size")
        self.ratio_schedule = Schedule.parse(self.params.ratio, "ratio")

    def fields(self) -> FieldEffect:
        return effect()  # works on device batches, not on point-cloud fields

    def mask(self, views: PointBatch, size: float, ratio: float, generator: torch.Generator) -> PointBatch:
        """A new batch: ``mask`` set, masked coordinates jittered, ``grid_coord`` None (``views`` untouched)."""
        import torch

        coord = views.coord.float()  # [N, 3]
        cell_id, n_cells = grid_cells(coord, views.batch.to(coord.device), views.n_samples, size)
        mask = mask_cells(cell_id, n_cells, ratio, generator)  # [N]
        p = self.params
        noise = clipped_noise(tuple(coord.shape), p.noise, p.clip, p.clip_sides, generator, coord.device)  # [N, 3]
        jittered = coord + torch.where(mask[:, None], noise, torch.zeros_like(noise))  # [N, 3], a new tensor
        return views.replace(coord=jittered, mask=mask, grid_coord=None)

    def forward(self, ctx: StepContext, module: torch.nn.Module | None, **inputs: Any) -> dict[str, Any]:
        batch: MultiViewBatch = inputs["views"]
        size, ratio = self.size_schedule(ctx.progress), self.ratio_schedule(ctx.progress)
        masked = self.mask(batch.global_views, size, ratio, ctx.generator)
        ctx.log("size", size)
        ctx.log("ratio", ratio)
        ctx.log("masked_points", masked.mask.float().mean())
        return {"views": batch.replace(global_views=masked)}

    def memory(self, module: torch.nn.Module | None, inputs: Mapping[str, Any]) -> NodeMemory:
        """Views in, views out: the same points (their copies are a few bytes a point)."""
        return NodeMemory(outputs={"views": inputs["views"]})
