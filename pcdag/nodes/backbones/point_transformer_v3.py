"""PointTransformerV3: the backbone node; its module maps a ``PointBatch`` to ``Encoded`` features.

The architecture, presets and forward pass live in ``ptv3/``; this node turns parameters into a ``PTv3Config``
(preset values unless overridden), owns the built module and implements the backbone protocol
(``pcdag.graphs.backbone``): checkpoints of Pointcept / Sonata load and export through ``ptv3.pointcept`` (see
``docs/pointcept.md``), its module's ``memory`` is ``ptv3.memory``'s model.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    import torch

from pcdag.graphs.backbone import BackboneNode, WeightsError
from pcdag.graphs.node import FieldEffect, effect
from pcdag.graphs.params import (
    ParamError,
    in_range,
    integer,
    of_type,
    one_of,
    or_none,
    param,
    subset_of,
    whole_numbers,
)
from pcdag.graphs.registry import register
from pcdag.nodes.backbones.ptv3.config import ORDERS, PRESETS, PTv3Config


@register
class PointTransformerV3(BackboneNode):
    """Point Transformer V3 backbone (Sonata variant): five stages of serialised patch attention over voxels.

    ``mode: encoder`` (pre-training) up-casts the stage outputs to ``upcast_level`` (Base at level 2: 1088
    channels); ``mode: encoder-decoder`` (fine-tuning) unpools to the input points. Overrides left ``null`` come
    from ``preset``.
    """

    version = 1
    foreign = "Pointcept PT-v3m2 (Sonata)"

    @attrs.frozen
    class Params:
        preset: str = param("base", one_of(*PRESETS), doc="tiny (CPU tests) | base | large (paper Table 5)")
        mode: str = param("encoder", one_of("encoder", "encoder-decoder"), doc="pre-training | fine-tuning")
        upcast_level: int = param(2, integer(0, 4), doc="encoder mode: level the features are up-cast to")
        in_channels: int = param(9, integer(1, 1024), doc="input feature width (xyz, colour, normal)")
        patch_size: int | None = param(None, or_none(integer(1, 1 << 16), "preset"), unit="points", doc="all stages")
        drop_path: float | None = param(
            None, or_none(in_range(0.0, 1.0, hi_open=True), "preset"), doc="last block's rate"
        )
        enc_depths: list | None = param(
            None, or_none(whole_numbers(5, 1, "one per stage"), "preset"), doc="blocks per stage"
        )
        enc_channels: list | None = param(
            None, or_none(whole_numbers(5, 1, "one per stage"), "preset"), doc="channels per stage"
        )
        enc_heads: list | None = param(
            None, or_none(whole_numbers(5, 1, "one per stage"), "preset"), doc="attention heads per stage"
        )
        orders: list = param(list(ORDERS), subset_of(*ORDERS), doc="serialisation orders; block i uses i mod len")
        shuffle_orders: bool = param(True, one_of(True, False), doc="re-draw the order of orders per serialisation")
        mask_token: bool = param(True, one_of(True, False), doc="learnable token for masked points")
        grid_size: float = param(0.02, in_range(1e-4, 10.0), unit="m", doc="voxel edge when the batch has none")
        backend: str = param("auto", one_of("auto", "torch", "spconv"), doc="sparse convolution backend")
        weights: str | None = param(
            None,
            or_none(of_type(str), "preset"),
            doc="initial weights: a Pointcept/Sonata checkpoint or `pcdag export` file",
            path="in-file",
        )
        frozen: bool = param(False, one_of(False, True), doc="keep the weights fixed (linear probing)")
        block_lr_scale: float = param(
            1.0, in_range(0.0, 1.0, lo_open=True), doc="learning-rate factor of the attention blocks (fine-tuning: 0.1)"
        )
        # cache=False: memory against time, not what is computed; left out of cache keys and checkpoint signatures
        checkpoint: bool = param(
            False,
            one_of(False, True),
            doc="activation checkpointing: training keeps only each block's input, recomputed in backward",
            cache=False,
        )

    def __post_init__(self) -> None:
        p = self.params
        overrides: dict[str, Any] = {}
        if p.patch_size is not None:
            overrides.update(enc_patch_size=(p.patch_size,) * 5, dec_patch_size=(p.patch_size,) * 4)
        for name in ("drop_path", "enc_depths", "enc_channels", "enc_heads"):
            if getattr(p, name) is not None:
                overrides[name] = getattr(p, name)
        try:
            self.config = PTv3Config.preset(
                p.preset,
                mode=p.mode,
                upcast_level=p.upcast_level,
                in_channels=p.in_channels,
                orders=tuple(p.orders),
                shuffle_orders=p.shuffle_orders,
                mask_token=p.mask_token,
                grid_size=p.grid_size,
                backend=p.backend,
                checkpoint=bool(p.checkpoint),
                **overrides,
            )
        except ValueError as exc:
            raise ParamError(f"{self.type_name()}: {exc}") from None

    def fields(self) -> FieldEffect:
        return effect()  # no point-cloud ports

    def build_module(self) -> torch.nn.Module:
        from pcdag.nodes.backbones.ptv3.model import PointTransformerV3Module

        module = PointTransformerV3Module(self.config)
        module.block_lr_scale = self.params.block_lr_scale
        return module

    # -- the backbone protocol: weights ---------------------------------------------------------------------------

    def architecture(self) -> dict[str, Any]:
        cfg = self.config
        fields = ("enc_depths", "enc_channels", "enc_heads", "in_channels", "mlp_ratio", "mask_token")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, getattr(cfg, k)) for k in fields)}

    def load_trained(self, module: torch.nn.Module, weights: Mapping[str, torch.Tensor], where: str) -> None:
        """A strict load, except that the decoder may be missing (an encoder checkpoint into an encoder-decoder
        module: fine-tuning keeps its fresh decoder) or left over (an encoder-decoder checkpoint into an encoder)."""
        missing, unexpected = module.load_state_dict(dict(weights), strict=False)
        bad = [f"missing {k}" for k in missing if not k.startswith("decoder.")]
        bad += [f"unexpected {k}" for k in unexpected if not k.startswith("decoder.")]
        if bad:
            raise WeightsError(f"{where}: the weights do not fit {self.type_name()}: {', '.join(bad[:8])}")

    def import_weights(self, module: torch.nn.Module, path: Path) -> None:
        from pcdag.nodes.backbones.ptv3.pointcept import import_backbone

        import_backbone(module, path)

    def export_weights(self, module: torch.nn.Module, path: Path) -> None:
        from pcdag.nodes.backbones.ptv3.pointcept import export_backbone

        export_backbone(module, path)

    @classmethod
    def params_from_foreign(cls, config: Mapping[str, Any]) -> dict[str, Any] | None:
        from pcdag.nodes.backbones.ptv3.pointcept import params_from_pointcept

        return params_from_pointcept(config)

    def feature_params(self) -> dict[str, Any]:
        """The encoder up-cast to level 0: up-casting has no weights, so any trained encoder gives full-resolution
        features this way."""
        return {"mode": "encoder", "upcast_level": 0}

    def plan_notes(self) -> list[str]:
        from pcdag.nodes.backbones.ptv3.model import count_parameters

        cfg = self.config
        where = f"level {cfg.upcast_level} (grid {cfg.grid_size * 2**cfg.upcast_level:g} m)"
        out = f"{cfg.out_channels} channels at " + (where if cfg.mode == "encoder" else "the input points")
        if not hasattr(self, "_n_parameters"):
            self._n_parameters = count_parameters(cfg)  # a meta-device build: no memory, ~0.1 s for Base
        frozen = ", frozen" if self.params.frozen else ""
        notes = [f"{self._n_parameters / 1e6:.1f}M parameters ({self.params.preset}, {cfg.mode}{frozen}); {out}"]
        if cfg.checkpoint:
            notes.append("activation checkpointing: blocks recomputed in backward (less memory, more time)")
        if self.params.weights is not None:
            notes.append(f"initial weights from {self.params.weights} (Pointcept/Sonata names mapped)")
        return notes
