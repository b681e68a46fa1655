"""The layers of Point Transformer V3 (spec C): one pooling level's points, blocks, grid pooling and unpooling.

A ``Level`` holds the points of one pooling level (stage ``s`` lives on the ``0.02 * 2**s`` m grid) with what its
blocks share: the serialisation orders, the sparse-convolution neighbour cache and the attention patch plans.
``GridPooling`` makes level ``s + 1`` from level ``s`` and records ``inverse``: the level-``s + 1`` row of every
level-``s`` point, which the up-cast and the decoder use to walk back up.
"""

from __future__ import annotations

import functools

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from pcdag.nodes.backbones.ptv3.attention import PatchAttention, PatchPlan, patch_plan, patch_rows
from pcdag.nodes.backbones.ptv3.serialization import depth_for, depth_of, encode_orders, grid_max
from pcdag.ops.segment import segment_max, segment_mean
from pcdag.ops.sparse_conv import SubMConv3d


@attrs.define(eq=False)
class Level:
    """The points of one pooling level, concatenated over samples (sorted by sample)."""

    feat: torch.Tensor  # [N, C]
    coord: torch.Tensor  # [N, 3] mean augmented xyz of the cell
    origin_coord: torch.Tensor | None  # [N, 3] mean pre-augmentation xyz of the cell
    grid: torch.Tensor  # [N, 3] int64 voxel coordinates at this level
    batch: torch.Tensor  # [N] int64 sample index
    offset: torch.Tensor  # [B] int64 cumulative counts
    counts: list[int]  # [B] points per sample, on the host (shapes of the patch layout)
    grid_max: int  # largest value of ``grid`` (serialisation depth, spconv's spatial shape), on the host
    orders: list[tuple[torch.Tensor, torch.Tensor]]  # per order slot: (order [N], inverse [N])
    inverse: torch.Tensor | None = None  # [N_previous level] row here of every point of the level above
    conv_cache: dict = attrs.field(factory=dict)  # shared by the xCPE convolutions of this level
    plans: dict[int, PatchPlan] = attrs.field(factory=dict)  # patch size -> plan
    rows: dict[tuple[int, int, bool], tuple[torch.Tensor, torch.Tensor]] = attrs.field(factory=dict)

    def plan(self, patch_size: int) -> PatchPlan:
        if patch_size not in self.plans:
            self.plans[patch_size] = patch_plan(self.offset, self.counts, patch_size)
        return self.plans[patch_size]

    def patch_rows(self, order_slot: int, patch_size: int, packed: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``attention.patch_rows`` of one order, made once per level and shared by its blocks on that order."""
        key = (order_slot, patch_size, packed)
        if key not in self.rows:
            self.rows[key] = patch_rows(self.plan(patch_size), *self.orders[order_slot], packed)
        return self.rows[key]


def serialise(
    grid: torch.Tensor, batch: torch.Tensor, orders: tuple[str, ...], shuffle: bool, depth: int | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Sort the points along every curve of ``orders``: per order ``(order [N], inverse [N])`` with
    ``order[p]`` the point at position ``p``; with ``shuffle`` the orders trade places (torch's global RNG).
    ``depth``: the serialisation depth when the caller knows it (``depth_for(grid)``, else read here)."""
    depth = depth_for(grid) if depth is None else depth
    codes = encode_orders(grid, batch, orders, depth, check=False)  # [R, N]
    order = torch.sort(codes, dim=1, stable=True).indices  # [R, N]; stable: ties (points sharing a voxel) by index
    position = torch.arange(grid.shape[0], device=grid.device).expand_as(order)  # [R, N]
    inverse = torch.empty_like(order).scatter_(1, order, position)  # [R, N]
    rows = list(zip(order.unbind(0), inverse.unbind(0), strict=True))
    if shuffle:  # the rows trade places on the host: no permutation tensor copied to the device
        rows = [rows[i] for i in torch.randperm(len(orders)).tolist()]
    return rows


def make_level(
    feat: torch.Tensor,
    coord: torch.Tensor,
    origin_coord: torch.Tensor | None,
    grid: torch.Tensor,
    batch: torch.Tensor,
    offset: torch.Tensor,
    orders: tuple[str, ...],
    shuffle: bool,
    inverse: torch.Tensor | None = None,
    counts: list[int] | None = None,
    top: int | None = None,
) -> Level:
    """A level with its orders. ``counts`` (points per sample) and ``top`` (largest grid value) when the caller
    knows them; each is otherwise a host read (a GPU sync)."""
    if counts is None:
        counts = torch.diff(offset, prepend=offset.new_zeros(1)).tolist()
    top = grid_max(grid) if top is None else top
    orders_ = serialise(grid, batch, orders, shuffle, depth_of(top))
    return Level(feat, coord, origin_coord, grid, batch, offset, counts, top, orders_, inverse)


class DropPath(nn.Module):
    """Stochastic depth per point (per row, as the reference applies it to ``[N, C]``): a row of the residual
    branch is zeroed with probability ``rate`` and the others scaled by ``1 / (1 - rate)``; off in eval()."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = float(rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        return x * x.new_empty(x.shape[0], 1).bernoulli_(keep).div_(keep)  # [N, C]

    def extra_repr(self) -> str:
        return f"rate={self.rate:.4f}"


class MLP(nn.Module):
    """Linear(C, hidden) -> GELU -> Linear(hidden, C)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class ConvPositionEncoding(nn.Module):
    """xCPE: submanifold sparse conv 3x3x3 (C -> C, bias) -> Linear -> LayerNorm."""

    def __init__(self, channels: int, backend: str) -> None:
        super().__init__()
        self.conv = SubMConv3d(channels, channels, kernel_size=3, bias=True, backend=backend)
        self.linear = nn.Linear(channels, channels)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor, level: Level) -> torch.Tensor:
        bounds = (len(level.counts), level.grid_max)
        return self.norm(self.linear(self.conv(x, level.grid, level.batch, cache=level.conv_cache, bounds=bounds)))


