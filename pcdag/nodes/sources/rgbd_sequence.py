"""RGBDSequenceSource: posed RGB-D video sequences (7-Scenes layout), one scene per sequence."""

from __future__ import annotations

from pathlib import Path

import attrs

from pcdag.datasets import rgbd
from pcdag.graphs.node import FieldEffect, Out, SceneRef, SceneSource, effect
from pcdag.graphs.params import in_range, integer, of_type, param, subset_of
from pcdag.graphs.ports import RGBD_FRAMES
from pcdag.graphs.registry import register
from pcdag.nodes.sources.parts.common import keep_splits


@register
class RGBDSequenceSource(SceneSource):
    """Read posed colour + depth frames of RGB-D sequences laid out like Microsoft 7-Scenes.

    ``root`` is one sequence folder (``frame-XXXXXX.{color.jpg,depth.png,pose.txt}``), a folder of sequences
    (split ``train``), or ``root/{train,val,test}/<sequence>``. The room of a sequence is its folder name.
    Depth PNGs hold raw 16-bit values divided by ``depth_scale`` to get metres (0 and 65535 → 0.0, invalid);
    poses are camera-to-world; ``camera-intrinsics.txt`` (sequence folder or its parent) gives the 3x3 camera,
    else the 7-Scenes default fx = fy = 585, cx = 320, cy = 240. Output: ``RGBDFrames`` (not a point cloud).
    """

    version = 1
    outputs = {"frames": Out(RGBD_FRAMES, "posed colour + depth frames of one sequence")}

    @attrs.frozen
    class Params:
        root: str = param(
            validator=of_type(str), doc="a sequence folder, or a folder of sequence folders", path="in-dir", cache=False
        )
        splits: list[str] = param(["train"], subset_of(*rgbd.SPLITS), doc="splits to list and load")
        frame_step: int = param(1, integer(1, 10_000), doc="keep every k-th frame")
        max_frames: int = param(0, integer(0, None), doc="keep at most this many frames (0 = all)")
        depth_scale: float = param(1000.0, in_range(0.0, None, lo_open=True), unit="raw/m", doc="depth units per m")

    def _frames(self, seq: Path) -> list[tuple[str, Path]]:
        frames = rgbd.list_frames(seq)[:: self.params.frame_step]
        return frames[: self.params.max_frames] if self.params.max_frames else frames

    def scenes(self) -> list[SceneRef]:
        root = Path(self.params.root).expanduser()
        refs = []
        for split, seq in rgbd.find_sequences(root):
            name = seq.name if seq == root else seq.relative_to(root).as_posix()
            k_file = rgbd.intrinsics_file(seq)
            paths = [str(k_file)] if k_file else []
            for fid, color in self._frames(seq):
                paths += [str(color), str(seq / f"{fid}.depth.png"), str(seq / f"{fid}.pose.txt")]
            refs.append(SceneRef(name, split, seq.name, tuple(paths)))
        return keep_splits(refs, self.params.splits, f"RGBDSequenceSource({root})")

    def load(self, ref: SceneRef) -> rgbd.RGBDFrames:
        root = Path(self.params.root).expanduser()
        seq = root if rgbd.is_sequence(root) else root / ref.id
        frames = rgbd.read_frames(seq, self._frames(seq), self.params.depth_scale)
        frames.meta.update({"scene": ref.id, "split": ref.split, "room": ref.room})
        return frames.validate(where=str(seq))

    def provides(self) -> frozenset[str]:
        return frozenset()

    def fields(self) -> FieldEffect:
        return effect()
