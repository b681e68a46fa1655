"""EstimateNormals: per-point unit normals from PCA of the k nearest neighbours.

The normal of point p is the eigenvector of the smallest eigenvalue of the covariance of its k nearest
neighbours (p included). Covariances are built and diagonalised in batches (``np.linalg.eigh`` on ``[C, 3, 3]``),
in chunks of points so memory stays bounded on million-point scenes. With ``orient="centroid"`` every normal is
flipped to point toward the cloud's centroid (a cheap, deterministic orientation for closed indoor scans).
"""

from __future__ import annotations

import attrs
import numpy as np

from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.graphs.node import CloudTransform, FieldEffect, effect
from pcdag.graphs.params import integer, one_of, param
from pcdag.graphs.registry import register
from pcdag.ops.normals import estimate_normals, orient_toward


@register
class EstimateNormals(CloudTransform):
    """Estimate unit normals by PCA over each point's k nearest neighbours, optionally oriented to the centroid."""

    role = "geometry"
    version = 1

    @attrs.frozen
    class Params:
        k: int = param(32, integer(3, 256), doc="neighbours per point (all points when the cloud has fewer)")
        orient: str = param("centroid", one_of("centroid", "none"), doc="flip normals toward the cloud centroid")

    def fields(self) -> FieldEffect:
        return effect(reads=["coord"], writes=["normal"])

    def apply(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        coord = cloud["coord"]  # [N, 3]
        n = len(coord)
        if n < 3:
            raise CloudError(
                f"EstimateNormals(k={self.params.k}) on scene {cloud.meta.get('scene', '?')!r}: "
                f"the cloud has {n} point(s); a normal needs at least 3"
            )
        normal = estimate_normals(coord, min(self.params.k, n))
        if self.params.orient == "centroid":
            orient_toward(normal, coord, coord.astype(np.float64).mean(axis=0))
        cloud["normal"] = normal
        return cloud
