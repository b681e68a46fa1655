"""The sparse-convolution U-Net (Pointcept's SpUNet-v1m1, MinkUNet's family): ``PointBatch -> Encoded``.

    points --voxelise: one site per (sample, grid cell), input features averaged (masked points: the mask token)
           --stem: SubMConv 5x5x5 (in -> base, no bias) -> BN -> ReLU                              level 0
    encoder s = 0..3: SparseConv 2x2x2 stride 2 (no bias) -> BN -> ReLU, then layers[s] BasicBlocks  level s + 1
    decoder s = 3..0: SparseInverseConv 2x2x2 onto level s's sites -> BN -> ReLU, ++ level s's encoder features
                      (skip), then layers[7 - s] BasicBlocks (the first one projects the concatenation)
    -> [V, channels[7]] at the level-0 sites; ``extra["inverse"]`` [N] maps every input point to its site.

BasicBlock: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + proj(x))``, 3x3x3 submanifold convolutions without bias,
``proj`` the identity or a 1x1 convolution + BN when the width changes. BatchNorm eps 1e-3, momentum 0.01 (as the
reference). Parameter names are the reference's (``conv_input.0.weight``, ``down.{s}.0.weight``,
``enc.{s}.block{i}.conv1.weight``, ``up.{s}.1.running_mean``, ...), so its state dicts load as they are.

Grid coordinates, when the batch has none: ``floor((coord - min of the sample) / grid_size)``. Given ones are
shifted by a multiple of 16 (the deepest cell), which keeps every level's cells.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from pcdag.graphs.batch import Encoded, PointBatch
from pcdag.nodes.backbones.spunet.config import N_LEVELS, SparseUNetConfig
from pcdag.ops.backbone_input import apply_mask_token, grid_coordinates, sample_counts
from pcdag.ops.segment import segment_mean
from pcdag.ops.sparse_conv import SubMConv3d
from pcdag.ops.sparse_conv_strided import SparseConv3d, SparseInverseConv3d

BN_EPS, BN_MOMENTUM = 1e-3, 0.01


@attrs.define(eq=False)
class Sites:
    """The voxels of one level: (sample, grid) per row and the submanifold convolutions' shared neighbour cache."""

    grid: torch.Tensor  # [V, 3] int64, >= 0
    batch: torch.Tensor  # [V] int64
    bounds: tuple[int, int]  # (samples, an upper bound of the largest grid value)
    cache: dict = attrs.field(factory=dict)

    def conv(self, conv: SubMConv3d, x: torch.Tensor) -> torch.Tensor:
        return conv(x, self.grid, self.batch, cache=self.cache, bounds=self.bounds)


