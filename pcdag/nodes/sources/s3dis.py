"""S3DISSource: Stanford indoor rooms in the native annotation layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from pcdag.datasets import s3dis
from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.node import SceneRef, SceneSource
from pcdag.graphs.params import ParamError, of_type, param, subset_of
from pcdag.graphs.registry import register
from pcdag.nodes.sources.parts.common import keep_splits, scene_cloud


def _areas(_inst: Any, a: attrs.Attribute, value: Any) -> None:
    ok = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if not ok or not all(1 <= v <= 6 for v in value) or len(set(value)) != len(value):
        raise ParamError(f"{a.name} = {value!r} must be a list of distinct area numbers 1..6")


_areas.allowed = "list of 1..6"  # type: ignore[attr-defined]


@register
class S3DISSource(SceneSource):
    """Read S3DIS rooms ``root/Area_N/<room>/Annotations/<class>_<i>.txt``; one scene per room.

    A room is in split ``val`` when its area is in ``val_areas``, else ``train``. ``segment`` is the index of the
    class among the 13 S3DIS classes (an unknown class such as ``stairs`` gets -1, ignored); ``instance`` is one id
    per annotation file.
    """

    version = 1

    @attrs.frozen
    class Params:
        root: str = param(validator=of_type(str), doc="folder holding Area_1 .. Area_6", path="in-dir", cache=False)
        splits: list[str] = param(["train"], subset_of("train", "val"), doc="splits to list and load")
        val_areas: list[int] = param([5], _areas, doc="areas held out as the val split")

    def scenes(self) -> list[SceneRef]:
        root = Path(self.params.root).expanduser()
        refs = []
        for area, room in s3dis.list_rooms(root):
            split = "val" if area in self.params.val_areas else "train"
            name = f"Area_{area}/{room.name}"
            refs.append(SceneRef(name, split, name, tuple(str(f) for f in s3dis.annotation_files(room))))
        return keep_splits(refs, self.params.splits, f"S3DISSource({root})")

    def load(self, ref: SceneRef) -> PointCloud:
        room = Path(self.params.root).expanduser() / ref.id
        arrays = s3dis.read_annotations([Path(f) for f in ref.paths], room / "Annotations")
        return scene_cloud(arrays, ref, str(room))

    def provides(self) -> frozenset[str]:
        return frozenset({"coord", "color", "segment", "instance"})
