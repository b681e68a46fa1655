"""ScanNetSource: ScanNet v2 scans in the Pointcept ``.npy`` layout."""

from __future__ import annotations

from pathlib import Path

import attrs

from pcdag.datasets import scannet
from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.node import SceneRef, SceneSource
from pcdag.graphs.params import of_type, one_of, param, subset_of
from pcdag.graphs.registry import register
from pcdag.nodes.sources.parts.common import keep_splits, scene_cloud


@register
class ScanNetSource(SceneSource):
    """Read ScanNet scans laid out as ``root/<split>/<scan>/*.npy`` (Pointcept preprocessing).

    Scans ``sceneXXXX_YY`` of one room ``sceneXXXX`` must share a split; ``scenes()`` refuses a room found in two
    split folders. ``coord`` is always read (float64 files are converted to float32); ``fields`` picks the rest;
    ``segment`` is read from ``segment20.npy`` or ``segment40.npy`` (``labels``), keeping its integer dtype.
    """

    version = 1

    @attrs.frozen
    class Params:
        root: str = param(
            validator=of_type(str), doc="folder holding train/ val/ test/ scan folders", path="in-dir", cache=False
        )
        splits: list[str] = param(["train"], subset_of(*scannet.SPLITS), doc="splits to list and load")
        labels: str = param("segment20", one_of(*scannet.LABEL_FILES), doc="label file read into 'segment'")
        fields: list[str] = param(
            ["color", "segment", "instance"], subset_of("color", "normal", "segment", "instance"), doc="fields to read"
        )

    def scenes(self) -> list[SceneRef]:
        p = self.params
        root = Path(p.root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"ScanNetSource: root {root.absolute()} does not exist or is not a folder")
        on_disk = [s for s in scannet.SPLITS if (root / s).is_dir()]
        files = scannet.file_names(p.fields, p.labels).values()
        refs = [
            SceneRef(scan.name, split, scannet.room_of(scan.name), tuple(str(scan / f) for f in files))
            for split, scan in scannet.list_scans(root, sorted(set(on_disk) | set(p.splits)))
        ]
        return keep_splits(refs, p.splits, f"ScanNetSource({root})")

    def load(self, ref: SceneRef) -> PointCloud:
        scan = Path(ref.paths[0]).parent
        arrays = scannet.read_scan(scan, self.params.fields, self.params.labels)
        return scene_cloud(arrays, ref, str(scan))

    def provides(self) -> frozenset[str]:
        return frozenset({"coord", *self.params.fields})