def _norm(channels: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class Pointwise(nn.Module):
    """A 1x1x1 convolution (weight [out, 1, 1, 1, in], the sparse layout), i.e. a linear map without bias."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, 1, 1, 1, in_channels))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.flatten(1))


class BasicBlock(nn.Module):
    """Two 3x3x3 submanifold convolutions with BN and a residual connection (projected if the width changes)."""

    def __init__(self, in_channels: int, channels: int, backend: str) -> None:
        super().__init__()
        self.proj = nn.ModuleList() if in_channels == channels else nn.ModuleList([Pointwise(in_channels, channels)])
        if in_channels != channels:
            self.proj.append(_norm(channels))
        self.conv1 = SubMConv3d(in_channels, channels, 3, bias=False, backend=backend)
        self.bn1 = _norm(channels)
        self.conv2 = SubMConv3d(channels, channels, 3, bias=False, backend=backend)
        self.bn2 = _norm(channels)

    def forward(self, x: torch.Tensor, sites: Sites) -> torch.Tensor:
        out = F.relu(self.bn1(sites.conv(self.conv1, x)))
        out = self.bn2(sites.conv(self.conv2, out))
        residual = x if not len(self.proj) else self.proj[1](self.proj[0](x))
        return F.relu(out + residual)


def _blocks(in_channels: int, channels: int, n: int, backend: str) -> nn.ModuleDict:
    return nn.ModuleDict(
        {f"block{i}": BasicBlock(in_channels if i == 0 else channels, channels, backend) for i in range(n)}
    )


class SparseUNetModule(nn.Module):
    """``PointBatch -> Encoded``: see the module docstring."""

    def __init__(self, config: SparseUNetConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.out_channels = cfg.out_channels
        enc, dec = cfg.level_channels()
        self.mask_token = nn.Parameter(torch.zeros(1, cfg.in_channels)) if cfg.mask_token else None
        stem = SubMConv3d(cfg.in_channels, cfg.base_channels, 5, bias=False, backend=cfg.backend)
        self.conv_input = nn.ModuleList([stem, _norm(cfg.base_channels)])
        self.down, self.enc, self.up, self.dec = nn.ModuleList(), nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for s in range(N_LEVELS):
            down = SparseConv3d(enc[s], enc[s + 1], bias=False, backend=cfg.backend)
            self.down.append(nn.ModuleList([down, _norm(enc[s + 1])]))
            self.enc.append(_blocks(enc[s + 1], enc[s + 1], cfg.layers[s], cfg.backend))
            above = enc[N_LEVELS] if s == N_LEVELS - 1 else dec[s + 1]
            up = SparseInverseConv3d(above, dec[s], bias=False, backend=cfg.backend)
            self.up.append(nn.ModuleList([up, _norm(dec[s])]))
            self.dec.append(_blocks(dec[s] + enc[s], dec[s], cfg.layers[2 * N_LEVELS - 1 - s], cfg.backend))
        for module in self.modules():
            if isinstance(module, SubMConv3d):
                nn.init.trunc_normal_(module.weight, std=0.02)  # the reference's init; BN starts at (1, 0)

    def forward(self, points: PointBatch) -> Encoded:
        feat, sites, inverse, offset = self._voxelise(points)
        x = F.relu(self.conv_input[1](sites.conv(self.conv_input[0], feat)))  # [V, base]
        levels, skips, links = [sites], [x], []
        for s in range(N_LEVELS):
            x, link = self.down[s][0](x, levels[-1].grid, levels[-1].batch, levels[-1].bounds)
            links.append(link)
            levels.append(Sites(link.grid, link.batch, link.bounds))
            self._check_level(levels)
            x = F.relu(self.down[s][1](x))
            for block in self.enc[s].values():
                x = block(x, levels[-1])
            skips.append(x)
        for s in reversed(range(N_LEVELS)):
            x = F.relu(self.up[s][1](self.up[s][0](x, links[s])))  # [V_s, dec[s]]
            x = torch.cat([x, skips[s]], dim=1)
            for block in self.dec[s].values():
                x = block(x, levels[s])
        coord = segment_mean(points.coord.detach(), inverse, len(x), check=False)
        origin = points.origin_coord
        origin = None if origin is None else segment_mean(origin.detach(), inverse, len(x), check=False)
        return Encoded(x, coord, origin, offset, level=0, extra={"inverse": inverse})

    def _voxelise(self, points: PointBatch) -> tuple[torch.Tensor, Sites, torch.Tensor, torch.Tensor]:
        """(site features [V, C_in], level-0 sites, inverse [N] point -> site, site offsets [B])."""
        cfg = self.config
        counts = sample_counts(points, cfg.in_channels, "SparseUNet")
        feat = apply_mask_token(points.feat, points, self.mask_token, "SparseUNet")  # [N, C_in]
        batch, b = points.batch, len(counts)
        grid = grid_coordinates(points, b, cfg.grid_size)  # [N, 3]
        if points.grid_coord is not None:
            grid = grid - ((grid.amin(0) >> N_LEVELS) << N_LEVELS)  # >= 0, every level's cells kept
        side = int(grid.max()) + 1
        if b * side**3 >= 2**63:
            raise ValueError(f"SparseUNet: grid extent {side} voxels per axis is too large; raise grid_size")
        key = ((batch * side + grid[:, 0]) * side + grid[:, 1]) * side + grid[:, 2]  # [N]
        site_key, inverse = torch.unique(key, sorted=True, return_inverse=True)  # [V], [N]
        v = site_key.shape[0]
        site_grid = torch.stack([site_key // side**2 % side, site_key // side % side, site_key % side], 1)  # [V, 3]
        site_batch = site_key // side**3  # [V], sorted
        site_offset = torch.searchsorted(site_batch, torch.arange(b, device=site_batch.device), right=True)  # [B]
        site_feat = segment_mean(feat, inverse, v, check=False)  # [V, C_in]
        return site_feat, Sites(site_grid, site_batch, (b, side - 1)), inverse, site_offset

    def _check_level(self, levels: list[Sites]) -> None:
        """Refuse a level BatchNorm cannot normalise in training (one voxel in all), naming the voxel counts."""
        if not self.training or len(levels[-1].grid) >= 2:
            return
        level = len(levels) - 1
        counts = ", ".join(str(len(s.grid)) for s in levels)
        raise ValueError(
            f"SparseUNet: level {level} (grid {self.config.grid_size * 2**level:g} m) has {len(levels[-1].grid)} "
            f"voxel over the {levels[0].bounds[0]} sample(s) of the batch (voxels at levels 0..{level}: {counts}); "
            f"BatchNorm needs at least 2 to train. The batch spans too few voxels to down-sample {N_LEVELS} times: "
            "feed larger views or more of them, or lower grid_size"
        )

    def memory(self, points: float, grad: bool):
        from pcdag.graphs.memory import LEVEL_RATIOS
        from pcdag.nodes.backbones.spunet.memory import unet_memory

        return unet_memory(self.config, points, grad, LEVEL_RATIOS)


def count_parameters(config: SparseUNetConfig) -> int:
    """Parameters of the backbone for ``config``, counted on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        module = SparseUNetModule(attrs.evolve(config, backend="torch"))
    return sum(p.numel() for p in module.parameters())
