"""RandomScale: scale the cloud about the origin by a random factor (one for all axes, or one per axis)."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.node import CloudTransform, FieldEffect, effect
from pcdag.graphs.params import ParamError, in_range, of_type, pair, param
from pcdag.graphs.registry import register


def positive_pair():
    """``pair(0, None)`` that also refuses 0: a scale factor must be strictly positive."""
    base = pair(0.0, None)

    def check(inst: Any, a: attrs.Attribute, value: Any) -> None:
        base(inst, a, value)
        if value[0] <= 0:
            raise ParamError(f"{a.name} = {value!r}: scale factors must be > 0")

    check.allowed = "[low, high] within (0, inf)"  # type: ignore[attr-defined]
    return check


@register
class RandomScale(CloudTransform):
    """With probability p, multiply coordinates by a factor drawn uniformly from a range (per axis if anisotropic).

    Under an anisotropic scale ``S`` normals transform by ``S^-1`` and are renormalised, so they stay
    perpendicular to the scaled surface; an isotropic scale leaves them unchanged.
    """

    role = "augment"
    version = 1

    @attrs.frozen
    class Params:
        scale: list = param([0.9, 1.1], positive_pair(), doc="uniform range of the scale factor")
        anisotropic: bool = param(False, of_type(bool), doc="draw an independent factor per axis")
        p: float = param(1.0, in_range(0.0, 1.0), doc="probability of scaling")

    def fields(self) -> FieldEffect:
        return effect(reads=["coord"], optional_reads=["normal"], writes=["coord"])

    def apply(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        if rng.random() >= self.params.p:
            return cloud
        factor = rng.uniform(*self.params.scale, size=3 if self.params.anisotropic else 1)  # [3] or [1]
        cloud["coord"] = (cloud["coord"].astype(np.float64) * factor).astype(np.float32)
        if self.params.anisotropic and "normal" in cloud:
            normal = cloud["normal"].astype(np.float64) / factor  # [N, 3] inverse-transpose of diag(factor)
            norm = np.linalg.norm(normal, axis=1, keepdims=True)  # [N, 1]
            cloud["normal"] = (normal / np.where(norm > 0, norm, 1.0)).astype(np.float32)
        return cloud
