"""SplitScenes: one walkthrough video → one sub-video per room (the RoomTours video segmentation)."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from pcdag.datasets import frame_classifiers as fc
from pcdag.datasets import scene_split as ss
from pcdag.graphs.frames import Frames
from pcdag.graphs.node import FieldEffect, In, Node, Out, Parts, effect
from pcdag.graphs.params import in_range, of_type, one_of, param
from pcdag.graphs.ports import VIDEO, Placement
from pcdag.graphs.registry import register

SECONDS = in_range(0.0, None)


@register
class SplitScenes(Node):
    """Split a walkthrough video into single-room scenes by frame labels and temporal run rules.

    Frames are labelled at ``label_fps`` by the classifier: ``shots`` (no weights: colour-histogram cuts, every
    shot its own room, all frames indoor; a cut is a jump of ≥ ``threshold`` × the median across which the
    thumbnails overlap less than ``max_overlap`` at any shift, and whose new content lasts ``sustain_seconds``
    while staying ≥ ``min_novelty`` from every frame of the segment so far: a pan within a room is not a cut)
    or ``clip`` (CLIP zero-shot indoor/outdoor and room type, from local
    weights ``clip_weights``, never downloaded). The rules of ``pcdag.datasets.scene_split`` then smooth labels
    over ``smoothing_seconds``, drop outdoor frames and indoor runs < ``min_indoor_seconds``, merge runs <
    ``merge_run_seconds`` and segments < ``min_segment_seconds`` into neighbours, and drop sequences <
    ``min_seconds``. Each kept sequence becomes part ``scene00``, ``scene01``, ... (stored as ``<video>/sceneNN``):
    the same kind of Frames restricted to its frames (timestamps, depths, poses kept), with ``meta["segment"] =
    [t0, t1]`` in seconds and a ``SplitScenes`` entry in ``meta["report"]``. A video with no sequence long enough
    raises ``ValueError`` (the offline runtime quarantines it).
    """

    role = "sources"
    placements = (Placement.OFFLINE,)
    version = 2
    expands = True
    per_item = True
    inputs = {"frames": In(VIDEO, doc="decoded frames of one video, with timestamps")}
    outputs = {"frames": Out(VIDEO, doc="one part per single-room sequence: scene00, scene01, ...")}

    @attrs.frozen
    class Params:
        classifier: str = param("shots", one_of("shots", "clip"), doc="shots: histogram cuts; clip: CLIP labels")
        clip_weights: str | None = param(
            None,
            of_type(str, type(None), allowed="a path or null"),
            doc="clip: local weights (file or HF folder)",
            path="in",
        )
        clip_model: str = param("ViT-B-32", of_type(str), doc="clip: open_clip architecture of a weights file")
        rooms: list[str] = param(list(ss.REFERENCE_ROOMS), of_type(list), doc="clip: room-type prompts")
        device: str = param("cpu", one_of("cpu", "cuda"), doc="clip: where the model runs")
        label_fps: float = param(5.0, SECONDS, unit="Hz", doc="classify frames at this rate (0 = every frame)")
        smoothing_seconds: float = param(0.5, SECONDS, unit="s", doc="labels take the mode of this window")
        min_indoor_seconds: float = param(10.0, SECONDS, unit="s", doc="shorter indoor runs are dropped")
        merge_run_seconds: float = param(2.0, SECONDS, unit="s", doc="shorter label runs join a neighbour")
        min_segment_seconds: float = param(10.0, SECONDS, unit="s", doc="shorter segments join a neighbour")
        min_seconds: float = param(10.0, SECONDS, unit="s", doc="shorter sequences are dropped")
        threshold: float = param(2.5, in_range(1.0, None), doc="shots: cut jump ≥ this × the median jump")
        min_jump: float = param(0.2, in_range(0.0, 1.0), doc="shots: and ≥ this Hellinger histogram distance")
        sustain_seconds: float = param(
            2.0, SECONDS, unit="s", doc="shots: a cut's new content must last this long after the jump"
        )
        min_novelty: float = param(
            0.3, in_range(0.0, 1.0), doc="shots: ... each of those frames this far (Hellinger) from all the segment"
        )
        max_overlap: float = param(
            0.6, in_range(-1.0, 1.0), doc="shots: and the frames around the jump correlate less, at any shift"
        )

    def __post_init__(self) -> None:
        p = self.params
        if p.classifier == "clip" and not p.clip_weights:
            raise ValueError(
                "SplitScenes: classifier 'clip' needs clip_weights, a local CLIP checkpoint (weights are never "
                "downloaded); or use classifier 'shots', which needs no weights"
            )
        if not p.rooms or not all(isinstance(r, str) and r.strip() for r in p.rooms):
            raise ValueError(f"SplitScenes: rooms = {p.rooms!r} must be a non-empty list of room names")

    def fields(self) -> FieldEffect:
        return effect()

    def plan_notes(self) -> list[str]:
        p = self.params
        how = "colour-histogram shots" if p.classifier == "shots" else f"CLIP {p.clip_model} ({', '.join(p.rooms)})"
        return [f"labels frames by {how} at {p.label_fps or 'every'} fps; keeps sequences ≥ {p.min_seconds} s"]

    def rules(self) -> ss.Rules:
        p = self.params
        return ss.Rules(p.smoothing_seconds, p.min_indoor_seconds, p.merge_run_seconds, p.min_segment_seconds,
                        p.min_seconds)  # fmt: skip

    def classifier(self) -> fc.FrameClassifier:
        p = self.params
        if p.classifier == "clip":
            return fc.ClipClassifier(p.clip_weights, p.clip_model, p.rooms, p.device)
        return fc.ShotBoundaryClassifier(
            p.threshold,
            p.min_jump,
            window_seconds=p.smoothing_seconds / 2,
            sustain_seconds=p.sustain_seconds,
            min_novelty=p.min_novelty,
            max_overlap=p.max_overlap,
        )

    def run(self, rng: np.random.Generator, frames: Frames) -> dict[str, Any]:
        where = f"SplitScenes: video {frames.meta.get('scene', '?')!r}"
        t = _timestamps(frames, where)  # [F]
        classifier = self.classifier()
        sampled = ss.sample_frames(t, self.params.label_fps)  # [S]
        shown = frames if len(sampled) == len(frames) else frames.subset(sampled)
        indoor, room = _checked(classifier.labels(shown), len(sampled), where)
        indoor, room = ss.spread(sampled, indoor, len(t)), None if room is None else ss.spread(sampled, room, len(t))
        result = ss.split_video(t, indoor, room, self.rules())
        if not result.kept:
            raise ValueError(
                f"{where}: no single-room sequence of at least {self.params.min_seconds} s; {_why(result)}"
            )
        names = getattr(classifier, "label_names", None)
        report = {"classifier": self.params.classifier, **result.report}
        parts = []
        for i, seg in enumerate(result.kept):
            name = f"scene{i:02d}"
            parts.append((name, _part(frames, seg, t, name, report, names)))
        return {"frames": Parts(tuple(parts))}


def _timestamps(frames: Frames, where: str) -> np.ndarray:
    if frames.timestamps is not None:
        t = np.asarray(frames.timestamps, np.float64)
    elif isinstance(frames.meta.get("fps"), (int, float)) and frames.meta["fps"] > 0:
        t = np.arange(len(frames), dtype=np.float64) / frames.meta["fps"]
    else:
        raise ValueError(f"{where}: frames have no timestamps (nor meta['fps']); the run rules need seconds")
    if len(t) != len(frames) or len(t) == 0:
        raise ValueError(f"{where}: {len(t)} timestamps for {len(frames)} frames")
    try:
        ss.frame_durations(t)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return t


def _checked(labels: Any, n: int, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The classifier's (indoor [n] in [0, 1], room [n] integers or None), or a clear error."""
    indoor, room = labels
    indoor = np.asarray(indoor, np.float64)
    if indoor.shape != (n,) or not (np.isfinite(indoor).all() and (indoor >= 0).all() and (indoor <= 1).all()):
        raise ValueError(f"{where}: the classifier's indoor probabilities must be {n} numbers in [0, 1]")
    if room is not None:
        room = np.asarray(room)
        if room.shape != (n,) or room.dtype.kind not in "iu":
            raise ValueError(
                f"{where}: the classifier's room labels must be {n} integers, got {room.dtype}{room.shape}"
            )
    return indoor, room


