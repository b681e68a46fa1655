"""Elastic distortion: a smooth random displacement field, sampled on a coarse grid and interpolated at the points.

Points are channel-first ``[3, n]`` arrays (see ``pcdag.nodes.views.parts.colour`` for why).

One pass with ``(granularity g, magnitude m)``:

1. a grid of nodes ``g`` apart covering the points' bounding box with one node to spare on every side
   (``floor(extent / g) + 3`` nodes per axis, node ``i`` at ``min + (i - 1) · g``), N(0, 1) noise per node and axis;
2. the noise blurred twice by separable 3-tap box filters along x, y and z (zero outside the grid), which makes
   neighbouring nodes move alike;
3. the field interpolated trilinearly at every point: ``coord += field(coord) · m``.

Trilinear interpolation is a convex combination of the 8 surrounding nodes, so a point moves at most
``m · max|field|`` per axis, and two points ``d`` apart differ by at most ``m · Σ_axis D_axis · |d_axis| / g``,
with ``D_axis`` the largest difference of neighbouring nodes along that axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from pcdag.graphs.cloud import CloudError
from pcdag.graphs.params import ParamError

MAX_NODES = 1 << 24  # grid nodes per pass (x 3 float32 = 192 MiB): more means a granularity far too fine


def noise_grid(xyz: np.ndarray, granularity: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Blurred N(0, 1) noise on a grid over points ``xyz`` ``[3, n]``: ``(field [3, gx, gy, gz] float32, origin [3])``.

    ``origin`` is the position of node ``(0, 0, 0)``; nodes are ``granularity`` apart.
    """
    from scipy.ndimage import uniform_filter1d

    low = xyz.min(axis=1).astype(np.float64)  # [3]
    dims = (np.floor((xyz.max(axis=1) - low) / granularity).astype(np.int64) + 3).tolist()  # nodes per axis
    if dims[0] * dims[1] * dims[2] > MAX_NODES:
        raise CloudError(
            f"elastic distortion with granularity {granularity} m needs a {dims[0]} x {dims[1]} x {dims[2]} noise "
            f"grid over this view (more than {MAX_NODES} nodes); use a coarser granularity"
        )
    field = rng.standard_normal((3, *dims), dtype=np.float32)  # [3, gx, gy, gz]
    for _ in range(2):
        for axis in (1, 2, 3):  # 3-tap box filter (mean of the node and its two neighbours), zero padding
            field = uniform_filter1d(field, size=3, axis=axis, mode="constant", cval=0.0)
    return field, low - granularity


def trilinear(field: np.ndarray, origin: np.ndarray, spacing: float, xyz: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of a node ``field`` ``[C, gx, gy, gz]`` at points ``xyz`` ``[3, n]`` -> ``[C, n]``.

    Node ``(i, j, k)`` sits at ``origin + (i, j, k) · spacing``; points outside the grid are clamped onto it.

    Computed as two bilinear samples and a linear step along z: the z slices are laid side by side into one
    image ``[C, gx, gz · gy]`` (slice k occupies columns k·gy … k·gy + gy − 1), each point is sampled in its two
    slices k0 and k0 + 1 by one 2-D ``torch.nn.functional.grid_sample`` call (``align_corners``), and the two are
    blended with weight ``k − k0``. The in-slice coordinate is clamped to gy − 1, so the bilinear step reaches
    the next slice only through float32 rounding of the grid coordinates (which span the whole image width):
    values agree with exact trilinear interpolation to ~1e-5 of the field's node-to-node differences.
    torch's 2-D CPU kernel is vectorised and its 3-D one is not: 2.5–2.8× faster than one 3-D ``grid_sample``
    (in the LAM3C loader 16.7 → 8.8 ms per scene, profiled on one core), which was itself faster than eight
    NumPy gathers (bench/README.md).
    """
    import torch
    import torch.nn.functional as F

    c, gx, gy, gz = field.shape
    if min(gx, gy, gz) < 2:
        raise ValueError(f"trilinear needs at least 2 nodes per axis, got a field of shape {field.shape}")
    pos = (xyz - origin.astype(np.float32)[:, None]) / np.float32(spacing)  # [3, n] node units
    i = np.clip(pos[0], 0, gx - 1)  # [n]
    j = np.clip(pos[1], 0, gy - 1)  # [n]
    k = np.clip(pos[2], 0, gz - 1)  # [n]
    k0 = np.minimum(np.floor(k), gz - 2)  # [n] lower slice
    image = np.ascontiguousarray(field.transpose(0, 1, 3, 2), dtype=np.float32).reshape(1, c, gx, gz * gy)
    n, width = xyz.shape[1], gz * gy
    grid = np.empty((2, n, 2), dtype=np.float32)  # [slice k0 | k0 + 1, n, (column, row)] in [-1, 1]
    grid[0, :, 0] = (k0 * gy + j) * np.float32(2 / (width - 1)) - 1
    grid[1, :, 0] = grid[0, :, 0] + np.float32(2 * gy / (width - 1))
    grid[:, :, 1] = i * np.float32(2 / (gx - 1)) - 1
    out = F.grid_sample(
        torch.from_numpy(image), torch.from_numpy(grid).view(1, 1, 2 * n, 2), align_corners=True, padding_mode="border"
    )  # [1, C, 1, 2n]
    lower, upper = out.view(c, 2, n).numpy().transpose(1, 0, 2)  # [C, n] each
    return lower + (upper - lower) * (k - k0)  # [C, n]


def elastic_displacement(xyz: np.ndarray, granularity: float, magnitude: float, rng: np.random.Generator) -> np.ndarray:
    """The displacement ``[3, n]`` float32 of one elastic pass at points ``xyz`` ``[3, n]`` (add it to them)."""
    field, origin = noise_grid(xyz, granularity, rng)
    return trilinear(field, origin, granularity, xyz) * np.float32(magnitude)


def elastic_distort(xyz: np.ndarray, passes: Sequence[Sequence[float]], rng: np.random.Generator) -> np.ndarray:
    """Apply the passes ``[[granularity, magnitude], ...]`` in order to points ``xyz`` ``[3, n]``; a new array."""
    out = xyz.copy()  # [3, n]
    for granularity, magnitude in passes:
        out += elastic_displacement(out, granularity, magnitude, rng)
    return out


def elastic_passes():
    """Validator: a list of ``[granularity > 0 (m), magnitude >= 0]`` pairs (may be empty)."""

    def check(_inst: Any, a: attrs.Attribute, value: Any) -> None:
        text = f"{a.name} = {value!r} must be a list of [granularity (m, > 0), magnitude (>= 0)] pairs"
        if not isinstance(value, (list, tuple)):
            raise ParamError(text)
        for item in value:
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise ParamError(text)
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) for v in item):
                raise ParamError(text)
            if item[0] <= 0 or item[1] < 0:
                raise ParamError(f"{text}; {list(item)} is not")

    check.allowed = "[[granularity > 0, magnitude >= 0], ...]"  # type: ignore[attr-defined]
    return check
