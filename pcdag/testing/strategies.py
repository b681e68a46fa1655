"""Hypothesis strategies for point clouds, seeds and random generators.

Clouds are generated from a drawn seed with numpy (fast even at hundreds of points) while hypothesis draws the
structural knobs it can shrink: the number of points, the layout (uniform box, Gaussian blob, noisy plane, tight
clusters, a lattice with points exactly on voxel boundaries, a line), the fraction of exactly duplicated points and
the offset. A failing example therefore shrinks toward few points, the simplest layout and seed 0.

    from pcdag.testing import point_clouds, rngs

    @given(cloud=point_clouds(max_points=200, fields=("color",)), rng=rngs())
    def test_something(cloud, rng): ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from hypothesis import strategies as st

from pcdag.graphs.cloud import PointCloud

LAYOUTS = ("uniform", "gaussian", "planar", "clusters", "lattice", "line")


def _uniform(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(-1.0, 1.0, size=(n, 3))


def _gaussian(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0.0, 0.3, size=(n, 3))


def _planar(n: int, rng: np.random.Generator) -> np.ndarray:
    """A randomly tilted plane through the origin, with noise of 1e-3 along its normal."""
    basis, _ = np.linalg.qr(rng.normal(size=(3, 3)))  # [3, 3] orthonormal columns
    uv = rng.uniform(-1.0, 1.0, size=(n, 2))  # [N, 2]
    return uv @ basis[:, :2].T + rng.normal(0.0, 1e-3, size=(n, 1)) * basis[:, 2]


def _clusters(n: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.uniform(-1.0, 1.0, size=(int(rng.integers(1, 5)), 3))  # [C, 3]
    return centres[rng.integers(0, len(centres), size=n)] + rng.normal(0.0, 0.02, size=(n, 3))


def _lattice(n: int, rng: np.random.Generator) -> np.ndarray:
    """Points on a coarse lattice: many exact duplicates, coordinates on round values."""
    m = int(rng.integers(2, 9))
    return rng.integers(0, m, size=(n, 3)) * (2.0 / m) - 1.0


def _line(n: int, rng: np.random.Generator) -> np.ndarray:
    direction = rng.normal(size=3)
    return rng.uniform(-1.0, 1.0, size=(n, 1)) * (direction / np.linalg.norm(direction))


_LAYOUT_FNS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "uniform": _uniform,
    "gaussian": _gaussian,
    "planar": _planar,
    "clusters": _clusters,
    "lattice": _lattice,
    "line": _line,
}


def _unit_vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=(n, 3))  # [N, 3]
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    v = np.where(norm > 1e-12, v / np.maximum(norm, 1e-12), np.array([0.0, 0.0, 1.0]))
    return v.astype(np.float32)


def _grid_coord(coord: np.ndarray) -> np.ndarray:
    cell = np.floor(coord.astype(np.float64) / 0.02)  # [N, 3] voxels of 2 cm
    return (cell - cell.min(axis=0)).astype(np.int32)


# Field makers: (coord float32 [N, 3], rng) -> array with N rows satisfying pcdag.graphs.ports.FIELDS.
FIELD_MAKERS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "color": lambda c, rng: rng.integers(0, 256, size=(len(c), 3), dtype=np.uint8),
    "normal": lambda c, rng: _unit_vectors(len(c), rng),
    "segment": lambda c, rng: rng.integers(-1, 20, size=len(c)).astype(np.int16),
    "instance": lambda c, rng: rng.integers(-1, 10, size=len(c)).astype(np.int32),
    "origin_coord": lambda c, rng: c.copy(),
    "superpoint": lambda c, rng: rng.integers(0, max(1, len(c) // 8), size=len(c)).astype(np.int64),
    "grid_coord": lambda c, rng: _grid_coord(c),
}


def make_cloud(n: int, seed: int, layout: str, duplicate: float, fields: Iterable[str], scale: float) -> PointCloud:
    """The cloud ``point_clouds`` draws, built from its knobs (useful to rebuild a reported example)."""
    rng = np.random.default_rng(seed)
    coord = _LAYOUT_FNS[layout](n, rng) * scale + rng.uniform(-scale, scale, size=3)  # [N, 3] float64
    n_dup = int(duplicate * n)
    if n_dup and n > 1:
        coord[rng.integers(0, n, size=n_dup)] = coord[rng.integers(0, n, size=n_dup)]  # exact copies
    coord = coord.astype(np.float32)
    data = {"coord": coord} | {name: FIELD_MAKERS[name](coord, rng) for name in fields}
    return PointCloud(data, {"scene": f"hypothesis-{layout}-{seed}"})


@st.composite
def _clouds(draw: st.DrawFn, min_points: int, max_points: int, fields: tuple[str, ...], scale: float) -> PointCloud:
    n = draw(st.integers(min_points, max_points))
    layout = draw(st.sampled_from(LAYOUTS))
    duplicate = draw(st.sampled_from((0.0, 0.0, 0.25)))
    seed = draw(seeds())
    return make_cloud(n, seed, layout, duplicate, fields, scale)


def point_clouds(
    min_points: int = 1,
    max_points: int = 400,
    fields: Iterable[str] = ("color", "normal", "segment", "instance"),
    scale: float = 10.0,
) -> st.SearchStrategy[PointCloud]:
    """Valid ``PointCloud``s with ``coord`` plus exactly ``fields``; coordinates within about ``±2 * scale`` m.

    Coordinates are finite float32, colours uint8, normals unit float32, labels signed ints; a quarter of the
    examples repeat points exactly (voxel collisions, zero-distance neighbours).
    """
    fields = tuple(fields)
    unknown = sorted(set(fields) - set(FIELD_MAKERS))
    if unknown:
        raise ValueError(f"point_clouds cannot generate fields {unknown}; known: {', '.join(FIELD_MAKERS)}")
    if not 1 <= min_points <= max_points:
        raise ValueError(f"need 1 <= min_points <= max_points, got {min_points}, {max_points}")
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number of metres, got {scale!r}")
    return _clouds(min_points, max_points, fields, float(scale))


def seeds() -> st.SearchStrategy[int]:
    """Seeds for ``np.random.default_rng``."""
    return st.integers(0, 2**32 - 1)


def rngs() -> st.SearchStrategy[np.random.Generator]:
    """Fresh ``np.random.Generator``s from drawn seeds (draw ``seeds()`` instead when a failure should show it)."""
    return seeds().map(np.random.default_rng)
