"""GridSample: keep one point per occupied voxel of a regular grid (random in training, central in testing).

Voxels are ``floor(coord / grid_size)``, shifted so the lowest occupied voxel is ``(0, 0, 0)``; the shifted
integer coordinates are written to ``grid_coord`` (int32 ``[M, 3]``). The grid is aligned to the world origin, so
two scans of the same room voxelise consistently.

``mode="train"``: every occupied voxel keeps one uniformly random point (a fresh draw per call).
``mode="test"``: every voxel keeps the point nearest its centre (no randomness) and ``cloud.meta["inverse"]``
(int64 ``[N_in]``) maps every input point to the index of its voxel's kept point, so predictions on the sampled
cloud can be scattered back to the full-resolution scene.
"""

from __future__ import annotations

import attrs
import numpy as np

from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.graphs.node import CloudTransform, FieldEffect, effect
from pcdag.graphs.params import in_range, one_of, param
from pcdag.graphs.registry import register
from pcdag.ops.grid import nearest_centre_per_voxel, random_per_voxel, voxelize


@register
class GridSample(CloudTransform):
    """Keep one point per occupied voxel: a random one (train) or the one nearest the voxel centre (test)."""

    role = "geometry"
    version = 1

    @attrs.frozen
    class Params:
        grid_size: float = param(0.02, in_range(1e-4, 10.0, lo_open=True), unit="m", doc="voxel edge length")
        mode: str = param(
            "train", one_of("train", "test"), doc="train: random point per voxel; test: central point + inverse"
        )

    def fields(self) -> FieldEffect:
        return effect(reads=["coord"], writes=["grid_coord"])

    def apply(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        where = f"GridSample(grid_size={self.params.grid_size}) on scene {cloud.meta.get('scene', '?')!r}"
        if len(cloud) == 0:
            raise CloudError(f"{where}: the cloud has no points")
        grid, key, offset = voxelize(cloud["coord"], self.params.grid_size, where)
        previous = cloud.meta.pop("inverse", None)  # original point -> current point, from an earlier test mode
        if self.params.mode == "train":
            index = random_per_voxel(key, rng)  # a random sampling has no inverse: any earlier one is dropped
            cloud.select(index)
        else:
            index, inverse = nearest_centre_per_voxel(key, offset)
            cloud.select(index)
            # compose so the map still starts at the original points: original -> previous -> this sampling
            cloud.meta["inverse"] = (
                inverse if previous is None else np.where(previous >= 0, inverse[np.maximum(previous, 0)], -1)
            )
        cloud["grid_coord"] = grid[index].astype(np.int32)  # [M, 3]
        return cloud
