"""What every backbone module does first with its ``PointBatch``: check it, mask it, give it grid coordinates."""

from __future__ import annotations

import torch

from pcdag.graphs.batch import PointBatch
from pcdag.ops.segment import segment_max


def sample_counts(points: PointBatch, in_channels: int, who: str) -> list[int]:
    """Points per sample ``[B]`` (one host read), after checking that ``feat`` is ``[N, in_channels]`` and that
    ``offset`` is increasing cumulative counts ending at N with no empty sample; ``ValueError`` naming ``who``."""
    feat, offset, n = points.feat, points.offset.to(torch.int64), points.coord.shape[0]
    if feat.ndim != 2 or feat.shape != (n, in_channels):
        raise ValueError(
            f"{who}: feat has shape {list(feat.shape)}, expected [{n}, in_channels = {in_channels}]; "
            "set in_channels to the loader's feature width"
        )
    counts = torch.diff(offset, prepend=offset.new_zeros(1)).tolist() if offset.ndim == 1 and len(offset) else []
    if not counts or sum(counts) != n or min(counts) < 1:
        raise ValueError(
            f"{who}: offset {offset.tolist()[:8]} must be increasing cumulative counts ending at the number of "
            f"points {n}, every sample with at least one point"
        )
    return counts


def apply_mask_token(x: torch.Tensor, points: PointBatch, token: torch.Tensor | None, who: str) -> torch.Tensor:
    """``x`` [N, C] with the rows of masked points replaced by ``token`` [1, C]; ``x`` itself without a mask."""
    if points.mask is None:
        return x
    if token is None:
        raise ValueError(f"{who}: the batch carries a mask but mask_token is off; turn it on")
    return torch.where(points.mask.reshape(-1, 1).bool(), token.to(x.dtype), x)


def grid_coordinates(points: PointBatch, samples: int, grid_size: float) -> torch.Tensor:
    """``[N, 3]`` int64 voxel coordinates: the batch's own, else ``floor((coord - min of the sample) / grid_size)``
    (a sample's voxels do not depend on its batch-mates)."""
    if points.grid_coord is not None:
        return points.grid_coord.to(torch.int64)
    coord = points.coord.detach().float()
    low = -segment_max(-coord, points.batch, samples, check=False)  # [B, 3] sample minimum
    return torch.floor((coord - low[points.batch]) / grid_size).to(torch.int64)  # [N, 3]
