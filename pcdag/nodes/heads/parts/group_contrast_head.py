"""The module of ``GroupContrastHead``: projector g, point projector h, predictor h′ and unit prototypes S.

    g:  feat [n, C] → Linear(C→hidden) → GELU → Linear(hidden→embed)             segment embeddings (pooled)
    h:  feat [n, C] → Linear(C→hidden) → GELU → Linear(hidden→point_embed)       point embeddings (contrast)
    h′: [n, point_embed] → Linear → GELU → Linear → [n, point_embed]             student only (or absent)
    S:  ``prototype.weight`` [prototypes, embed], rows normalised in ``prototype_logits`` (weight norm, g = 1)

The teacher is an ``EMATeacher`` of this whole module (its predictor copy is followed but never used).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mlp(c_in: int, hidden: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(c_in, hidden), nn.GELU(), nn.Linear(hidden, c_out))


class GroupContrastHeadModule(nn.Module):
    """Projector, point projector, optional predictor and prototypes (module doc)."""

    def __init__(self, in_channels: int, hidden: int, embed: int, point_embed: int, prototypes: int, predictor: bool):
        super().__init__()
        self.projector = mlp(in_channels, hidden, embed)
        self.point_projector = mlp(in_channels, hidden, point_embed)
        self.predictor = mlp(point_embed, hidden, point_embed) if predictor else None
        self.prototype = nn.Linear(embed, prototypes, bias=False)
        self.out_channels = prototypes

    def prototype_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Cosines ``[P, prototypes]`` of unit embeddings ``z`` ``[P, embed]`` to the unit prototypes."""
        return z @ F.normalize(self.prototype.weight, dim=1).T

    def points(self, feat: torch.Tensor, predict: bool) -> torch.Tensor:
        """Unit point embeddings ``[n, point_embed]``: h (the teacher), or h′∘h when ``predict`` and a predictor."""
        v = self.point_projector(feat)
        if predict and self.predictor is not None:
            v = self.predictor(v)
        return F.normalize(v, dim=1)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """Prototype logits of the projected point features ``[n, prototypes]`` (without segment pooling)."""
        return self.prototype_logits(F.normalize(self.projector(feat), dim=1))
