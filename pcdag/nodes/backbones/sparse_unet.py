"""SparseUNet: the sparse-convolution U-Net backbone node (Pointcept's SpUNet-v1m1 / MinkUNet family).

The architecture and forward pass live in ``spunet/model.py``; this node turns parameters into a
``SparseUNetConfig`` (preset values unless overridden), builds the module and reads / writes Pointcept
``SpUNet-v1m1`` checkpoints (``spunet/pointcept.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    import torch

from pcdag.graphs.backbone import BackboneNode
from pcdag.graphs.node import FieldEffect, effect
from pcdag.graphs.params import ParamError, in_range, integer, of_type, one_of, or_none, param, whole_numbers
from pcdag.graphs.registry import register
from pcdag.nodes.backbones.spunet.config import BACKENDS, N_LEVELS, PRESETS, SparseUNetConfig


@register
class SparseUNet(BackboneNode):
    """Sparse-convolution U-Net: a 5x5x5 stem, four 2x down-samplings with residual blocks, four up-samplings with
    skip concatenation; features of the last decoder width for every input point (voxels mapped back).

    Presets: ``tiny`` (CPU tests), ``14a``, ``18a``, ``34c`` (MinkUNet34C, Pointcept's default). Overrides left
    ``null`` come from ``preset``.
    """

    version = 1
    foreign = "Pointcept SpUNet-v1m1"

    @attrs.frozen
    class Params:
        preset: str = param("34c", one_of(*PRESETS), doc="tiny (CPU tests) | 14a | 18a | 34c (MinkUNet variants)")
        channels: list | None = param(
            None,
            or_none(whole_numbers(2 * N_LEVELS, 1, "4 down, 4 up"), "preset"),
            doc="width per level (4 down, 4 up)",
        )
        layers: list | None = param(
            None, or_none(whole_numbers(2 * N_LEVELS, 1, "4 down, 4 up"), "preset"), doc="residual blocks per level"
        )
        base_channels: int | None = param(None, or_none(integer(1, 4096), "preset"), doc="the stem's width")
        in_channels: int = param(9, integer(1, 1024), doc="input feature width (xyz, colour, normal)")
        grid_size: float = param(0.02, in_range(1e-4, 10.0), unit="m", doc="voxel edge when the batch has none")
        backend: str = param("auto", one_of(*BACKENDS), doc="sparse convolution backend")
        mask_token: bool = param(False, one_of(False, True), doc="learnable input-feature token for masked points")
        weights: str | None = param(
            None,
            or_none(of_type(str), "preset"),
            doc="initial weights: a Pointcept SpUNet-v1m1 checkpoint or `pcdag export` file",
            path="in-file",
        )
        frozen: bool = param(False, one_of(False, True), doc="keep the weights fixed (linear probing)")

    def __post_init__(self) -> None:
        p = self.params
        overrides = {k: getattr(p, k) for k in ("channels", "layers", "base_channels") if getattr(p, k) is not None}
        try:
            self.config = SparseUNetConfig.preset(
                p.preset,
                in_channels=p.in_channels,
                grid_size=p.grid_size,
                backend=p.backend,
                mask_token=p.mask_token,
                **overrides,
            )
        except ValueError as exc:
            raise ParamError(f"{self.type_name()}: {exc}") from None

    def fields(self) -> FieldEffect:
        return effect()  # no point-cloud ports

    def build_module(self) -> torch.nn.Module:
        from pcdag.nodes.backbones.spunet.model import SparseUNetModule

        return SparseUNetModule(self.config)

    def architecture(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "channels": list(cfg.channels),
            "layers": list(cfg.layers),
            "base_channels": cfg.base_channels,
            "in_channels": cfg.in_channels,
            "mask_token": cfg.mask_token,
        }

    def import_weights(self, module: torch.nn.Module, path: Path) -> None:
        from pcdag.nodes.backbones.spunet.pointcept import import_backbone

        import_backbone(module, Path(path), self.type_name(), self.architecture())

    def export_weights(self, module: torch.nn.Module, path: Path) -> None:
        from pcdag.nodes.backbones.spunet.pointcept import export_backbone

        export_backbone(module, Path(path))

    @classmethod
    def params_from_foreign(cls, config: Mapping[str, Any]) -> dict[str, Any] | None:
        from pcdag.nodes.backbones.spunet.pointcept import params_from_pointcept

        return params_from_pointcept(config)

    def plan_notes(self) -> list[str]:
        from pcdag.nodes.backbones.spunet.model import count_parameters

        cfg = self.config
        if not hasattr(self, "_n_parameters"):
            self._n_parameters = count_parameters(cfg)  # a meta-device build: no memory
        frozen = ", frozen" if self.params.frozen else ""
        notes = [
            f"{self._n_parameters / 1e6:.1f}M parameters ({self.params.preset}{frozen}); {cfg.out_channels} "
            f"channels at the {cfg.grid_size:g} m voxels of the input points"
        ]
        if self.params.weights is not None:
            notes.append(f"initial weights from {self.params.weights} ({self.foreign} names)")
        return notes
