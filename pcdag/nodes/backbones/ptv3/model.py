"""Point Transformer V3, the Sonata variant (spec C; LAM3C paper Table 5): a five-stage serialised transformer.

    points --stem: Linear(in -> C0) -> LN -> GELU, masked points -> mask token
           --stage 0: blocks                                  level 0, the input points
           --stage s = 1..4: GridPooling (grid //= 2), blocks level s
    encoder:          up-cast from level 4 to ``upcast_level`` u: parent features ++ child features[inverse]
                      -> [M_u, sum(enc_channels[u:])]   (pre-training: u = 2, Base 1088, Large 1536)
    encoder-decoder:  unpool 4 -> 0 with decoder blocks -> [N, dec_channels[0]]   (fine-tuning)

Block ``i`` of a stage attends along serialisation order ``i mod len(orders)``; with ``shuffle_orders`` the orders
are re-drawn (torch's global RNG) at every serialisation, in train and eval mode alike, as the reference does.
Drop path rises linearly 0 -> ``drop_path`` over the encoder blocks and is off in ``eval()``.

``checkpoint`` (activation checkpointing; training mode with grad on, else blocks run plainly): backward keeps only
each block's input [N, C] and runs the block's forward again. Base, one 20k-point room, CPU float32, 1 thread:
243 -> 13 kB saved for backward per input point, forward + backward 39 -> 51 s (+31 %).

Grid coordinates, when the batch has none: ``floor((coord - min of the sample) / grid_size)``, per sample so a
view's voxels do not depend on the other views of the batch (the reference subtracts the minimum of the whole
concatenated batch). Pooled ``coord`` / ``origin_coord`` are means of the children of each cell, level by level
(the reference's mean of means), so at level 2 they are not the plain mean of the input points.
"""

from __future__ import annotations

import contextlib

import attrs
import torch
import torch.utils.checkpoint
from torch import nn
from torch.nn.attention import sdpa_kernel

from pcdag.graphs.batch import Encoded, PointBatch
from pcdag.graphs.memory import LEVEL_RATIOS, NodeMemory
from pcdag.nodes.backbones.ptv3.attention import SDPA_BACKENDS
from pcdag.nodes.backbones.ptv3.config import N_STAGES, PTv3Config
from pcdag.nodes.backbones.ptv3.layers import Block, GridPooling, GridUnpooling, Level, make_level
from pcdag.nodes.backbones.ptv3.memory import encoder_memory
from pcdag.ops.backbone_input import apply_mask_token, grid_coordinates, sample_counts


class Stage(nn.Module):
    """One encoder stage (``down``: pooling, except stage 0) or decoder level (``up``: unpooling), then blocks.

    ``checkpoint``: in training mode with grad enabled each block runs under activation checkpointing.
    """

    def __init__(
        self,
        blocks: list[Block],
        down: GridPooling | None = None,
        up: GridUnpooling | None = None,
        checkpoint: bool = False,
    ) -> None:
        super().__init__()
        self.down, self.up = down, up
        self.blocks = nn.ModuleList(blocks)
        self.checkpoint = bool(checkpoint)

    def run_blocks(self, level: Level, n_orders: int) -> torch.Tensor:
        feat = level.feat  # [N, C]
        recompute = self.checkpoint and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            if recompute:
                # non-reentrant: ``level`` (not a tensor) passes through; the default preserve_rng_state=True
                # replays drop path's random rows on recompute
                feat = torch.utils.checkpoint.checkpoint(
                    block, feat, level, i % n_orders, use_reentrant=False, context_fn=_recompute_context
                )
            else:
                feat = block(feat, level, i % n_orders)
        return feat


def _recompute_context() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
    """Checkpoint contexts (forward, recompute): the recompute runs in backward, outside the forward's
    ``sdpa_kernel``, so it selects the same attention backends again (else e.g. cuDNN could be picked)."""
    return contextlib.nullcontext(), sdpa_kernel(SDPA_BACKENDS)


