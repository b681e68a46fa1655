"""How wide a head's input is: its ``in_channels`` parameter, or the ``out_channels`` of the backbone it is tied to."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn


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
