"""AlignScale: scale a scene about the origin to a ScanNet-like size (paper) or by the constant 1.753 (reference).

The size of a scene is the diagonal of its axis-aligned bounding box. ``semantics="paper"`` draws a target
diagonal and scales by target / diagonal; ``semantics="reference"`` multiplies every scene by ``factor`` (the
released code overrides the drawn factor with 1.753 for every scene).

The target distribution (spec D.3) is piecewise uniform: bin i is [``edges[i]``, ``edges[i+1]``) with probability
``weights[i]`` / sum(weights). The spec lists ScanNet's range [2.835, 20.04], seven percentiles 5.236, 6.323,
7.791, 9.365, 10.929, 12.139, 15.189 m (levels 10, 25, 50, 75, 90, 95, 99: the median matches, and mean 7.984 and
std 2.386 agree with them) and seven interval weights .01, .09, .25, .30, .20, .10, .05. Seven weights need eight
edges: the default edges are the range's lower end and the seven percentiles, so bin i ends at percentile i and
the top bin [15.189, 20.04] gets no weight (draws never exceed 15.189 m). The draws' median is then 8.578 m and
mean 8.764 m, above ScanNet's own 7.791 / 7.984: the weights are the sampler's, not ScanNet's percentile masses
(.10, .15, .25, .25, .15, .05, .04, .01 over the eight bins of range and percentiles — pass those as ``edges`` and
``weights`` to draw from ScanNet's distribution itself).

Provenance (``meta["scale"]``, kept in the scene's report by the store; ``pcdag stats`` counts it): a scene that
arrives in metres (``meta["scale"]["units"] == "metric"``: ``Reconstruct`` from depth or known camera poses) is
left as it is under paper semantics with ``keep_metric`` (the draw exists to give scale-free reconstructions a
room-like size); otherwise the paper draw gives ``units: drawn`` with the factor, the drawn diagonal and the units
before, and the reference factor gives ``units: scaled``. The draw's uniform number comes from the scene's
generator *and* a hash of its coordinates (spec D.3 draws one target per scene): scenes that share an id and a
seed (the first room of every video called ``tour``) no longer all get the same diagonal.
"""

from __future__ import annotations

import hashlib
from typing import Any

import attrs
import numpy as np

from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.graphs.node import FieldEffect, effect
from pcdag.graphs.params import ParamError, in_range, of_type, one_of, param
from pcdag.graphs.registry import register
from pcdag.nodes.alignment.parts.base import AlignmentTransform

SCANNET_EDGES = [2.835, 5.236, 6.323, 7.791, 9.365, 10.929, 12.139, 15.189]  # m
SCANNET_WEIGHTS = [0.01, 0.09, 0.25, 0.30, 0.20, 0.10, 0.05]


def _numbers(lo: float, *, increasing: bool):
    """Validator: a list of at least 2 (edges) or 1 (weights) numbers >= lo, strictly increasing if asked."""

    def check(_inst: Any, a: attrs.Attribute, value: Any) -> None:
        ok = isinstance(value, (list, tuple)) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v >= lo for v in value
        )
        if not ok or len(value) < (2 if increasing else 1):
            raise ParamError(f"{a.name} = {value!r} must be a list of {check.allowed}")
        if increasing and any(b <= a_ for a_, b in zip(value[:-1], value[1:], strict=True)):
            raise ParamError(f"{a.name} = {value!r} must be strictly increasing")

    check.allowed = f"finite numbers >= {lo}" + (", strictly increasing, at least 2" if increasing else "")
    return check


def draw_diagonal(edges: np.ndarray, weights: np.ndarray, u: float) -> float:
    """Inverse CDF of the piecewise-uniform distribution at ``u`` in [0, 1). ``edges`` [B+1], ``weights`` [B]."""
    cdf = np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])  # [B+1]
    cdf[-1] = 1.0  # exactly, so that every u < 1 falls in a bin of positive weight
    i = min(int(np.searchsorted(cdf, u, side="right")) - 1, len(weights) - 1)  # bin with cdf[i] <= u < cdf[i+1]
    return float(edges[i] + (u - cdf[i]) / (cdf[i + 1] - cdf[i]) * (edges[i + 1] - edges[i]))


