"""Port types: what flows along an edge, and the per-point field contracts of point clouds.

A port type is a named kind of data with an optional parent (``Mesh`` is a ``PointCloud``: its vertices are
points), so ``accepts`` is a walk up the parent chain. Point clouds additionally carry *fields*; which fields
are present is not part of the port type but is propagated through the graph by the compiler
(``pcdag.compiler.fields``), using each node's declared reads and writes.
"""

from __future__ import annotations

import enum

import attrs
import numpy as np


@attrs.frozen
class PortType:
    """A kind of data flowing along an edge. ``parent`` makes it a sub-type (accepted where the parent is)."""

    name: str
    doc: str = ""
    parent: PortType | None = None

    def accepts(self, other: PortType) -> bool:
        """True when data of type ``other`` may be fed into a port of this type."""
        t: PortType | None = other
        while t is not None:
            if t.name == self.name:
                return True
            t = t.parent
        return False

    def __str__(self) -> str:
        return self.name


POINT_CLOUD = PortType("PointCloud", "one scene's points with named per-point fields")
MESH = PortType("Mesh", "a point cloud of vertices plus triangle faces", parent=POINT_CLOUD)
FRAMES = PortType("Frames", "RGB frames of one scene, with whatever is known of depth and cameras")
RGBD_FRAMES = PortType("RGBDFrames", "posed colour + depth frames with intrinsics", parent=FRAMES)
VIDEO = PortType("Video", "decoded RGB frames of one video with timestamps", parent=FRAMES)
POSED_IMAGES = PortType("PosedImages", "RGB images with camera poses and intrinsics")
PAIRING = PortType("Pairing", "point-to-pixel correspondences between a cloud and images")
MULTI_VIEW_BATCH = PortType("MultiViewBatch", "several augmented views of scenes, concatenated, with offsets")
FEATURES = PortType("Features", "per-point feature tensor aligned with a batch")
LOSS = PortType("Loss", "a scalar loss with named terms")
MODEL = PortType("Model", "a torch module (possibly with frozen weights)")
METRICS = PortType("Metrics", "named evaluation numbers")

PORT_TYPES: dict[str, PortType] = {
    t.name: t
    for t in (
        POINT_CLOUD,
        MESH,
        FRAMES,
        RGBD_FRAMES,
        VIDEO,
        POSED_IMAGES,
        PAIRING,
        MULTI_VIEW_BATCH,
        FEATURES,
        LOSS,
        MODEL,
        METRICS,
    )
}


class Placement(enum.IntEnum):
    """Where a node runs. The order is the order of stages: data may only flow to equal or later stages."""

    OFFLINE = 0  # per scene, before training, on Dask
    STORE = 1  # the materialised boundary between offline and loader stages
    LOADER = 2  # per sample, in loader worker processes
    DEVICE = 3  # inside the training step
    EVAL = 4  # after training

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str | Placement) -> Placement:
        if isinstance(value, Placement):
            return value
        try:
            return cls[str(value).upper()]
        except KeyError:
            allowed = ", ".join(p.name.lower() for p in cls)
            raise ValueError(f"unknown placement {value!r}; use one of {allowed}") from None


# ---------------------------------------------------------------------------------------------- fields


@attrs.frozen
class FieldSpec:
    """Contract of one per-point field: allowed dtype kinds/dtypes and the trailing shape after N."""

    name: str
    dtypes: tuple[str, ...]  # numpy dtype names, or a kind letter: "i" any signed int, "u" unsigned, "f" float
    trailing: tuple[int, ...]  # shape after the leading N
    doc: str = ""

    def check(self, array: np.ndarray, n: int | None = None) -> str | None:
        """Return a description of the violation, or None when ``array`` satisfies the contract."""
        if not isinstance(array, np.ndarray):
            return f"field {self.name!r} is a {type(array).__name__}, expected a numpy array"
        if array.ndim != 1 + len(self.trailing) or tuple(array.shape[1:]) != self.trailing:
            want = "[N" + "".join(f",{t}" for t in self.trailing) + "]"
            return f"field {self.name!r} has shape {list(array.shape)}, expected {want}"
        if n is not None and array.shape[0] != n:
            return f"field {self.name!r} has {array.shape[0]} rows but the cloud has {n} points"
        dt = array.dtype
        if not any(dt.name == d or dt.kind == d for d in self.dtypes):
            return f"field {self.name!r} has dtype {dt}, expected {' or '.join(self.dtypes)}"
        return None


FIELDS: dict[str, FieldSpec] = {
    f.name: f
    for f in (
        FieldSpec("coord", ("float32",), (3,), "xyz in metres"),
        FieldSpec("color", ("uint8", "float32"), (3,), "RGB, uint8 0..255 or float32"),
        FieldSpec("normal", ("float32",), (3,), "unit normals"),
        FieldSpec("segment", ("i",), (), "semantic class id, -1 = ignore"),
        FieldSpec("instance", ("i",), (), "instance id, -1 = none"),
        FieldSpec("origin_coord", ("float32",), (3,), "coordinates before augmentation"),
        FieldSpec("superpoint", ("i",), (), "over-segmentation id (survives augmentation)"),
        FieldSpec("grid_coord", ("i",), (3,), "integer voxel coordinates from the last grid sampling"),
    )
}
REQUIRED_FIELDS = frozenset({"coord"})


def field_spec(name: str) -> FieldSpec | None:
    """Contract for a known field; extra fields (any other name) only need N leading rows."""
    return FIELDS.get(name)
