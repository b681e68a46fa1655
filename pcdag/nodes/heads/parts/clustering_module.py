"""The torch module of ``ClusteringHead`` (``clustering_head.py`` describes it and its Pointcept state dict); kept
apart so that validating a graph does not import torch."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

_MAGNITUDE_KEYS = ("prototype.parametrizations.weight.original0", "prototype.weight_g")
_DIRECTION_KEYS = ("prototype.parametrizations.weight.original1", "prototype.weight_v")


class ClusteringHeadModule(nn.Module):
    """MLP → L2-normalised embedding → cosine logits against unit-norm prototypes."""

    def __init__(
        self, in_channels: int, hidden: int = 4096, embed: int = 256, prototypes: int = 4096, checkpoint: bool = False
    ) -> None:
        super().__init__()
        self.checkpoint = bool(checkpoint)
        self.mlp = nn.Sequential(nn.Linear(in_channels, hidden), nn.GELU(), nn.Linear(hidden, embed))
        self.prototype = nn.Linear(embed, prototypes, bias=False)  # rows normalised in forward
        for layer in (self.mlp[0], self.mlp[2]):
            nn.init.trunc_normal_(layer.weight, std=0.02)  # bounds ±2 (absolute), as timm's default
            nn.init.zeros_(layer.bias)

    @property
    def out_channels(self) -> int:
        return int(self.prototype.weight.shape[0])

    def embed(self, feat: torch.Tensor) -> torch.Tensor:
        """``[M, C]`` → unit embeddings ``[M, embed]`` (normalised in float32)."""
        if self.checkpoint and self.training and torch.is_grad_enabled():
            z = torch.utils.checkpoint.checkpoint(self.mlp, feat, use_reentrant=False)  # [M, embed]
        else:
            z = self.mlp(feat)  # [M, embed]
        return F.normalize(z.float(), dim=-1, eps=1e-12)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """``[M, C]`` → logits ``[M, prototypes]``: cosines between embeddings and prototypes."""
        prototypes = F.normalize(self.prototype.weight.float(), dim=1, eps=1e-12)  # [K, embed]
        return F.linear(self.embed(feat), prototypes)  # [M, K]

    @staticmethod
    def pointcept_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rename a Pointcept ``OnlineCluster`` state dict to this module's names (see the module docstring)."""
        out: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            if key in _MAGNITUDE_KEYS:
                if not torch.allclose(value.float(), torch.ones_like(value, dtype=torch.float32)):
                    raise ValueError(f"{key}: prototype magnitudes are not all 1; this head fixes them at 1")
                continue
            out["prototype.weight" if key in _DIRECTION_KEYS else key] = value
        return out