class PointTransformerV3Module(nn.Module):
    """``PointBatch -> Encoded``: see the module docstring."""

    def __init__(self, config: PTv3Config) -> None:
        super().__init__()
        self.config = cfg = config
        self.out_channels = cfg.out_channels
        c0 = cfg.enc_channels[0]
        self.stem = nn.Sequential()
        self.stem.add_module("linear", nn.Linear(cfg.in_channels, c0))
        self.stem.add_module("norm", nn.LayerNorm(c0))
        self.stem.add_module("act", nn.GELU())
        self.mask_token = nn.Parameter(torch.zeros(1, c0)) if cfg.mask_token else None
        rates = torch.linspace(0, cfg.drop_path, sum(cfg.enc_depths), device="cpu").tolist()
        self.stages = nn.ModuleList()
        for s in range(N_STAGES):
            ch, first = cfg.enc_channels[s], sum(cfg.enc_depths[:s])
            blocks = [
                Block(ch, cfg.enc_heads[s], cfg.enc_patch_size[s], cfg.mlp_ratio, rates[first + i], cfg.backend)
                for i in range(cfg.enc_depths[s])
            ]
            down = GridPooling(cfg.enc_channels[s - 1], ch) if s else None
            self.stages.append(Stage(blocks, down=down, checkpoint=cfg.checkpoint))
        self.decoder = self._build_decoder() if cfg.mode == "encoder-decoder" else None
        self.apply(_init_weights)

    def _build_decoder(self) -> nn.ModuleList:
        cfg = self.config
        rates = torch.linspace(0, cfg.drop_path, sum(cfg.dec_depths), device="cpu").tolist()
        above = list(cfg.dec_channels) + [cfg.enc_channels[-1]]
        decoder = nn.ModuleList()
        for s in range(N_STAGES - 1):  # decoder[s] makes level s; it runs from s = 3 down to 0
            ch, first = cfg.dec_channels[s], sum(cfg.dec_depths[:s])
            stage_rates = rates[first : first + cfg.dec_depths[s]][::-1]
            blocks = [
                Block(ch, cfg.dec_heads[s], cfg.dec_patch_size[s], cfg.mlp_ratio, rate, cfg.backend)
                for rate in stage_rates
            ]
            up = GridUnpooling(above[s + 1], cfg.enc_channels[s], ch)
            decoder.append(Stage(blocks, up=up, checkpoint=cfg.checkpoint))
        return decoder

    def forward(self, points: PointBatch) -> Encoded:
        with sdpa_kernel(SDPA_BACKENDS):  # once per forward, not per attention call (host time)
            return self._forward(points)

    def _forward(self, points: PointBatch) -> Encoded:
        cfg, n_orders = self.config, len(self.config.orders)
        levels = [self._input_level(points)]
        for s, stage in enumerate(self.stages):
            if s:
                levels.append(stage.down(levels[-1], cfg.orders, cfg.shuffle_orders))
            levels[-1].feat = stage.run_blocks(levels[-1], n_orders)
        if self.decoder is not None:
            return self._decode(levels)
        return self._upcast(levels, cfg.upcast_level)

    def _input_level(self, points: PointBatch) -> Level:
        cfg = self.config
        counts = sample_counts(points, cfg.in_channels, "PointTransformerV3")  # one host read: the level keeps them
        x = apply_mask_token(self.stem(points.feat), points, self.mask_token, "PointTransformerV3")  # [N, C0]
        grid = grid_coordinates(points, len(counts), cfg.grid_size)  # [N, 3]
        coord, batch, offset = points.coord, points.batch, points.offset.to(torch.int64)
        return make_level(
            x, coord, points.origin_coord, grid, batch, offset, cfg.orders, cfg.shuffle_orders, counts=counts
        )

    def _upcast(self, levels: list[Level], level: int) -> Encoded:
        """Walk up from the deepest level to ``level``: parent features ++ child features[inverse]."""
        feat = levels[-1].feat
        for s in range(len(levels) - 1, level, -1):
            feat = torch.cat([levels[s - 1].feat, feat[levels[s].inverse]], dim=1)  # [N_{s-1}, C_{s-1} + ...]
        inverse = torch.arange(levels[0].batch.shape[0], device=feat.device)  # [N] input point -> level row
        for s in range(1, level + 1):
            inverse = levels[s].inverse[inverse]
        out = levels[level]
        return Encoded(feat, out.coord, out.origin_coord, out.offset, level=level, extra={"inverse": inverse})

    def _decode(self, levels: list[Level]) -> Encoded:
        feat, n_orders = levels[-1].feat, len(self.config.orders)
        for s in range(N_STAGES - 2, -1, -1):
            stage, level = self.decoder[s], levels[s]
            level.feat = stage.up(feat, level.feat, levels[s + 1].inverse)  # [N_s, dec_channels[s]]
            feat = stage.run_blocks(level, n_orders)
        top = levels[0]
        inverse = torch.arange(top.batch.shape[0], device=feat.device)
        return Encoded(feat, top.coord, top.origin_coord, top.offset, level=0, extra={"inverse": inverse})

    def layer_ids(self) -> dict[str, tuple[int, int]]:
        """``{parameter name: (layer, n_layers)}`` numbering the encoder blocks 0.. in depth order."""
        total, ids, layer = sum(self.config.enc_depths), {}, 0
        for s, stage in enumerate(self.stages):
            for i, block in enumerate(stage.blocks):
                ids.update({f"stages.{s}.blocks.{i}.{name}": (layer, total) for name, _ in block.named_parameters()})
                layer += 1
        return ids

    def memory(self, points: float, grad: bool) -> tuple[NodeMemory, float, int]:
        """The backbone protocol's memory model (``ptv3.memory``) at the expected points per level
        (``LEVEL_RATIOS``): ``(memory, output rows, output channels)`` of one forward over ``points`` points."""
        return encoder_memory(self.config, points, grad, LEVEL_RATIOS)

    block_lr_scale: float = 1.0  # set by the node: learning-rate factor of every attention block

    def lr_scales(self) -> dict[str, float]:
        """``{parameter name: lr factor}``: ``block_lr_scale`` for the parameters of every encoder/decoder block
        (spec E's fine-tuning: blocks at 2e-4 when the rest is at 2e-3)."""
        if self.block_lr_scale == 1.0:
            return {}
        return {name: self.block_lr_scale for name, _ in self.named_parameters() if ".blocks." in name}


def _init_weights(module: nn.Module) -> None:
    """The reference's init: linear and conv weights trunc-normal(0.02), biases 0; LayerNorm (1, 0)."""
    weight = getattr(module, "weight", None)
    if isinstance(module, nn.LayerNorm) or not isinstance(weight, torch.Tensor) or weight.ndim < 2:
        return
    nn.init.trunc_normal_(weight, std=0.02)
    if isinstance(getattr(module, "bias", None), torch.Tensor):
        nn.init.zeros_(module.bias)


def count_parameters(config: PTv3Config) -> int:
    """Parameters of the backbone for ``config``, counted on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        module = PointTransformerV3Module(attrs.evolve(config, backend="torch"))
    return sum(p.numel() for p in module.parameters())
