"""MultiViewGenerator: the global and local views of one scene for Sonata / LAM3C pre-training (spec section A).

Per scene, in a loader worker: crop ``n_global`` global and ``n_local`` local views by k nearest neighbours (an
exact O(N) selection per view, no sorting), colour them, augment each view's geometry and build its 9 input features.
The views of several scenes are batched by ``pcdag.graphs.batch.collate_views``; ``plot_views`` draws one sample.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from pcdag.graphs.batch import ViewSample
from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.graphs.memory import ViewPoints
from pcdag.graphs.node import FieldEffect, In, Node, Out, effect
from pcdag.graphs.params import ParamError, in_range, integer, pair, param, subset_of
from pcdag.graphs.ports import MULTI_VIEW_BATCH, POINT_CLOUD, Placement
from pcdag.graphs.registry import register
from pcdag.nodes.augment.scale import positive_pair
from pcdag.nodes.views.parts.colour import ChromaticTranslation, ColourJitter, colour_transform
from pcdag.nodes.views.parts.elastic import elastic_passes
from pcdag.nodes.views.parts.eval_view import eval_sample
from pcdag.nodes.views.parts.view_transform import ViewGeometry, plan_crops, transform_view

PROB = in_range(0.0, 1.0)
ANGLE = pair(-2 * np.pi, 2 * np.pi)


def fraction_pair():
    """Validator: ``[lo, hi]`` with 0 < lo <= hi <= 1 (a share of the scene's point budget)."""
    base = pair(0.0, 1.0)

    def check(inst: Any, a: attrs.Attribute, value: Any) -> None:
        base(inst, a, value)
        if value[0] <= 0:
            raise ParamError(f"{a.name} = {value!r}: a view must keep a positive share of the points")

    check.allowed = "[low, high] within (0, 1]"  # type: ignore[attr-defined]
    return check


@register
class MultiViewGenerator(Node):
    """Make the 2 global + 4 local augmented views of one scene (Sonata / LAM3C pre-training), as a ``ViewSample``.

    Follows the reference pipeline (spec section A) on a grid-sampled scene with ``coord``, uint8 ``color`` and
    ``normal`` (``origin_coord`` defaults to ``coord``). With M = min(max_points, N):

    - one colour transform (jitter, chromatic translation, / 255) of the whole scene, shared by the global views;
    - major global view: the ⌊U(global_size)·M⌋ nearest points of a random point; the other global views are
      centred on random major-view points; local views (⌊U(local_size)·M⌋ points, uncoloured scene) on major-view
      points no earlier local view covers, then each gets its own colour transform;
    - per view: centre shift, scale, rotations, flips, jitter, elastic distortion (``view_transform``);
    - per view ``coord`` [n, 3], ``origin_coord`` [n, 3] (rows of the scene) and ``feat`` = (coord, colour,
      normal) [n, 9], all float32. ``meta["centres"]`` holds the scene rows of the view centres.

    Scenes with fewer than ``min_points`` points raise ``CloudError``. ``plot_views(sample, path)`` draws a sample.
    """

    eval_default = True  # its default views (coord, colour, normal) serve weights that carry no graph
    role = "views"
    placements = (Placement.LOADER,)
    per_item = True
    version = 1
    inputs = {"cloud": In(POINT_CLOUD, doc="one grid-sampled scene with coord, color (uint8) and normal")}
    outputs = {"views": Out(MULTI_VIEW_BATCH, doc="a ViewSample per scene; collate_views batches them")}

    @attrs.frozen
    class Params:
        n_global: int = param(2, integer(1, 16), doc="global views per scene (the first is the major view)")
        n_local: int = param(4, integer(0, 64), doc="local views per scene")
        global_size: list = param([0.4, 1.0], fraction_pair(), doc="global view share of min(max_points, N)")
        local_size: list = param([0.1, 0.4], fraction_pair(), doc="local view share of min(max_points, N)")
        max_points: int = param(65536, integer(1, None), doc="cap of the crop budget min(max_points, N)")
        min_points: int = param(1024, integer(1, None), doc="smaller scenes are refused (the loader skips them)")
        brightness: float = param(0.4, in_range(0.0, None), doc="colour jitter: factor U[1 - b, 1 + b]")
        contrast: float = param(0.4, in_range(0.0, None), doc="colour jitter: blend with the mean grey")
        saturation: float = param(0.2, in_range(0.0, None), doc="colour jitter: blend with the point's grey")
        hue: float = param(0.02, in_range(0.0, 0.5), doc="colour jitter: hue shift U[-h, h] (turns)")
        color_jitter_p: float = param(0.8, PROB, doc="probability of each colour-jitter operation")
        color_shift_p: float = param(0.95, PROB, doc="probability of the chromatic translation")
        color_shift_ratio: float = param(0.05, PROB, doc="chromatic translation: offset U[-r, r]·255 per channel")
        scale: list = param([0.9, 1.1], positive_pair(), doc="isotropic scale range")
        rotate_z_p: float = param(0.8, PROB, doc="probability of the z rotation (about the origin)")
        rotate_z_angle: list = param([-np.pi, np.pi], ANGLE, unit="rad", doc="z rotation angle range")
        rotate_xy_p: float = param(0.8, PROB, doc="probability of each x and y tilt (about the box centre)")
        rotate_xy_angle: list = param([-np.pi / 64, np.pi / 64], ANGLE, unit="rad", doc="x / y tilt range")
        flip_p: float = param(0.5, PROB, doc="probability of negating x, and of negating y")
        jitter_sigma: float = param(0.005, in_range(0.0, None), unit="m", doc="coordinate noise std")
        jitter_clip: float = param(0.02, in_range(0.0, None), unit="m", doc="coordinate noise bound")
        elastic_p: float = param(0.95, PROB, doc="probability of the elastic distortion")
        elastic_passes: list = param(
            [[0.2, 0.4], [0.8, 1.6]], elastic_passes(), unit="m", doc="[[granularity, magnitude], ...] in order"
        )
        labels: list = param([], subset_of("segment", "instance"), doc="per-point labels each view carries")

    def __post_init__(self) -> None:
        p = self.params
        budget = min(p.min_points, p.max_points)  # the smallest crop budget of a scene that is accepted
        for name in ("global_size", "local_size"):
            if int(getattr(p, name)[0] * budget) < 1:
                raise ParamError(
                    f"MultiViewGenerator: {name}[0] = {getattr(p, name)[0]} of min(min_points, max_points) = "
                    f"{budget} points is an empty view; raise min_points or {name}"
                )
        self.jitter = ColourJitter(p.brightness, p.contrast, p.saturation, p.hue, p.color_jitter_p)
        self.translation = ChromaticTranslation(p.color_shift_p, p.color_shift_ratio)
        self.geometry = ViewGeometry(
            tuple(p.scale), p.rotate_z_p, tuple(p.rotate_z_angle), p.rotate_xy_p, tuple(p.rotate_xy_angle),
            p.flip_p, p.jitter_sigma, p.jitter_clip, p.elastic_p, tuple(map(tuple, p.elastic_passes)),
        )  # fmt: skip

    def fields(self) -> FieldEffect:
        return effect(reads=["coord", "color", "normal", *self.params.labels], optional_reads=["origin_coord"])

    def plan_notes(self) -> list[str]:
        p = self.params
        return [
            f"{p.n_global} global ({p.global_size[0]:.0%}-{p.global_size[1]:.0%}) + {p.n_local} local "
            f"({p.local_size[0]:.0%}-{p.local_size[1]:.0%}) views of min({p.max_points}, N) points per scene; "
            f"9 features (coord, colour, normal); scenes < {p.min_points} points are skipped"
        ]

    def expected_points(self, scene_points: float) -> ViewPoints:
        """Mean points per view kind for one scene of ``scene_points`` points (view shares drawn uniformly)."""
        p, budget = self.params, min(float(scene_points), float(self.params.max_points))
        return ViewPoints(
            {
                "global": p.n_global * budget * (p.global_size[0] + p.global_size[1]) / 2,
                "local": p.n_local * budget * (p.local_size[0] + p.local_size[1]) / 2,
            }
        )

    def run(self, rng: np.random.Generator, **inputs: Any) -> dict[str, Any]:
        cloud: PointCloud = inputs["cloud"]
        where = f"MultiViewGenerator on scene {cloud.meta.get('scene', '?')!r}"
        n, p = len(cloud), self.params
        if n < p.min_points:
            smallest = int(min(p.local_size[0] if p.n_local else 1, p.global_size[0]) * min(n, p.max_points))
            raise CloudError(
                f"{where}: the scene has {n} points but a view needs a scene of at least min_points = "
                f"{p.min_points} (its smallest view could keep only {smallest} points); the scene is skipped"
            )
        missing = [f for f in ("color", "normal") if f not in cloud]
        if missing:
            raise CloudError(f"{where}: the scene has no {' or '.join(missing)} field (it has {sorted(cloud)})")
        if cloud["color"].dtype != np.uint8:
            raise CloudError(
                f"{where}: color is {cloud['color'].dtype}, expected uint8 0..255 (the generator normalises "
                f"colour itself, after its colour jitter; remove an earlier NormalizeColor)"
            )
        try:
            return {"views": self._views(cloud, rng)}
        except CloudError as exc:
            raise CloudError(f"{where}: {exc}") from exc

    def _views(self, cloud: PointCloud, rng: np.random.Generator) -> ViewSample:
        p = self.params
        coord = cloud["coord"]  # [N, 3]
        origin = cloud.get("origin_coord", coord)  # [N, 3] (the stored scene when absent)
        xyz = np.ascontiguousarray(coord.T)  # [3, N]: channel-first for fast row-wise arithmetic
        color = np.ascontiguousarray(cloud["color"].T)  # [3, N] uint8
        normal = np.ascontiguousarray(cloud["normal"].T)  # [3, N]
        shared = colour_transform(color, self.jitter, self.translation, rng)  # [3, N] in [0, 1], global views
        plan = plan_crops(xyz, rng, p.n_global, p.n_local, p.global_size, p.local_size, p.max_points)
        views = []
        for v, rows in enumerate(plan.index):
            view_xyz, view_normal = transform_view(xyz.take(rows, 1), normal.take(rows, 1), self.geometry, rng)
            if v < p.n_global:
                rgb = shared.take(rows, 1)  # [3, k]
            else:
                rgb = colour_transform(color.take(rows, 1), self.jitter, self.translation, rng)
            feat = np.concatenate([view_xyz, rgb, view_normal]).T  # [k, 9] float32 (a transposed view)
            views.append(
                {
                    "coord": np.ascontiguousarray(feat[:, :3]),
                    "origin_coord": origin.take(rows, 0).astype(np.float32, copy=False),
                    "feat": np.ascontiguousarray(feat),
                    **{name: cloud[name].take(rows).astype(np.int64) for name in p.labels},
                }
            )
        scene = str(cloud.meta.get("scene", "?"))
        return ViewSample(
            scene, views[: p.n_global], views[p.n_global :], {"centres": plan.centre, "n_points": len(xyz.T)}
        )

    def eval_sample(self, cloud: PointCloud) -> ViewSample:
        """The un-augmented whole-scene view evaluation uses (``eval_view``), with this node's ``labels``."""
        return eval_sample(cloud, self.params.labels)


def plot_views(sample: ViewSample, path: str | Path, max_points: int = 20_000) -> Path:
    """Top-down picture of a ``ViewSample``: all views over the scene (``origin_coord``, one colour per view, local
    views on top), then each view as augmented (its ``coord`` in its own colours, framed in the view's colour).
    Written atomically to ``path`` (the suffix picks png, pdf or svg); returns ``path``."""
    from matplotlib.figure import Figure

    views = [(f"global {i}{' (major)' if i == 0 else ''}", v) for i, v in enumerate(sample.global_views)]
    views += [(f"local {i}", v) for i, v in enumerate(sample.local_views)]
    cols = min(4, len(views) + 1)
    rows = -(-(len(views) + 1) // cols)
    fig = Figure(figsize=(4 * cols, 4 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for v, ((title, view), ax) in enumerate(zip(views, axes[1:], strict=False)):
        step = max(1, -(-len(view["coord"]) // max_points))  # every step-th point: at most max_points drawn
        origin, coord, rgb = view["origin_coord"][::step], view["coord"][::step], view["feat"][::step, 3:6]
        frame = f"C{v % 10}"
        axes[0].scatter(origin[:, 0], origin[:, 1], s=1, c=frame, lw=0, alpha=0.3, zorder=v)
        ax.scatter(coord[:, 0], coord[:, 1], s=2, c=np.clip(rgb, 0, 1), lw=0)
        ax.set_title(f"{title}: {len(view['coord'])} points", color=frame)
        ax.spines[:].set(color=frame, linewidth=2)
    axes[0].set_title(f"{sample.scene}: the views in the scene")
    for ax in axes[len(views) + 1 :]:
        ax.set_axis_off()
    for ax in axes:
        ax.set_aspect("equal")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=100, format=path.suffix.lstrip(".") or "png")
    os.replace(tmp, path)
    return path
