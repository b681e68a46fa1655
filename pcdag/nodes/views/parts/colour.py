"""Colour augmentations of the multi-view generator, as functions on channel-first ``[3, n]`` float arrays (0..255).

Arrays are channel-first (one row per channel) because numpy broadcasts and reduces along long contiguous rows
many times faster than along the three-element rows of ``[n, 3]``; the generator transposes once per scene.

Colour jitter (the image recipe applied to points): four operations in a random order, each with probability p,

    brightness  c · b                        b ~ U[max(0, 1 - brightness), 1 + brightness]
    contrast    c · f + (1 - f) · mean(grey) f ~ U[max(0, 1 - contrast), 1 + contrast], mean over all points given
    saturation  c · f + (1 - f) · grey       f ~ U[max(0, 1 - saturation), 1 + saturation], grey per point
    hue         h ← (h + d) mod 1 in HSV     d ~ U[-hue, hue]

each clipped to [0, 255]; grey = 0.2989 r + 0.587 g + 0.114 b. Chromatic translation adds one random offset per
channel, U[-ratio, ratio] · 255, with probability p, then clips to [0, 255]. ``colour_transform`` runs both and
divides by 255. Draws (``draw``) are separate from application so one draw can be applied to several arrays.
"""

from __future__ import annotations

import attrs
import numpy as np

LUMA = np.array([0.2989, 0.587, 0.114], dtype=np.float32)  # [3] RGB weights of the grey level
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")
_HUE_OFFSET = np.array([5, 3, 1], dtype=np.float32)  # [3] phase of r, g, b on the hue circle (in sixths)


def grey(colour: np.ndarray) -> np.ndarray:
    """Luma of ``colour`` ``[3, n]`` -> ``[n]`` (same scale as the input)."""
    return LUMA @ colour


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """``[3, n]`` RGB in [0, 1] -> HSV rows in [0, 1) x [0, 1] x [0, 1]; grey points get hue 0."""
    r, g, b = rgb  # [n] each
    top = np.maximum(np.maximum(r, g), b)  # [n]
    span = top - np.minimum(np.minimum(r, g), b)  # [n]
    safe = np.where(span > 0, span, 1)  # [n] avoids 0/0 where the hue is undefined
    hue = np.where(top == r, (g - b) / safe, np.where(top == g, (b - r) / safe + 2, (r - g) / safe + 4))  # [n]
    hue = hue / 6  # [n] in turns, [-1/6, 5/6]
    hue = np.where(span > 0, hue - np.floor(hue), 0)  # [n] in [0, 1)
    sat = span / np.where(top > 0, top, 1)  # [n] (span = 0 where top = 0)
    return np.stack([hue, sat, top])


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of ``rgb_to_hsv``: ``[3, n]`` HSV -> RGB in [0, 1] (hue 1 is hue 0 again).

    Channel c = v - v·s·clip(min(k, 4 - k), 0, 1) with k = (n_c + 6h) mod 6 and n = (5, 3, 1) for r, g, b: the
    six-sector formula written without branches.
    """
    h, s, v = hsv  # [n] each
    k = _HUE_OFFSET[:, None] + h * 6  # [3, n] in [1, 12)
    k = np.where(k >= 6, k - 6, k)  # mod 6 (faster than % on floats)
    ramp = np.clip(np.minimum(k, 4 - k), 0, 1)  # [3, n]
    return v - v * s * ramp


def adjust(colour: np.ndarray, op: str, factor: float) -> np.ndarray:
    """One colour-jitter operation on ``colour`` ``[3, n]`` (0..255); a new array, clipped to [0, 255]."""
    f = np.float32(factor)
    if op == "brightness":
        out = colour * f
    elif op == "contrast":
        out = colour * f + (1 - f) * grey(colour).mean(dtype=np.float32)
    elif op == "saturation":
        out = colour * f + (1 - f) * grey(colour)
    elif op == "hue":
        hsv = rgb_to_hsv(colour / np.float32(255))  # [3, n]
        hsv[0] += f
        hsv[0] -= np.floor(hsv[0])  # mod 1
        out = hsv_to_rgb(hsv) * np.float32(255)
    else:
        raise ValueError(f"unknown colour operation {op!r}; use one of {', '.join(JITTER_OPS)}")
    return np.clip(out, 0, 255).astype(colour.dtype, copy=False)


@attrs.frozen
class ColourJitter:
    """Strengths of the four colour-jitter operations and the probability of applying each."""

    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.02
    p: float = 0.8

    def draw(self, rng: np.random.Generator) -> list[tuple[str, float]]:
        """The operations to apply, in order, with their factors (an op of strength 0 is never applied)."""
        ranges = {
            "brightness": (max(0.0, 1.0 - self.brightness), 1.0 + self.brightness),
            "contrast": (max(0.0, 1.0 - self.contrast), 1.0 + self.contrast),
            "saturation": (max(0.0, 1.0 - self.saturation), 1.0 + self.saturation),
            "hue": (-self.hue, self.hue),
        }
        factors = [float(rng.uniform(*ranges[op])) for op in JITTER_OPS]
        order = rng.permutation(len(JITTER_OPS))  # [4]
        applied = rng.random(len(JITTER_OPS)) < self.p  # [4], one coin per op
        return [(JITTER_OPS[i], factors[i]) for i in order if applied[i] and getattr(self, JITTER_OPS[i]) > 0]


@attrs.frozen
class ChromaticTranslation:
    """With probability p, shift every channel by its own U[-ratio, ratio] · 255."""

    p: float = 0.95
    ratio: float = 0.05

    def draw(self, rng: np.random.Generator) -> np.ndarray | None:
        """The ``[3]`` offset (0..255 scale), or None when not applied."""
        if rng.random() >= self.p:
            return None
        return ((rng.random(3) - 0.5) * 2.0 * self.ratio * 255.0).astype(np.float32)


def apply_colour(colour: np.ndarray, ops: list[tuple[str, float]], offset: np.ndarray | None) -> np.ndarray:
    """Apply drawn jitter ``ops``, then the translation ``offset``, to ``colour`` ``[3, n]`` (0..255) -> [0, 1]."""
    out = colour.astype(np.float32)  # [3, n], a copy
    for op, factor in ops:
        out = adjust(out, op, factor)
    if offset is not None:
        out = np.clip(out + offset[:, None], 0, 255)
    return out / np.float32(255)


def colour_transform(
    colour: np.ndarray, jitter: ColourJitter, translation: ChromaticTranslation, rng: np.random.Generator
) -> np.ndarray:
    """Jitter, translate and normalise ``colour`` ``[3, n]`` (uint8 or float, 0..255) -> float32 ``[3, n]``, 0..1."""
    ops = jitter.draw(rng)
    return apply_colour(colour, ops, translation.draw(rng))
