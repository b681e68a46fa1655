"""Export a trained backbone from a training checkpoint in its foreign layout (e.g. Pointcept's), for users of
the foreign framework.

The checkpoint carries its resolved graph, so the backbone is rebuilt exactly as trained (preset, channels;
``pcdag.runtime.backbone``) and the backbone node writes its weights (``export_weights`` of the backbone protocol;
``docs/pointcept.md``).
"""

from __future__ import annotations

from pathlib import Path

from pcdag.runtime.backbone import checkpoint_file, load_backbone


def export_from_checkpoint(source: Path, out: Path, node: str | None = None) -> Path:
    """Write node ``node``'s module of the checkpoint ``source`` (a file, or a run directory: its newest
    checkpoint) to ``out``; returns the checkpoint used. ``node`` None: the graph's backbone."""
    path = checkpoint_file(source)
    backbone, module = load_backbone(path, node=node)
    backbone.export_weights(module, out)
    return path
