"""Export a trained backbone from a training checkpoint in the layout Pointcept/Sonata users load.

The checkpoint carries its resolved graph, so the backbone is rebuilt exactly as trained (preset, channels;
``pcdag.runtime.backbone``) and its weights are written under Pointcept's names
(``pcdag.nodes.backbones.ptv3.pointcept``, ``docs/pointcept.md``).
"""

from __future__ import annotations

from pathlib import Path

from pcdag.nodes.backbones.ptv3.pointcept import export_backbone
from pcdag.runtime.backbone import checkpoint_file, load_backbone


def export_from_checkpoint(source: Path, out: Path, node: str = "student") -> Path:
    """Write node ``node``'s module of the checkpoint ``source`` (a file, or a run directory: its newest
    checkpoint) to ``out``; returns the checkpoint used."""
    path = checkpoint_file(source)
    export_backbone(load_backbone(path, node=node), out)
    return path
