"""Zero-shot pictures of learned features: the first three principal components of per-point features as RGB.

``pca_fit`` finds the mean and the three leading principal axes of a seeded sample of at most ``sample`` rows
(eigenvectors of the sample covariance, float64), and the robust range of each component on that sample: its 1st
to 99th percentile. ``PCABasis.colours`` projects every row and maps each component's robust range to 0..255,
clipping beyond it. The sign of an axis is fixed (its largest-|loading| channel is positive) so two runs, or two
machines, colour a scene alike. Axes of zero variance (constant features, or fewer than three independent
channels) are left at zero and their colour channel is mid-grey (128): colours are always finite.

Fit once and pass ``basis=`` to ``pca_colours`` to colour several scenes with one projection (comparable colours).

``render_scene`` draws a scene as a PNG: one column per panel (e.g. input colours, PCA of features), a top-down
view above and an oblique orthographic view below.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from pcdag.atomic import atomic_write_bytes

N_COMPONENTS = 3
PERCENTILES = (1.0, 99.0)  # robust range of each component
_CHUNK = 262_144  # rows projected at once
_MIN_VARIANCE = 1e-20  # eigenvalues at or below max(this, 1e-9 * largest) count as zero variance


def as_array(features: Any, where: str = "features") -> np.ndarray:
    """``features`` (numpy or torch ``[N, C]``) as a numpy array, no copy where avoidable."""
    if hasattr(features, "detach"):  # a torch tensor; bf16 has no numpy dtype
        features = features.detach().cpu()
        features = features.float().numpy() if str(features.dtype) == "torch.bfloat16" else features.numpy()
    arr = np.asarray(features)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{where}: expected a non-empty [N, C] array, got shape {list(arr.shape)}")
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{where}: expected numbers, got dtype {arr.dtype}")
    return arr


@attrs.frozen(eq=False)
class PCABasis:
    """A fitted projection: ``rgb = clip((x - mean) @ components.T - low) / (high - low), 0, 1) * 255``."""

    mean: np.ndarray  # [C] float64
    components: np.ndarray  # [3, C] float64, unit rows (zero rows for axes of no variance)
    low: np.ndarray  # [3] float64, 1st percentile of each component on the fitted sample
    high: np.ndarray  # [3] float64, 99th percentile

    @property
    def channels(self) -> int:
        return int(self.mean.shape[0])

    def project(self, features: Any) -> np.ndarray:
        """``[N, 3]`` float64 principal components of every row of ``features`` ``[N, C]``."""
        x = as_array(features)
        if x.shape[1] != self.channels:
            raise ValueError(f"features have {x.shape[1]} channels but the PCA basis was fitted on {self.channels}")
        out = np.empty((len(x), N_COMPONENTS), dtype=np.float64)  # [N, 3]
        for start in range(0, len(x), _CHUNK):
            block = x[start : start + _CHUNK].astype(np.float64) - self.mean  # [B, C]
            out[start : start + _CHUNK] = block @ self.components.T  # [B, 3]
        return out

    def colours(self, features: Any) -> np.ndarray:
        """``[N, 3]`` uint8: each component's robust range mapped to 0..255, clipped; flat components -> 128."""
        proj = self.project(features)  # [N, 3]
        width = self.high - self.low  # [3]
        flat = ~(width > 0)  # [3]
        scaled = (proj - self.low) / np.where(flat, 1.0, width)  # [N, 3]
        scaled[:, flat] = 0.5
        scaled = np.nan_to_num(scaled, nan=0.5, posinf=1.0, neginf=0.0)
        return np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def _fix_signs(components: np.ndarray) -> np.ndarray:
    """Flip each row of ``components`` ``[K, C]`` so its largest-|loading| entry is positive (first on ties)."""
    pick = np.argmax(np.abs(components), axis=1)  # [K]
    signs = np.where(components[np.arange(len(components)), pick] < 0, -1.0, 1.0)  # [K]
    return components * signs[:, None]


def pca_fit(features: Any, sample: int = 100_000, seed: int = 0) -> PCABasis:
    """Fit the three leading principal axes and their robust ranges on at most ``sample`` rows (seeded)."""
    x = as_array(features)  # [N, C]
    if sample < 1:
        raise ValueError(f"pca_fit: sample must be at least 1, got {sample}")
    n, c = x.shape
    rows = np.sort(np.random.default_rng(seed).choice(n, sample, replace=False)) if n > sample else slice(None)
    s = x[rows].astype(np.float64)  # [S, C]
    if not np.isfinite(s).all():
        raise ValueError("pca_fit: the features contain NaN or infinite values")
    mean = s.mean(axis=0)  # [C]
    centred = s - mean  # [S, C]
    cov = centred.T @ centred / max(len(s) - 1, 1)  # [C, C]
    values, vectors = np.linalg.eigh(cov)  # ascending
    k = min(N_COMPONENTS, c)
    top_values = values[::-1][:k]  # [k]
    top = vectors[:, ::-1][:, :k].T  # [k, C]
    keep = top_values > max(_MIN_VARIANCE, 1e-9 * float(values.max(initial=0.0)))  # [k]
    components = np.zeros((N_COMPONENTS, c), dtype=np.float64)  # [3, C]
    components[:k] = _fix_signs(top) * keep[:, None]
    proj = centred @ components.T  # [S, 3]
    low, high = np.percentile(proj, PERCENTILES, axis=0)  # [3] each
    return PCABasis(mean, components, low, high)


