"""NormalizeColor: convert uint8 RGB (0..255) to float32 in [0, 1] or [-1, 1]."""

from __future__ import annotations

import attrs
import numpy as np

from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.graphs.node import CloudTransform, FieldEffect, effect
from pcdag.graphs.params import one_of, param
from pcdag.graphs.registry import register


@register
class NormalizeColor(CloudTransform):
    """Map uint8 colour to float32: ``c / 255`` (unit, [0, 1]) or ``c / 127.5 - 1`` (symmetric, [-1, 1])."""

    role = "augment"
    version = 1

    @attrs.frozen
    class Params:
        scale: str = param("unit", one_of("unit", "symmetric"), doc="unit: [0, 1]; symmetric: [-1, 1]")

    def fields(self) -> FieldEffect:
        return effect(reads=["color"], writes=["color"])

    def apply(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        color = cloud["color"]  # [N, 3]
        if color.dtype != np.uint8:
            where = f"NormalizeColor(scale={self.params.scale!r}) on scene {cloud.meta.get('scene', '?')!r}"
            if color.dtype.kind == "f":
                raise CloudError(
                    f"{where}: colour is already {color.dtype}, so it was normalised before; "
                    f"remove the second NormalizeColor (normalising twice squashes colours toward 0)"
                )
            raise CloudError(f"{where}: colour has dtype {color.dtype}, expected uint8 0..255")
        value = color.astype(np.float32)  # [N, 3]
        if self.params.scale == "unit":
            cloud["color"] = value / np.float32(255.0)
        else:
            cloud["color"] = value / np.float32(127.5) - np.float32(1.0)
        return cloud
