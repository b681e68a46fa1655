"""Oversegment: Felzenszwalb–Huttenlocher superpoints of a scan from its normals (ScanNet's segmentation settings).

Each point is joined to its ``k`` nearest neighbours; an edge weighs the normal dissimilarity ``1 - n_u . n_v``
(squared across convex folds, as ScanNet's segmentator does), plus ``color_weight`` times the RGB distance scaled to
[0, 1] when asked. The graph is cut by Felzenszwalb–Huttenlocher with threshold ``k_thresh``, then every segment
smaller than ``min_points`` is merged into a neighbour (``pcdag/ops/felzenszwalb.py``). The result is the int64
``superpoint`` field, ids ``0..S-1`` ordered by each segment's lexicographically lowest point, the same partition
whatever the order of the points. Normals come from upstream (``EstimateNormals``), oriented consistently (toward
the centroid for indoor scans): the convexity test reads their sign.

``k``: a triangle mesh's vertex has about 6 neighbours; 8 nearest neighbours give each point about 9 undirected
edges on a 50k-point ScanNet scan, enough to connect thin parts without bridging nearby surfaces. No pcdag source
yields faces yet; ``pcdag.ops.felzenszwalb.mesh_edges`` makes the graph of a mesh when one does.

Facts in ``meta["report"]["Oversegment"]``: ``segments``, ``median_points`` (points of the median segment) and
``edges``; the seconds are timed by the stage program (``meta["report"]["seconds"]``).
"""

from __future__ import annotations

import attrs
import numpy as np

from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.graphs.node import CloudTransform, FieldEffect, effect
from pcdag.graphs.params import in_range, integer, param
from pcdag.graphs.ports import Placement
from pcdag.graphs.registry import register


@register
class Oversegment(CloudTransform):
    """Felzenszwalb–Huttenlocher superpoints on the kNN graph weighted by normal (and colour) dissimilarity."""

    role = "geometry"
    version = 1
    placements = (Placement.OFFLINE,)  # a sequential merge over the whole scene: once per scene, stored

    @attrs.frozen
    class Params:
        k_thresh: float = param(
            0.01,
            in_range(0.0, 100.0, lo_open=True),
            doc="merge threshold k, in edge-weight units (1 - cos of the normal angle): larger, fewer segments",
        )
        min_points: int = param(20, integer(1, 1_000_000), unit="points", doc="smaller segments join a neighbour")
        k: int = param(8, integer(1, 64), unit="neighbours", doc="nearest neighbours joined to each point")
        color_weight: float = param(
            0.0, in_range(0.0, 100.0), doc="weight of the RGB distance (0..1) added to the normal term; 0: off"
        )

    def fields(self) -> FieldEffect:
        return effect(reads=["coord", "normal"], optional_reads=["color"], writes=["superpoint"])

    def apply(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        from pcdag.ops.felzenszwalb import oversegment

        p = self.params
        scene = cloud.meta.get("scene", "?")
        where = f"Oversegment(k_thresh={p.k_thresh}, min_points={p.min_points}) on scene {scene!r}"
        normal = cloud["normal"]  # [N, 3]
        color = None
        if p.color_weight > 0:
            if "color" not in cloud.fields:
                raise CloudError(f"{where}: color_weight={p.color_weight} needs a color field; the cloud has none")
            color = cloud["color"]
            if color.dtype != np.uint8:
                raise CloudError(
                    f"{where}: color_weight needs uint8 colours 0..255, got {color.dtype}; place Oversegment "
                    f"before NormalizeColor"
                )
        if len(cloud) == 0:
            raise CloudError(f"{where}: the cloud has no points")
        coord = cloud["coord"]
        if not (np.isfinite(coord).all() and np.isfinite(normal).all()):
            raise CloudError(f"{where}: coordinates and normals must be finite")
        label = oversegment(
            coord, normal, k=p.k, k_thresh=p.k_thresh, min_points=p.min_points, color=color, color_weight=p.color_weight
        )
        cloud["superpoint"] = label
        sizes = np.bincount(label)  # [S]
        facts = {"segments": len(sizes), "median_points": float(np.median(sizes))}
        cloud.meta.setdefault("report", {})["Oversegment"] = facts
        return cloud