def pca_colours(features: Any, sample: int = 100_000, seed: int = 0, basis: PCABasis | None = None) -> np.ndarray:
    """``[N, 3]`` uint8 colours of ``features`` ``[N, C]`` from ``basis``, or from ``pca_fit(features, ...)``."""
    if basis is None:
        basis = pca_fit(features, sample, seed)
    return basis.colours(features)


# -- pictures ---------------------------------------------------------------------------------------------------

AZIMUTH, ELEVATION = np.radians(-55.0), np.radians(50.0)  # oblique camera direction (from the scene centre)


def ceiling_cut(z: np.ndarray, keep: float = 0.85) -> float:
    """Height above which points are left out of both views so a ceiling does not hide the room: ``keep`` of the
    way from the 0.5th to the 99.5th percentile of ``z`` (a room 2.7 m high is cut at about 2.3 m)."""
    lo, hi = np.percentile(z, [0.5, 99.5])
    return float(lo + keep * (hi - lo))


def oblique(coord: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orthographic oblique projection: ``(screen [n, 2], depth [n])``, larger depth = nearer the camera."""
    ca, sa, ce, se = np.cos(AZIMUTH), np.sin(AZIMUTH), np.cos(ELEVATION), np.sin(ELEVATION)
    towards = np.array([ca * ce, sa * ce, se])  # [3] unit vector from the scene to the camera
    right = np.array([-sa, ca, 0.0])  # [3]
    up = np.cross(towards, right)  # [3]
    p = coord.astype(np.float64) - coord.mean(axis=0)  # [n, 3]
    return np.stack([p @ right, p @ up], axis=1), p @ towards


def _panel_colours(name: str, rgb: Any, n: int) -> np.ndarray:
    arr = np.asarray(rgb)
    if arr.shape != (n, 3):
        raise ValueError(f"render_scene: panel {name!r} has colours of shape {list(arr.shape)}, expected [{n}, 3]")
    if arr.dtype != np.uint8:
        raise ValueError(f"render_scene: panel {name!r} colours must be uint8 0..255, got {arr.dtype}")
    return arr


def render_scene(
    coord: np.ndarray,
    panels: Sequence[tuple[str, np.ndarray]],
    path: str | Path,
    title: str = "",
    max_points: int = 200_000,
    seed: int = 0,
    keep_height: float = 0.85,
) -> Path:
    """Write a PNG of the scene ``coord`` ``[N, 3]``: one column per ``(name, rgb uint8 [N, 3])`` panel, a top-down
    view (higher points drawn last) above an oblique view (nearer points drawn last). At most ``max_points`` points
    (a seeded sample, the same in every panel); points above ``ceiling_cut(z, keep_height)`` are left out."""
    from matplotlib.figure import Figure

    coord = np.asarray(coord)
    if coord.ndim != 2 or coord.shape[1] != 3 or len(coord) == 0:
        raise ValueError(f"render_scene: coord must be a non-empty [N, 3] array, got shape {list(coord.shape)}")
    if not panels:
        raise ValueError("render_scene: no panels to draw")
    colours = [(name, _panel_colours(name, rgb, len(coord))) for name, rgb in panels]
    n = len(coord)
    pick = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False)) if n > max_points else None
    xyz = (coord if pick is None else coord[pick]).astype(np.float64)  # [n', 3]
    cut = ceiling_cut(xyz[:, 2], keep_height)
    below = np.flatnonzero(xyz[:, 2] <= cut)  # [n'']
    xyz = xyz[below]
    top_order = np.argsort(xyz[:, 2], kind="stable")  # [n''] low first
    screen, depth = oblique(xyz)
    side_order = np.argsort(depth, kind="stable")  # [n''] far first
    size = float(np.clip(1.2e5 / max(len(xyz), 1), 0.1, 8.0))  # marker area (pt^2): fewer points, bigger dots

    cols = len(colours)
    fig = Figure(figsize=(5.5 * cols, 10.5), layout="constrained")
    axes = fig.subplots(2, cols, squeeze=False)
    for col, (name, rgb) in enumerate(colours):
        rgb = (rgb if pick is None else rgb[pick])[below].astype(np.float32) / 255.0  # [n'', 3]
        views = ((xyz[top_order, :2], top_order, "top"), (screen[side_order], side_order, "oblique"))
        for row, (xy, order, label) in enumerate(views):
            ax = axes[row, col]
            ax.scatter(xy[:, 0], xy[:, 1], c=rgb[order], s=size, marker=".", linewidths=0, rasterized=True)
            ax.set_aspect("equal")
            ax.set_axis_off()
            ax.set_title(f"{name}: {label}" + (f" (z <= {cut:.2f} m)" if row == 0 else ""), fontsize=10)
    if title:
        fig.suptitle(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path
