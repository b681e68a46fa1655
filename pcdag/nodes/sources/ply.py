"""PLYSource: a folder of ``.ply`` point clouds, one scene per file."""

from __future__ import annotations

from pathlib import Path

import attrs

from pcdag.datasets import ply
from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.node import SceneRef, SceneSource
from pcdag.graphs.params import of_type, param, subset_of
from pcdag.graphs.registry import register
from pcdag.nodes.sources.parts.common import keep_splits, scene_cloud


@register
class PLYSource(SceneSource):
    """Read ``.ply`` files: ``root/*.ply`` are split ``train``, ``root/{train,val,test}/*.ply`` that split.

    The room of a scene is its file stem (so ``train/a.ply`` and ``val/a.ply`` are refused as one room in two
    splits). ``fields`` lists what each file must carry besides ``coord``: a file missing one is an error naming
    the file and the properties it has. ``root`` may also be a single ``.ply`` file.
    """

    version = 1

    @attrs.frozen
    class Params:
        root: str = param(
            validator=of_type(str), doc="a folder of .ply files (or one .ply file)", path="in", cache=False
        )
        splits: list[str] = param(["train"], subset_of(*ply.SPLITS), doc="splits to list and load")
        fields: list[str] = param(["color"], subset_of("color", "normal", "segment", "instance"), doc="fields to read")

    def scenes(self) -> list[SceneRef]:
        root = Path(self.params.root).expanduser()
        base = root.parent if root.is_file() else root
        refs = [
            SceneRef(path.relative_to(base).with_suffix("").as_posix(), split, path.stem, (str(path),))
            for split, path in ply.list_ply(root)
        ]
        return keep_splits(refs, self.params.splits, f"PLYSource({root})")

    def load(self, ref: SceneRef) -> PointCloud:
        path = ref.paths[0]
        return scene_cloud(ply.read_ply(Path(path), self.params.fields), ref, path)

    def provides(self) -> frozenset[str]:
        return frozenset({"coord", *self.params.fields})
