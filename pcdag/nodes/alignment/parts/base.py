"""What the alignment nodes share: preprocessing transforms that run offline first (also allowed in the loader)."""

from __future__ import annotations

from pcdag.graphs.node import CloudTransform
from pcdag.graphs.ports import Placement


class AlignmentTransform(CloudTransform):
    """Base of the alignment chain's nodes (spec section D): role ``alignment``, placement offline by default."""

    role = "alignment"
    placements = (Placement.OFFLINE, Placement.LOADER)
