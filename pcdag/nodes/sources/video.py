"""VideoSource: video files (room walkthroughs), one scene per video, decoded into sampled RGB frames."""

from __future__ import annotations

from pathlib import Path

import attrs

from pcdag.datasets import video
from pcdag.graphs.frames import Frames
from pcdag.graphs.node import FieldEffect, Out, SceneRef, SceneSource, effect
from pcdag.graphs.params import in_range, integer, of_type, param, subset_of
from pcdag.graphs.ports import VIDEO
from pcdag.graphs.registry import register
from pcdag.nodes.sources.parts.common import keep_splits


def _videos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in video.VIDEO_SUFFIXES)


def find_videos(root: Path) -> list[tuple[str, Path]]:
    """``(split, video)``: ``root`` itself when it is a file, ``root/*.<video>`` (split ``train``) and
    ``root/{train,val,test}/*.<video>``. Reads no video."""
    if root.is_file():
        if root.suffix.lower() not in video.VIDEO_SUFFIXES:
            raise ValueError(f"{root}: not a video file (expected one of {', '.join(video.VIDEO_SUFFIXES)})")
        return [("train", root)]
    if not root.is_dir():
        raise FileNotFoundError(f"video root {root.absolute()} does not exist")
    found = [("train", p) for p in _videos(root)]
    for split in video.SPLITS:
        if (root / split).is_dir():
            found += [(split, p) for p in _videos(root / split)]
    if not found:
        raise FileNotFoundError(
            f"no {'/'.join(video.VIDEO_SUFFIXES)} videos in {root} nor in {root}/{{train,val,test}}"
        )
    return found


@register
class VideoSource(SceneSource):
    """Decode room-walkthrough videos into sampled RGB frames, one scene per video file.

    ``root`` is a video file (``.mp4 .mov .mkv .avi .webm``), a folder of them (split ``train``), or a folder with
    ``train/ val/ test/`` sub-folders. The room of a scene is the video's file stem. Frames are sampled at ``fps``
    (nearest frames to each tick), then capped at ``max_frames`` evenly spaced ones; ``skip_seconds`` drops the
    start (the paper skips the first 10 s of tours). Frames are shrunk to at most ``pixel_budget`` pixels with
    sides multiples of ``multiple`` (never enlarged). With ``known_cameras`` a ``<stem>.cameras.npz`` sidecar
    beside a video gives poses and intrinsics (videos without one load without cameras).
    """

    version = 1
    requires = ("av",)
    outputs = {"frames": Out(VIDEO, "sampled RGB frames of one video, with timestamps")}

    @attrs.frozen
    class Params:
        root: str = param(
            validator=of_type(str),
            doc="a video file, or a folder of videos (optionally train/val/test)",
            path="in",
            cache=False,
        )
        splits: list[str] = param(["train"], subset_of(*video.SPLITS), doc="splits to list and load")
        fps: float = param(2.0, in_range(0.0, 1000.0), unit="Hz", doc="frames per second to sample (0 = all)")
        max_frames: int = param(0, integer(0, None), doc="evenly spaced frames at most (0 = no cap)")
        pixel_budget: int = param(255_000, integer(0, None), unit="px", doc="pixels per frame at most (0 = keep)")
        multiple: int = param(14, integer(1, 256), unit="px", doc="frame sides are multiples of this")
        skip_seconds: float = param(0.0, in_range(0.0, None), unit="s", doc="drop the start of every video")
        known_cameras: bool = param(False, of_type(bool), doc="read poses/intrinsics from <stem>.cameras.npz")

    def scenes(self) -> list[SceneRef]:
        root = Path(self.params.root).expanduser()
        base = root.parent if root.is_file() else root
        refs = []
        for split, path in find_videos(root):
            sidecar = video.sidecar_path(path)
            paths = (str(path), str(sidecar)) if self.params.known_cameras and sidecar.is_file() else (str(path),)
            refs.append(SceneRef(path.relative_to(base).with_suffix("").as_posix(), split, path.stem, paths))
        return keep_splits(refs, self.params.splits, f"VideoSource({root})")

    def load(self, ref: SceneRef) -> Frames:
        p = self.params
        frames = video.decode(
            ref.paths[0],
            fps=p.fps or None,
            max_frames=p.max_frames,
            pixel_budget=p.pixel_budget,
            multiple=p.multiple,
            skip_seconds=p.skip_seconds,
            known_cameras=len(ref.paths) > 1,
        )
        frames.meta.update({"scene": ref.id, "split": ref.split, "room": ref.room})
        return frames

    def provides(self) -> frozenset[str]:
        return frozenset()

    def fields(self) -> FieldEffect:
        return effect()
