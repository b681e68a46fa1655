"""The architecture of the sparse-convolution U-Net (``SparseUNetConfig``) and its shipped presets: plain data, so a
graph naming a ``SparseUNet`` is validated without importing torch (``model.py`` builds it).

``channels`` and ``layers`` list the four encoder levels then the four decoder levels (deepest first), as in
Pointcept's ``SpUNet-v1m1`` and MinkowskiEngine's ``MinkUNet``; ``base_channels`` is the stem's width. The
14A / 18A / 34C presets are MinkUNet14A / 18A / 34C (``INIT_DIM`` 32, BasicBlock), Pointcept's default is 34C.
"""

from __future__ import annotations

from typing import Any

import attrs

BACKENDS = ("auto", "torch", "spconv")
N_LEVELS = 4  # down-samplings; the per-level lists have 2 * N_LEVELS entries

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(base_channels=8, channels=(8, 16, 16, 32, 16, 16, 8, 8), layers=(1,) * 8),  # CPU tests
    "14a": dict(base_channels=32, channels=(32, 64, 128, 256, 128, 128, 96, 96), layers=(1,) * 8),
    "18a": dict(base_channels=32, channels=(32, 64, 128, 256, 128, 128, 96, 96), layers=(2,) * 8),
    "34c": dict(base_channels=32, channels=(32, 64, 128, 256, 256, 128, 96, 96), layers=(2, 3, 4, 6, 2, 2, 2, 2)),
}


def _ints(value: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in value)


@attrs.frozen
class SparseUNetConfig:
    """Architecture of the backbone (``PRESETS`` holds the shipped ones) and how it runs (grid, backend)."""

    channels: tuple[int, ...] = attrs.field(converter=_ints)
    layers: tuple[int, ...] = attrs.field(converter=_ints)
    base_channels: int = 32
    in_channels: int = 9
    mask_token: bool = False
    grid_size: float = 0.02  # m, when the batch carries no grid coordinates
    backend: str = "auto"

    def __attrs_post_init__(self) -> None:
        problems = []
        for name in ("channels", "layers"):
            value = getattr(self, name)
            if len(value) != 2 * N_LEVELS or min(value) < 1:
                problems.append(f"{name} needs {2 * N_LEVELS} whole numbers >= 1 (4 encoder, 4 decoder levels)")
        if self.base_channels < 1 or self.in_channels < 1:
            problems.append("base_channels and in_channels must be >= 1")
        if self.backend not in BACKENDS:
            problems.append(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if problems:
            raise ValueError("SparseUNet configuration: " + "; ".join(problems))

    @property
    def out_channels(self) -> int:
        return self.channels[-1]

    def level_channels(self) -> tuple[list[int], list[int]]:
        """(encoder width at levels 0..4, decoder output width at levels 0..3): level 0 is the stem's voxels."""
        enc = [self.base_channels, *self.channels[:N_LEVELS]]
        dec = [self.channels[2 * N_LEVELS - 1 - s] for s in range(N_LEVELS)]  # dec[s] made at level s
        return enc, dec

    @classmethod
    def preset(cls, name: str, **changes: Any) -> SparseUNetConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown SparseUNet preset {name!r}; presets: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **changes})
