"""The architecture of Point Transformer V3 (``PTv3Config``), its shipped presets and serialisation orders: plain
data, so a graph naming a ``PointTransformerV3`` is validated without importing torch (``ptv3.py`` builds it)."""

from __future__ import annotations

from typing import Any

import attrs

ORDERS = ("z", "z-trans", "hilbert", "hilbert-trans")  # space-filling curves of ``serialization.py``
MODES = ("encoder", "encoder-decoder")
BACKENDS = ("auto", "torch", "spconv")
N_STAGES = 5


def _ints(value: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in value)


@attrs.frozen
class PTv3Config:
    """Architecture of the backbone; ``PRESETS`` holds the shipped ones (``PTv3Config.preset``)."""

    enc_depths: tuple[int, ...] = attrs.field(converter=_ints)
    enc_channels: tuple[int, ...] = attrs.field(converter=_ints)
    enc_heads: tuple[int, ...] = attrs.field(converter=_ints)
    enc_patch_size: tuple[int, ...] = attrs.field(converter=_ints)
    dec_depths: tuple[int, ...] = attrs.field(converter=_ints)
    dec_channels: tuple[int, ...] = attrs.field(converter=_ints)
    dec_heads: tuple[int, ...] = attrs.field(converter=_ints)
    dec_patch_size: tuple[int, ...] = attrs.field(converter=_ints)
    in_channels: int = 9
    mlp_ratio: float = 4.0
    drop_path: float = 0.3
    orders: tuple[str, ...] = attrs.field(default=ORDERS, converter=tuple)
    shuffle_orders: bool = True
    mask_token: bool = True
    grid_size: float = 0.02  # m
    mode: str = "encoder"
    upcast_level: int = 2
    backend: str = "auto"
    # recompute blocks in backward (module docstring); not architecture: left out of == so configs that differ
    # only here compare equal, and checkpoints trained with it on load with it off and back
    checkpoint: bool = attrs.field(default=False, eq=False)

    def __attrs_post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("PointTransformerV3 configuration: " + "; ".join(problems))

    def problems(self) -> list[str]:
        out = []
        for name in ("enc_depths", "enc_channels", "enc_heads", "enc_patch_size"):
            if len(getattr(self, name)) != N_STAGES:
                out.append(f"{name} needs {N_STAGES} values (one per stage), got {list(getattr(self, name))}")
        for name in ("dec_depths", "dec_channels", "dec_heads", "dec_patch_size"):
            if len(getattr(self, name)) != N_STAGES - 1:
                out.append(f"{name} needs {N_STAGES - 1} values (levels 0..3), got {list(getattr(self, name))}")
        for c, h in list(zip(self.enc_channels, self.enc_heads, strict=False)) + list(
            zip(self.dec_channels, self.dec_heads, strict=False)
        ):
            if h < 1 or c % h:
                out.append(f"{c} channels do not split into {h} heads")
        ints = self.enc_depths + self.enc_channels + self.enc_patch_size + self.dec_channels + self.dec_patch_size
        if min(ints, default=1) < 1 or min(self.dec_depths, default=0) < 0:
            out.append("depths, channels and patch sizes must be positive")
        if not self.orders or any(o not in ORDERS for o in self.orders):
            out.append(f"orders {list(self.orders)} must be a non-empty list from {list(ORDERS)}")
        if self.mode not in MODES:
            out.append(f"mode {self.mode!r} is not one of {MODES}")
        if self.backend not in BACKENDS:
            out.append(f"backend {self.backend!r} is not one of {BACKENDS}")
        if not 0 <= self.upcast_level < N_STAGES:
            out.append(f"upcast_level {self.upcast_level} must lie in 0..{N_STAGES - 1}")
        if not 0.0 <= self.drop_path < 1.0 or self.grid_size <= 0 or self.in_channels < 1:
            out.append("drop_path must lie in [0, 1), grid_size and in_channels must be positive")
        return out

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> PTv3Config:
        if name not in PRESETS:
            raise ValueError(f"unknown PointTransformerV3 preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @property
    def out_channels(self) -> int:
        if self.mode == "encoder-decoder":
            return self.dec_channels[0]
        return sum(self.enc_channels[self.upcast_level :])


_FINETUNE_DECODER = dict(dec_depths=(2, 2, 2, 2), dec_channels=(64, 96, 192, 384), dec_heads=(4, 6, 12, 24))
PRESETS: dict[str, dict[str, Any]] = {
    "base": dict(  # spec C / Table 5; decoder of spec E
        enc_depths=(3, 3, 3, 12, 3),
        enc_channels=(48, 96, 192, 384, 512),
        enc_heads=(3, 6, 12, 24, 32),
        enc_patch_size=(1024,) * 5,
        dec_patch_size=(1024,) * 4,
        **_FINETUNE_DECODER,
    ),
    "large": dict(
        enc_depths=(3, 3, 3, 12, 3),
        enc_channels=(64, 128, 256, 512, 768),
        enc_heads=(4, 8, 16, 32, 48),
        enc_patch_size=(1024,) * 5,
        dec_patch_size=(1024,) * 4,
        **_FINETUNE_DECODER,
    ),
    "tiny": dict(  # CPU tests and smoke runs
        enc_depths=(1, 1, 1, 2, 1),
        enc_channels=(16, 32, 48, 64, 96),
        enc_heads=(1, 2, 3, 4, 6),
        enc_patch_size=(64,) * 5,
        dec_depths=(1, 1, 1, 1),
        dec_channels=(16, 32, 48, 64),
        dec_heads=(1, 2, 3, 4),
        dec_patch_size=(64,) * 4,
    ),
}