def _why(result: ss.SplitResult) -> str:
    r = result.report
    return (
        f"{r['seconds']} s of video: {r['outdoor_seconds']} s outdoor, {r['short_indoor_runs_dropped']} indoor "
        f"run(s) too short ({r['short_indoor_seconds']} s), {r['segments_found']} segment(s) found, "
        f"{r['dropped_shorter_than_min_seconds']} too short ({r['dropped_seconds']} s)"
    )


def _part(frames: Frames, seg: ss.Segment, t: np.ndarray, name: str, report: dict, names: Any) -> Frames:
    """Frames ``seg.start:seg.stop`` (views, same class) with their own meta: segment, scene, room, report."""
    sl = slice(seg.start, seg.stop)
    pick = lambda a: None if a is None else a[sl]  # noqa: E731
    t0 = float(t[seg.start])
    meta = dict(frames.meta)
    meta["segment"] = [round(t0, 3), round(t0 + seg.seconds, 3)]
    for key in ("scene", "room"):
        if key in meta:
            meta[key] = f"{meta[key]}/{name}"
    video = {f"video_{k}": report[k] for k in ("frames", "seconds")}  # the whole video's, beside this scene's own
    own = {"frames": seg.stop - seg.start, "seconds": round(seg.seconds, 3)}
    entry = {**report, **video, **own, "part": name, "segment": meta["segment"], "label": seg.label}
    if names is not None:
        meta["room_type"] = entry["room_type"] = names[seg.label]
    meta["report"] = {**frames.meta.get("report", {}), "SplitScenes": entry}
    return attrs.evolve(
        frames,
        colors=frames.colors[sl],
        frame_ids=list(frames.frame_ids[sl]),
        timestamps=pick(frames.timestamps),
        depths=pick(frames.depths),
        poses=pick(frames.poses),
        meta=meta,
    )