def bbox_diagonal(coord: np.ndarray) -> float:
    """Length of the axis-aligned bounding box's diagonal of ``coord`` ``[N, 3]``."""
    c = coord.astype(np.float64)
    return float(np.linalg.norm(c.max(axis=0) - c.min(axis=0)))


@register
class AlignScale(AlignmentTransform):
    """Scale the scene about the origin: to a drawn ScanNet-like bbox diagonal (paper) or by 1.753 (reference)."""

    version = 2

    @attrs.frozen
    class Params:
        semantics: str = param("paper", one_of("paper", "reference"), doc="paper: draw a diagonal; reference: x1.753")
        factor: float = param(1.753, in_range(0.0, None, lo_open=True), doc="reference semantics: constant factor")
        edges: list = param(SCANNET_EDGES, _numbers(0.0, increasing=True), unit="m", doc="paper: target bins")
        weights: list = param(SCANNET_WEIGHTS, _numbers(0.0, increasing=False), doc="paper: bin probabilities")
        keep_metric: bool = param(True, of_type(bool), doc="paper: leave scenes already in metres unscaled")

    def __post_init__(self) -> None:
        p = self.params
        if len(p.weights) != len(p.edges) - 1 or sum(p.weights) <= 0:
            raise ParamError(
                f"{self.type_name()}: weights ({len(p.weights)} given) need one entry per bin between the "
                f"{len(p.edges)} edges, and a positive sum"
            )
        if p.edges[0] <= 0:
            raise ParamError(f"{self.type_name()}: edges must start above 0 m, got {p.edges[0]}")

    def fields(self) -> FieldEffect:
        return effect(reads=["coord"], writes=["coord"])

    def apply(self, cloud: PointCloud, rng: np.random.Generator) -> PointCloud:
        p = self.params
        cloud.require_points(self)
        before = bbox_diagonal(cloud["coord"])
        prior = dict(cloud.meta.get("scale") or {"units": "unrecorded"})
        facts: dict = {"semantics": p.semantics, "diagonal_before": before, "units_before": prior.get("units")}
        if p.semantics == "paper" and p.keep_metric and prior.get("units") == "metric":
            cloud.meta.setdefault("report", {})["AlignScale"] = facts | {"factor": 1.0, "kept": "metric"}
            return cloud
        if p.semantics == "reference":
            factor = float(p.factor)
            scale = {"units": "scaled", "factor": factor, "before": prior}
        else:
            if before <= 0:
                raise CloudError(
                    f"{self!r}: scene {cloud.meta.get('scene', '?')!r} has a zero-size bounding box (all points "
                    f"equal); it cannot be scaled to a target diagonal"
                )
            u = float(scene_generator(rng, cloud["coord"]).random())
            target = draw_diagonal(np.asarray(p.edges, float), np.asarray(p.weights, float), u)
            factor, facts["target"] = target / before, target
            scale = {"units": "drawn", "factor": factor, "diagonal": target, "before": prior}
        cloud["coord"] = (cloud["coord"].astype(np.float64) * factor).astype(np.float32)
        cloud.meta["scale"] = scale
        cloud.meta.setdefault("report", {})["AlignScale"] = facts | {
            "factor": factor,
            "diagonal_after": bbox_diagonal(cloud["coord"]),
        }
        return cloud


def scene_generator(rng: np.random.Generator, coord: np.ndarray) -> np.random.Generator:
    """A generator from one draw of the scene's ``rng`` and a BLAKE2b hash of its coordinates [N, 3]: the same
    scene and seed give the same draw, and two scenes that differ give different ones even with equal streams."""
    digest = hashlib.blake2b(np.ascontiguousarray(coord).tobytes(), digest_size=8).digest()
    return np.random.default_rng([int(rng.integers(2**63)), int.from_bytes(digest, "little")])
