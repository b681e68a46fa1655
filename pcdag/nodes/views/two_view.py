"""TwoViewGenerator: two augmented views of one scene with their overlap, for segment-level contrast (GroupContrast).

The MSC / GroupContrast loader pipeline (``shared/spec/groupcontrast.md``; [C] = MSC's released configuration,
[I] = our decision), on a grid-sampled scene with uint8 ``color``, ``normal`` and ``superpoint``:

1. shared by both views: centre shift (``view_transform.centre_shift``) and a scale U[scale] [C];
2. per view: a sphere crop, the ``crop`` share of the scene's points nearest a random point (at most
   ``max_points``) [C], the second view's centre a random point of the first view [I: so that views capped at
   ``max_points`` still overlap; MSC's 60 % crops of whole scenes always do]; centre shift, rotation about z
   U[rotate_z_angle] and tilts about x and y U[rotate_xy_angle] (each with its probability, 1 by default),
   flips of x and of y (p 0.5 each), jitter σ 0.005 clipped at 0.02: ``view_transform.transform_view``
   without its scale and elastic steps;
3. per view colour: brightness / contrast / saturation / hue jitter applied together with probability
   ``color_jitter_p`` (one coin, as MSC) [C], then Gaussian colour noise N(0, ``color_noise_std``) per point and
   channel with probability ``color_noise_p``, colour / 255;
4. the overlap (``parts/overlap.py``): pairs matched on ``origin_coord`` within ``radius`` (or by scene row,
   ``overlap: index``), the overlap segments re-indexed 0..P-1, ``samples`` sampled pairs (the same physical point
   in both views) [C, I].

The voxelisation (0.02 m) is the upstream ``GridSample``, once per scene, so both views are subsets of the same
grid points [I]: ``overlap: index`` then matches exactly, ``radius`` (the default, MSC's rule) within 3 cm.
Per view: ``coord`` [n, 3], ``origin_coord`` [n, 3], ``feat`` [n, 9] (coord, colour, normal; ``features:
color_normal`` gives the 6 channels of the spec), ``superpoint``, ``overlap_segment`` (-1..P-1) and ``pair``
(-1..K-1) [n] int64, the last two declared as scene-local ids (``pcdag.graphs.batch``) so that collating several
scenes keeps them unique. A scene without any overlap gives P = K = 0 (the losses handle it and say so).
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from pcdag.graphs.batch import ViewSample
from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.graphs.memory import ViewPoints
from pcdag.graphs.node import FieldEffect, In, Node, Out, effect
from pcdag.graphs.params import in_range, integer, one_of, pair, param
from pcdag.graphs.ports import MULTI_VIEW_BATCH, POINT_CLOUD, Placement
from pcdag.graphs.registry import register
from pcdag.nodes.augment.scale import positive_pair
from pcdag.nodes.views.parts.colour import ColourJitter, apply_colour
from pcdag.nodes.views.parts.eval_view import eval_sample
from pcdag.nodes.views.parts.overlap import OVERLAP_METHODS, find_overlap
from pcdag.nodes.views.parts.view_transform import ViewGeometry, centre_shift, nearest_rows, transform_view

PROB = in_range(0.0, 1.0)
ANGLE = pair(-2 * np.pi, 2 * np.pi)
FEATURES = {"coord_color_normal": slice(0, 9), "color_normal": slice(3, 9)}


@register
class TwoViewGenerator(Node):
    """Two augmented sphere crops of one scene with their overlap segments and sampled point pairs (module doc)."""

    role = "views"
    placements = (Placement.LOADER,)
    per_item = True
    version = 1
    inputs = {"cloud": In(POINT_CLOUD, doc="one grid-sampled scene with coord, color (uint8), normal, superpoint")}
    outputs = {"views": Out(MULTI_VIEW_BATCH, doc="a ViewSample of 2 global views; collate_views batches them")}

    @attrs.frozen
    class Params:
        crop: float = param(0.6, in_range(0.0, 1.0, lo_open=True), doc="share of the scene's points per view")
        max_points: int = param(65536, integer(1, None), doc="cap of the points per view")
        min_points: int = param(1024, integer(1, None), doc="smaller scenes are refused (the loader skips them)")
        scale: list = param([0.9, 1.1], positive_pair(), doc="isotropic scale range, shared by both views")
        rotate_z_p: float = param(1.0, PROB, doc="probability of the z rotation")
        rotate_z_angle: list = param([-np.pi, np.pi], ANGLE, unit="rad", doc="z rotation angle range")
        rotate_xy_p: float = param(1.0, PROB, doc="probability of each x and y tilt")
        rotate_xy_angle: list = param([-np.pi / 64, np.pi / 64], ANGLE, unit="rad", doc="x / y tilt range")
        flip_p: float = param(0.5, PROB, doc="probability of negating x, and of negating y")
        jitter_sigma: float = param(0.005, in_range(0.0, None), unit="m", doc="coordinate noise std")
        jitter_clip: float = param(0.02, in_range(0.0, None), unit="m", doc="coordinate noise bound")
        brightness: float = param(0.4, in_range(0.0, None), doc="colour jitter: factor U[1 - b, 1 + b]")
        contrast: float = param(0.4, in_range(0.0, None), doc="colour jitter: blend with the mean grey")
        saturation: float = param(0.2, in_range(0.0, None), doc="colour jitter: blend with the point's grey")
        hue: float = param(0.02, in_range(0.0, 0.5), doc="colour jitter: hue shift U[-h, h] (turns)")
        color_jitter_p: float = param(0.8, PROB, doc="probability of the colour jitter (all four together)")
        color_noise_std: float = param(0.05, in_range(0.0, None), doc="Gaussian colour noise std (colour 0..1)")
        color_noise_p: float = param(0.95, PROB, doc="probability of the Gaussian colour noise")
        features: str = param("coord_color_normal", one_of(*FEATURES), doc="input features: 9 or 6 channels")
        overlap: str = param("radius", one_of(*OVERLAP_METHODS), doc="match on origin_coord, or on scene rows")
        radius: float = param(0.03, in_range(0.0, 10.0, lo_open=True), unit="m", doc="overlap matching radius")
        samples: int = param(2048, integer(1, None), doc="sampled overlap pairs per scene (N)")

    def __post_init__(self) -> None:
        p = self.params
        self.jitter = ColourJitter(p.brightness, p.contrast, p.saturation, p.hue, 1.0)
        self.geometry = ViewGeometry(
            (1.0, 1.0), p.rotate_z_p, tuple(p.rotate_z_angle), p.rotate_xy_p, tuple(p.rotate_xy_angle),
            p.flip_p, p.jitter_sigma, p.jitter_clip, 0.0, (),
        )  # fmt: skip

    def fields(self) -> FieldEffect:
        return effect(reads=["coord", "color", "normal", "superpoint"], optional_reads=["origin_coord"])

    def plan_notes(self) -> list[str]:
        p = self.params
        match = f"within {p.radius} m on origin_coord" if p.overlap == "radius" else "by scene row"
        return [
            f"2 views of {p.crop:.0%} of the scene (≤ {p.max_points} points), {p.features}; overlap matched "
            f"{match}; {p.samples} sampled pairs per scene; scenes < {p.min_points} points are skipped"
        ]

    def view_points(self, scene_points: float) -> float:
        return min(float(np.floor(self.params.crop * scene_points)), float(self.params.max_points))

    def expected_points(self, scene_points: float) -> ViewPoints:
        return ViewPoints({"global": 2 * self.view_points(scene_points), "local": 0.0}, float(self.params.samples))

    def run(self, rng: np.random.Generator, **inputs: Any) -> dict[str, Any]:
        cloud: PointCloud = inputs["cloud"]
        where = f"TwoViewGenerator on scene {cloud.meta.get('scene', '?')!r}"
        n, p = len(cloud), self.params
        if n < p.min_points:
            raise CloudError(f"{where}: the scene has {n} points < min_points = {p.min_points}; the scene is skipped")
        missing = [f for f in ("color", "normal", "superpoint") if f not in cloud]
        if missing:
            raise CloudError(f"{where}: the scene has no {' or '.join(missing)} field (it has {sorted(cloud)})")
        if cloud["color"].dtype != np.uint8:
            raise CloudError(f"{where}: color is {cloud['color'].dtype}, expected uint8 0..255")
        return {"views": self._views(cloud, rng)}

    def _views(self, cloud: PointCloud, rng: np.random.Generator) -> ViewSample:
        p = self.params
        coord = cloud["coord"]  # [N, 3]
        origin = cloud.get("origin_coord", coord)  # [N, 3]
        xyz = np.ascontiguousarray(coord.T, dtype=np.float64)  # [3, N]
        xyz = (xyz - centre_shift(xyz)[:, None]) * rng.uniform(*p.scale)  # shared shift and scale
        color = np.ascontiguousarray(cloud["color"].T)  # [3, N] uint8
        normal = np.ascontiguousarray(cloud["normal"].T)  # [3, N]
        superpoint = np.asarray(cloud["superpoint"], dtype=np.int64)  # [N]
        k = max(1, int(self.view_points(len(coord))))
        rows, views = [], []
        for v in range(2):
            centre = int(rng.integers(len(coord))) if v == 0 else int(rows[0][rng.integers(len(rows[0]))])
            r = nearest_rows(xyz, centre, k)  # [k] ascending scene rows
            view_xyz, view_normal = transform_view(xyz.take(r, 1), normal.take(r, 1), self.geometry, rng)
            feat = np.concatenate([view_xyz, self._colour(color.take(r, 1), rng), view_normal]).T  # [k, 9]
            rows.append(r)
            views.append(
                {
                    "coord": np.ascontiguousarray(feat[:, :3]),
                    "origin_coord": origin.take(r, 0).astype(np.float32, copy=False),
                    "feat": np.ascontiguousarray(feat[:, FEATURES[p.features]]),
                    "superpoint": superpoint.take(r),
                }
            )
        found = find_overlap(
            (rows[0], rows[1]),
            (views[0]["origin_coord"], views[1]["origin_coord"]),
            (views[0]["superpoint"], views[1]["superpoint"]),
            p.samples, rng, p.overlap, p.radius,
        )  # fmt: skip
        for v, view in enumerate(views):
            view["overlap_segment"], view["pair"] = found.segment[v], found.pair[v]
        meta = {
            "scene_ids": {"overlap_segment": found.segments, "pair": found.pairs},
            "overlap": {"segments": found.segments, "pairs": found.pairs, "points": list(found.overlap_points)},
            "n_points": len(coord),
        }
        return ViewSample(str(cloud.meta.get("scene", "?")), views, [], meta)

    def _colour(self, colour: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Jitter (one coin for all four), Gaussian noise, / 255: ``[3, k]`` uint8 -> float32 in [0, 1]."""
        p = self.params
        ops = self.jitter.draw(rng) if rng.random() < p.color_jitter_p else []
        rgb = apply_colour(colour, ops, None)  # [3, k] in [0, 1]
        if p.color_noise_std > 0 and rng.random() < p.color_noise_p:
            rgb = np.clip(rgb + rng.normal(0.0, p.color_noise_std, rgb.shape).astype(np.float32), 0.0, 1.0)
        return rgb

    def eval_sample(self, cloud: PointCloud) -> ViewSample:
        """The un-augmented whole-scene view (``eval_view``) with this node's feature channels."""
        sample = eval_sample(cloud)
        for view in sample.global_views:
            view["feat"] = np.ascontiguousarray(view["feat"][:, FEATURES[self.params.features]])
        return sample