class Block(nn.Module):
    """f += xCPE(f); f += DropPath(Attn(LN f)); f += DropPath(MLP(LN f)) (pre-norm)."""

    def __init__(
        self, channels: int, num_heads: int, patch_size: int, mlp_ratio: float, drop_path: float, backend: str
    ) -> None:
        super().__init__()
        self.patch_size = int(patch_size)
        self.cpe = ConvPositionEncoding(channels, backend)
        self.norm1 = nn.LayerNorm(channels)
        self.attn = PatchAttention(channels, num_heads)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = MLP(channels, int(channels * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, level: Level, order_slot: int) -> torch.Tensor:
        order, inverse = level.orders[order_slot]
        plan = level.plan(self.patch_size)
        rows = functools.partial(level.patch_rows, order_slot, self.patch_size)  # packed -> shared rows
        x = x + self.cpe(x, level)  # [N, C]
        x = x + self.drop_path(self.attn(self.norm1(x), order, inverse, plan, rows))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class GridPooling(nn.Module):
    """Level s -> s + 1: grid //= 2, one cell per (sample, grid); features Linear(C_s -> C_s+1) then max per
    cell, coord / origin_coord mean per cell, LayerNorm -> GELU, re-serialised (orders shuffled again)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_channels, out_channels)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, level: Level, orders: tuple[str, ...], shuffle: bool) -> Level:
        grid = level.grid // 2  # [N, 3], < 2**15 (serialisation depth <= 16 bits)
        key = (level.batch << 48) | (grid[:, 0] << 32) | (grid[:, 1] << 16) | grid[:, 2]  # [N] sample-major
        cell_key, cell = torch.unique(key, sorted=True, return_inverse=True)  # [M], [N]
        m = cell_key.shape[0]
        # cell comes from torch.unique: in range by construction, no checks (each a host read on a GPU)
        feat = F.gelu(self.norm(segment_max(self.proj(level.feat), cell, m, check=False)))  # [M, C']
        coord = segment_mean(level.coord, cell, m, check=False)  # [M, 3]
        origin = None if level.origin_coord is None else segment_mean(level.origin_coord, cell, m, check=False)
        mask16 = (1 << 16) - 1
        cell_grid = torch.stack([(cell_key >> 32) & mask16, (cell_key >> 16) & mask16, cell_key & mask16], 1)  # [M, 3]
        cell_batch = cell_key >> 48  # [M], sorted
        samples = torch.arange(len(level.counts), device=cell_batch.device)  # [B]
        offset = torch.searchsorted(cell_batch, samples, right=True)  # [B] cells up to each sample (no host read)
        return make_level(
            feat, coord, origin, cell_grid, cell_batch, offset, orders, shuffle, inverse=cell, top=level.grid_max >> 1
        )


class LinearNormAct(nn.Module):
    """Linear -> LayerNorm -> GELU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_channels, out_channels)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.norm(self.linear(x)))


class GridUnpooling(nn.Module):
    """Decoder step s + 1 -> s: parent = LinearNormAct(skip) + LinearNormAct(coarse)[inverse]."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.coarse = LinearNormAct(in_channels, out_channels)
        self.skip = LinearNormAct(skip_channels, out_channels)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        """``coarse`` [M, C_in] at level s + 1, ``skip`` [N, C_skip] at level s, ``inverse`` [N] -> [N, C_out]."""
        return self.skip(skip) + self.coarse(coarse)[inverse]
