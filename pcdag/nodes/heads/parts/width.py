"""How a head meets its input: its width (its ``in_channels`` parameter, or the ``out_channels`` of the backbone it
is tied to), and applying it to a backbone's per-point features."""

from __future__ import annotations

from collections.abc import Mapping

import attrs
from torch import nn

from pcdag.graphs.batch import Encoded


def input_width(node: str, given: int, inputs: Mapping[str, nn.Module], port: str = "backbone") -> int:
    """``given`` when non-zero, else the module on ``port``'s ``out_channels``; both given must agree."""
    backbone = inputs.get(port)
    width = getattr(backbone, "out_channels", None) if backbone is not None else None
    if backbone is not None and not isinstance(width, int):
        raise ValueError(
            f"{node}: the module on port {port!r} ({type(backbone).__name__}) has no integer out_channels; "
            "set the parameter in_channels"
        )
    if given == 0 and width is None:
        raise ValueError(f"{node}: in_channels is 0 and no module is connected to port {port!r}")
    if given and width is not None and given != width:
        raise ValueError(
            f"{node}: in_channels = {given} but the backbone on port {port!r} gives {width} channels; set "
            "in_channels to 0 (use the backbone's) or to the same width"
        )
    return given or width  # type: ignore[return-value]


def apply_head(node: str, module: nn.Module | None, features: Encoded, width: int) -> Encoded:
    """``module`` on ``features.feat`` ``[M, width]``: the features with ``feat`` replaced by the head's output."""
    if module is None:
        raise ValueError(f"{node}: forward() needs the module returned by build()")
    if features.feat.ndim != 2 or features.feat.shape[1] != width:
        raise ValueError(
            f"{node}: features have shape {list(features.feat.shape)}, the head takes [M, {width}]; "
            "connect the backbone that made them to port 'backbone' or set in_channels"
        )
    return attrs.evolve(features, feat=module(features.feat))
