"""Splitting videos into single-room scenes: cut detection, the run rules (property tests), the SplitScenes node.

Videos are generated here: each "room" is a palette of colours of its own hue laid out as a blocky texture that
the camera window drifts across, with pixel noise and a slight brightness flicker; rooms follow each other with
hard cuts. Durations of the rules are scaled down to fit a few seconds per room.
"""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.colors import hsv_to_rgb

from pcdag.compiler import compile_graph
from pcdag.datasets import frame_classifiers as fc
from pcdag.datasets import scene_split as ss
from pcdag.graphs import Graph, registry
from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.frames import Frames
from pcdag.graphs.node import In, Node, Out, Parts, SceneRef, SceneSource, effect
from pcdag.graphs.params import ParamError
from pcdag.graphs.ports import FRAMES, POINT_CLOUD, VIDEO
from pcdag.nodes.sources.split_scenes import SplitScenes
from pcdag.runtime.offline import run_offline
from pcdag.runtime.store import SceneStore

SCALED = dict(min_indoor_seconds=3.0, merge_run_seconds=0.5, min_segment_seconds=3.0, min_seconds=3.0)


def rooms_video(seed: int, seconds=(6.0, 7.0, 5.0), fps: float = 5.0, size=(36, 48)) -> tuple[Frames, np.ndarray]:
    """A video of one room per entry of ``seconds`` and the true cuts (first frame of every room but the first)."""
    rng = np.random.default_rng(seed)
    h, w = size
    colors, poses, counts = [], [], []
    for r, sec in enumerate(seconds):
        n = max(1, int(round(sec * fps)))
        hue = (r / len(seconds) + rng.uniform(0, 0.08)) % 1.0
        hsv = np.stack([(hue + rng.uniform(-0.04, 0.04, 5)) % 1.0, rng.uniform(0.35, 0.9, 5), rng.uniform(0.3, 0.9, 5)])
        palette = hsv_to_rgb(hsv.T) * 255  # [5, 3]
        texture = np.kron(palette[rng.integers(0, 5, (h // 2, w // 2))], np.ones((4, 4, 1)))  # [2h, 2w, 3]
        start, end = rng.integers(0, [h, w]), rng.integers(0, [h, w])
        for i in range(n):
            y, x = np.round(start + (end - start) * i / max(n - 1, 1)).astype(int)
            frame = texture[y : y + h, x : x + w] * (1 + 0.03 * np.sin(i)) + rng.normal(0, 6, (h, w, 3))
            colors.append(np.clip(frame, 0, 255).astype(np.uint8))
            pose = np.eye(4, dtype=np.float32)
            pose[:2, 3] = x / 10, y / 10
            poses.append(pose)
        counts.append(n)
    f = len(colors)
    frames = Frames(
        np.stack(colors),
        [f"{i:05d}" for i in range(f)],
        timestamps=np.arange(f) / fps,
        poses=np.stack(poses),
        intrinsics=np.array([[40, 0, w / 2], [0, 40, h / 2], [0, 0, 1]], np.float32),
        meta={"scene": f"video{seed}", "room": f"video{seed}", "split": "train"},
    )
    return frames, np.cumsum(counts)[:-1]


# ---------------------------------------------------------------------------------------------- cuts


@pytest.mark.parametrize("fps", [5.0, 10.0, 30.0])
@pytest.mark.parametrize("seed", range(4))
def test_shot_boundaries_find_every_cut(seed: int, fps: float) -> None:
    frames, cuts = rooms_video(seed, seconds=(4.0, 6.0, 3.0, 5.0), fps=fps)
    found = fc.ShotBoundaryClassifier().boundaries(frames)
    assert len(found) == len(cuts) and np.abs(found - cuts).max() <= 1, (found, cuts)


def test_one_room_has_no_cut() -> None:
    frames, _ = rooms_video(7, seconds=(12.0,))
    assert len(fc.ShotBoundaryClassifier().boundaries(frames)) == 0
    indoor, shot = fc.ShotBoundaryClassifier().labels(frames)
    assert (indoor == 1).all() and (shot == 0).all()


def test_rendered_walkthrough_cuts_are_found() -> None:
    roomvideo = pytest.importorskip("pcdag.datasets.roomvideo")
    for seed in range(3):
        video = roomvideo.render_room_video(seed, n_frames=90, width=64, height=48, fps=5.0, n_rooms=3)
        truth = np.flatnonzero(np.diff(video.room_ids)) + 1
        found = fc.ShotBoundaryClassifier().boundaries(video.to_frames())
        assert len(found) == len(truth) and np.abs(found - truth).max() <= 1, (seed, found, truth)


def test_histogram_embedding_is_unit_and_ignores_layout() -> None:
    frames, _ = rooms_video(0, seconds=(2.0,))
    emb = fc.histogram_embeddings(frames.colors)
    assert emb.shape == (len(frames), 512) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    flipped = fc.histogram_embeddings(frames.colors[:, ::-1, ::-1].copy())  # same pixels, other places
    assert np.allclose(emb, flipped, atol=1e-6)


@pytest.fixture(scope="module")
def seven_scenes_colours(shared_data: Path) -> np.ndarray:
    """The 300 colour frames of the real 7-Scenes sequence (one room, hand-held), 4th pixels: [300, 120, 160, 3]."""
    from pcdag.datasets import rgbd

    seq = shared_data / "rgbd-7scenes"
    return np.stack([rgbd.read_color(path)[::4, ::4] for _, path in rgbd.list_frames(seq)])


def _video(colors: np.ndarray, fps: float) -> Frames:
    f = len(colors)
    return Frames(colors, [f"{i:05d}" for i in range(f)], timestamps=np.arange(f) / fps, meta={"scene": "walk"})


@pytest.mark.parametrize("fps", [5.0, 10.0, 15.0, 30.0])
def test_real_single_room_pan_is_not_a_cut(seven_scenes_colours: np.ndarray, fps: float) -> None:
    """7-Scenes as a 60 / 30 / 20 / 10 s video (30 fps is its recorded speed), labelled at the default 5 fps: no
    cut. At 5 fps the camera's pan makes a 3 × colour jump at frame 62 (two scenes before the overlap and
    sustained-change rules), but the frames on both sides of it still overlap."""
    frames = _video(seven_scenes_colours, fps)
    kept, jumps, _ = fc.ShotBoundaryClassifier().cuts(frames.subset(ss.sample_frames(frames.timestamps, 5.0)))
    assert len(kept) == 0 and len(jumps) >= (1 if fps in (5.0, 30.0) else 0)
    if fps < 30.0:  # 10 s of video: shorter than the 10 s the default rules keep (floating-point sum)
        parts = SplitScenes().run(None, frames)["frames"]
        assert [name for name, _ in parts.items] == ["scene00"] and len(parts.items[0][1]) == len(frames)


def test_overlap_sees_a_shifted_view_and_not_another_room() -> None:
    roomvideo = pytest.importorskip("pcdag.datasets.roomvideo")
    a, b = (roomvideo.render_room_video(s, n_frames=1, width=160, height=120).frames[0] for s in (0, 1))
    view = fc.thumbnail(a[:, :120])
    assert fc.overlap(view, fc.thumbnail(a[:, 30:150])) > 0.9  # the camera panned by a quarter of the frame
    assert fc.overlap(view, fc.thumbnail(b[:, :120])) < 0.6


@pytest.mark.parametrize("seed", range(2))
def test_real_room_then_another_room_is_cut_at_the_junction(seven_scenes_colours: np.ndarray, seed: int) -> None:
    """The same frames followed by a rendered room (another room by construction): one cut, at the junction."""
    roomvideo = pytest.importorskip("pcdag.datasets.roomvideo")
    other = roomvideo.render_room_video(seed, n_frames=60, width=160, height=120, fps=5.0).frames
    frames = _video(np.concatenate([seven_scenes_colours, other]), 5.0)
    parts = SplitScenes().run(None, frames)["frames"]
    assert [(name, len(p)) for name, p in parts.items] == [("scene00", 300), ("scene01", 60)]


def test_sustained_cuts_need_content_unlike_the_whole_segment() -> None:
    rng = np.random.default_rng(0)
    a, b, c = (np.abs(rng.normal(size=(1, 8))) for _ in range(3))
    emb = np.concatenate([np.repeat(a, 5, 0), np.repeat(b, 4, 0), a, np.repeat(c, 5, 0)])  # a flash of a in b
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    kept, scores = fc.sustained_cuts(emb, np.array([5, 7, 10]), n_after=3, min_novelty=0.05)
    assert kept.tolist() == [5, 10] and scores[1] == pytest.approx(0.0, abs=1e-6)  # 7: b, b, a all seen in b's run
    kept, _ = fc.sustained_cuts(emb, np.array([5, 7, 10]), n_after=3, min_novelty=10.0)
    assert kept.tolist() == []


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6), st.integers(1, 9))
def test_novelty_is_the_nearest_keyframe_hellinger_distance(seed: int, p: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    h = rng.dirichlet(np.ones(16), size=p + k)  # histograms
    emb = np.sqrt(h)
    brute = [min(np.sqrt(0.5 * ((emb[i] - emb[p + j]) ** 2).sum()) for j in range(k)) for i in range(p)]
    assert np.allclose(fc.novelty(emb[:p], emb[p:]), brute, atol=1e-6)


# ---------------------------------------------------------------------------------------------- run rules


@st.composite
def timelines(draw, n_labels: int = 4, max_runs: int = 10):
    """(labels [F], timestamps [F]) with runs of labels and uniform or irregular frame times."""
    pairs = draw(st.lists(st.tuples(st.integers(0, n_labels - 1), st.integers(1, 12)), min_size=1, max_size=max_runs))
    labels = np.repeat([p[0] for p in pairs], [p[1] for p in pairs])
    if draw(st.booleans()):
        t = np.arange(len(labels)) * draw(st.sampled_from([0.1, 0.2, 1 / 30]))
    else:
        gaps = draw(st.lists(st.floats(0.01, 2.0), min_size=len(labels), max_size=len(labels)))
        t = np.cumsum(gaps)
    return labels, t


@settings(max_examples=50, deadline=None)
@given(tl=timelines(), window=st.floats(0.0, 3.0))
def test_smoothing_only_uses_labels_present_nearby(tl, window: float) -> None:
    labels, t = tl
    out = ss.smooth_labels(labels, t, window)
    assert out.shape == labels.shape and out.dtype == labels.dtype
    for i in range(len(t)):  # each frame's new label occurs within its window
        near = labels[np.abs(t - t[i]) <= window / 2 + 1e-9]
        assert out[i] in near
    assert set(out) <= set(labels)


@settings(max_examples=40, deadline=None)
@given(tl=timelines(n_labels=3), dt=st.sampled_from([0.1, 0.2, 1 / 30]), window=st.floats(0.0, 1.0))
def test_smoothing_keeps_runs_longer_than_the_window(tl, dt: float, window: float) -> None:
    labels, _ = tl
    k = int(np.ceil(window / 2 / dt + 1e-9))
    starts, stops, values = ss.runs(labels)
    long = np.repeat(values, np.maximum(stops - starts, 2 * k + 1))  # every run at least 2k + 1 frames
    t = np.arange(len(long)) * dt
    assert np.array_equal(ss.smooth_labels(long, t, window), long)


def test_smoothing_removes_a_flicker_and_ties_keep_the_own_label() -> None:
    labels = np.array([0] * 5 + [1] + [0] * 5)
    assert (ss.smooth_labels(labels, np.arange(11) * 0.2, 0.5) == 0).all()
    edge = np.array([1, 0, 0, 0])  # frame 0 sees itself and frame 1: a tie
    assert np.array_equal(ss.smooth_labels(edge, np.arange(4) * 0.2, 0.5), edge)


@settings(max_examples=50, deadline=None)
@given(tl=timelines(n_labels=2), min_seconds=st.floats(0.0, 6.0))
def test_drop_short_indoor_runs(tl, min_seconds: float) -> None:
    labels, t = tl
    mask, dur = labels.astype(bool), ss.frame_durations(t)
    out, n, seconds = ss.drop_short_runs(mask, dur, min_seconds)
    assert not (out & ~mask).any()  # only ever drops
    starts, stops, values = ss.runs(out)
    secs = np.add.reduceat(dur, starts)
    assert (secs[values] >= min_seconds).all()
    for s, e, v in zip(*ss.runs(mask), strict=True):  # a run is kept whole or dropped whole
        assert not v or out[s:e].all() or not out[s:e].any()
    true_runs_in = ss.runs(mask)[2].sum()
    assert np.isclose(seconds, dur[mask & ~out].sum()) and n == true_runs_in - values.sum()
    again = ss.drop_short_runs(out, dur, min_seconds)
    assert np.array_equal(again[0], out) and again[1] == 0


@settings(max_examples=50, deadline=None)
@given(tl=timelines(), min_seconds=st.floats(0.0, 8.0))
def test_merge_short_runs(tl, min_seconds: float) -> None:
    labels, t = tl
    dur = ss.frame_durations(t)
    out, merged = ss.merge_short_runs(labels, dur, min_seconds)
    starts_in, _, _ = ss.runs(labels)
    starts, stops, values = ss.runs(out)
    assert out.shape == labels.shape and set(values) <= set(labels)
    assert set(starts) <= set(starts_in)  # boundaries are only removed
    assert merged == len(starts_in) - len(starts)
    secs = np.add.reduceat(dur, starts)
    assert len(values) == 1 or (secs >= min_seconds).all()
    for s, e, v in zip(*ss.runs(labels), strict=True):  # a run long enough on its own keeps its label
        if dur[s:e].sum() >= min_seconds:
            assert (out[s:e] == v).all()
    again, merged_again = ss.merge_short_runs(out, dur, min_seconds)
    assert np.array_equal(again, out) and merged_again == 0


@settings(max_examples=50, deadline=None)
@given(rooms=timelines(), indoor=timelines(n_labels=2), data=st.data())
def test_split_bookkeeping_adds_up(rooms, indoor, data) -> None:
    labels, t = rooms
    inside = np.resize(indoor[0], len(labels)).astype(bool)
    prob = np.where(inside, data.draw(st.floats(0.5, 1.0)), data.draw(st.floats(0.0, 0.49)))
    rules = ss.Rules(*(data.draw(st.floats(0.0, 5.0)) for _ in range(5)))
    res = ss.split_video(t, prob, labels, rules)
    r, dur = res.report, ss.frame_durations(t)
    segs = res.kept + res.dropped
    total = sum(s.seconds for s in segs) + r["outdoor_seconds"] + r["short_indoor_seconds"]
    assert abs(total - dur.sum()) < 2e-3
    assert r["segments_found"] == len(segs) and r["kept"] == len(res.kept)
    assert r["label_runs"] - r["runs_merged"] - r["segments_merged"] == len(segs)
    assert all(s.seconds >= rules.min_seconds for s in res.kept)
    assert all(s.seconds < rules.min_seconds for s in res.dropped)
    ordered = sorted(segs, key=lambda s: s.start)
    assert all(a.stop <= b.start for a, b in zip(ordered, ordered[1:], strict=False))
    assert all(np.isclose(s.seconds, dur[s.start : s.stop].sum()) for s in segs)


def test_sample_and_spread() -> None:
    t = np.arange(40) / 20.0  # 2 s at 20 fps
    idx = ss.sample_frames(t, 5.0)
    assert np.array_equal(idx, np.arange(0, 40, 4))
    assert np.array_equal(ss.spread(idx, np.arange(10), 40), np.arange(40) // 4)
    assert np.array_equal(ss.sample_frames(t, 0.0), np.arange(40))


def test_timestamps_must_increase() -> None:
    with pytest.raises(ValueError, match="increase strictly; frame 2"):
        ss.frame_durations(np.array([0.0, 0.1, 0.1]))


# ---------------------------------------------------------------------------------------------- the node


def test_split_scenes_returns_one_part_per_room() -> None:
    frames, cuts = rooms_video(1)
    out = SplitScenes(**SCALED).run(np.random.default_rng(0), frames)["frames"]
    assert isinstance(out, Parts) and [n for n, _ in out.items] == ["scene00", "scene01", "scene02"]
    bounds = np.r_[0, cuts, len(frames)]
    for i, (name, part) in enumerate(out.items):
        assert type(part) is type(frames) and abs(int(part.frame_ids[0]) - bounds[i]) <= 1
        s = int(part.frame_ids[0])
        assert np.array_equal(part.timestamps, frames.timestamps[s : s + len(part)])
        assert np.array_equal(part.poses, frames.poses[s : s + len(part)]) and part.intrinsics is frames.intrinsics
        assert part.meta["segment"] == pytest.approx([frames.timestamps[s], frames.timestamps[s] + len(part) / 5.0])
        assert part.meta["scene"] == f"video1/{name}" and part.meta["split"] == "train"
        report = part.meta["report"]["SplitScenes"]
        assert report["part"] == name and report["kept"] == 3 and report["segments_found"] == 3
        assert report["seconds"] == pytest.approx(len(part) / 5.0) and report["frames"] == len(part)  # its own
        assert report["video_seconds"] == pytest.approx(len(frames) / 5.0) and report["video_frames"] == len(frames)
        json.dumps(part.meta["report"])  # serialisable
    assert frames.meta["scene"] == "video1" and "report" not in frames.meta  # the input is untouched


def test_short_shots_are_merged_and_short_sequences_dropped() -> None:
    frames, _ = rooms_video(2, seconds=(6.0, 0.4, 6.0, 2.0))  # a flash between rooms, a short last room
    out = SplitScenes(**SCALED).run(None, frames)["frames"]
    assert len(out) == 2
    report = out.items[0][1].meta["report"]["SplitScenes"]
    assert report["runs_merged"] == 1 and report["segments_merged"] == 1  # the flash; the 2 s room
    assert report["kept_seconds"] == pytest.approx(len(frames) / 5.0)
    dropping = SplitScenes(**{**SCALED, "min_segment_seconds": 0.0}).run(None, frames)["frames"]
    report = dropping.items[0][1].meta["report"]["SplitScenes"]
    assert len(dropping) == 2 and report["dropped_shorter_than_min_seconds"] == 1 and report["dropped_seconds"] == 2


def test_a_video_without_a_long_sequence_is_refused() -> None:
    frames, _ = rooms_video(3, seconds=(4.0, 4.0))
    with pytest.raises(ValueError, match=r"video 'video3': no single-room sequence of at least 10.0 s.*2 segment"):
        SplitScenes(min_indoor_seconds=3, min_segment_seconds=3).run(None, frames)


class _Labels:
    """Test double classifier: outdoor for the first 20 frames it sees, then rooms 0 and 1."""

    label_names = ("kitchen", "hall")

    def __init__(self) -> None:
        self.seen = 0

    def labels(self, frames: Frames):
        n = len(frames)
        self.seen += n
        return (np.arange(n) >= 20).astype(float), (np.arange(n) >= n // 2 + 10).astype(np.int64)


def test_outdoor_frames_and_room_names(monkeypatch) -> None:
    frames, _ = rooms_video(4, seconds=(24.0,), fps=20.0)  # 480 frames, classified at 5 fps: 120
    node = SplitScenes(**SCALED)
    fake = _Labels()
    monkeypatch.setattr(node, "classifier", lambda: fake)
    out = node.run(None, frames)["frames"]
    assert fake.seen == 120
    (n0, p0), (n1, p1) = out.items
    assert p0.meta["room_type"] == "kitchen" and p1.meta["room_type"] == "hall"
    assert p0.meta["segment"][0] == pytest.approx(4.0) and p1.meta["segment"][1] == pytest.approx(24.0)
    assert p0.meta["report"]["SplitScenes"]["outdoor_seconds"] == pytest.approx(4.0)


def test_bad_classifier_output_and_missing_timestamps(monkeypatch) -> None:
    frames, _ = rooms_video(5, seconds=(12.0,))
    node = SplitScenes(**SCALED)
    bad = type("Bad", (), {"labels": lambda self, f: (np.ones(3), None)})()
    monkeypatch.setattr(node, "classifier", lambda: bad)
    with pytest.raises(ValueError, match="indoor probabilities must be 60 numbers"):
        node.run(None, frames)
    no_time = attrs.evolve(frames, timestamps=None)
    with pytest.raises(ValueError, match="no timestamps"):
        SplitScenes(**SCALED).run(None, no_time)
    no_time.meta["fps"] = 5.0
    assert len(SplitScenes(**SCALED).run(None, no_time)["frames"]) == 1


def test_clip_needs_local_weights(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ValueError, match="classifier 'clip' needs clip_weights"):
        SplitScenes(classifier="clip")
    with pytest.raises(ParamError, match="classifier = 'kmeans' is not allowed"):
        SplitScenes(classifier="kmeans")
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match=r"nope\.pt do not exist; pcdag never downloads weights"):
        fc.ClipClassifier(missing)
    node = SplitScenes(classifier="clip", clip_weights=str(missing))  # the run fails, the runtime quarantines it
    with pytest.raises(FileNotFoundError, match="never downloads"):
        node.run(None, rooms_video(0, seconds=(2.0,))[0])
    weights, folder = tmp_path / "clip.pt", tmp_path / "clip-hf"
    weights.write_bytes(b"not really weights")
    folder.mkdir()
    monkeypatch.setattr(fc.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install open_clip_torch"):
        fc.ClipClassifier(weights)
    with pytest.raises(ImportError, match="pip install transformers"):
        fc.ClipClassifier(folder)


# ---------------------------------------------------------------------------------------------- end to end


class _Videos(SceneSource):
    """Test double: two generated videos; the second is too short to keep."""

    outputs = {"frames": Out(VIDEO)}

    def scenes(self) -> list[SceneRef]:
        return [SceneRef("walk", "train", "walk"), SceneRef("blip", "train", "blip")]

    def load(self, ref: SceneRef) -> Frames:
        frames, _ = rooms_video(8, seconds=(5.0, 5.0) if ref.id == "walk" else (1.0,))
        frames.meta.update(scene=ref.id, room=ref.room)
        return frames

    def provides(self) -> frozenset[str]:
        return frozenset()


class _CameraCloud(Node):
    """Test double reconstruction: the camera centres of the frames as a cloud, keeping the frames' report."""

    per_item = True
    inputs = {"frames": In(FRAMES)}
    outputs = {"cloud": Out(POINT_CLOUD)}

    def fields(self):
        return effect(writes=["coord"])

    def run(self, rng, frames):
        cloud = PointCloud({"coord": frames.poses[:, :3, 3].copy()})
        cloud.meta["report"] = dict(frames.meta["report"])
        return {"cloud": cloud}


def test_offline_run_stores_one_scene_per_room(tmp_path: Path) -> None:
    g = Graph("rooms")
    g.add("videos", "_Videos")
    g.add("split", "SplitScenes", params=SCALED, frames="videos.frames")
    g.add("cloud", "_CameraCloud", frames="split.frames")
    g.add("store", "Store", params={"path": str(tmp_path / "store")}, cloud="cloud")
    with registry.registered(_Videos, _CameraCloud):
        plan = compile_graph(g)
        (job,) = plan.offline
        source = plan.node("videos")
        report = run_offline(source, source.scenes(), job.program, SceneStore(tmp_path / "store"),
                             stage_key=plan.keys["store"], progress=False, source_name="videos")  # fmt: skip
    assert report.counts() == {"done": 2, "skipped": 0, "failed": 1}
    assert "no single-room sequence" in report.failed[0].error and report.failed[0].scene == "blip"
    assert [e.id for e in SceneStore(tmp_path / "store").entries()] == ["walk/scene00", "walk/scene01"]
    metas = [json.loads((tmp_path / "store" / "scenes" / f"walk__{p}" / "pcdag.json").read_text())
             for p in ("scene00", "scene01")]  # fmt: skip
    assert metas[1]["report"]["SplitScenes"]["segment"] == [5.0, 10.0]
    assert metas[1]["report"]["SplitScenes"]["seconds"] == 5.0  # the scene's own length, not the video's 10 s
    # every stage is timed, decoding (the source) included; the stages before the split are the item's, shared
    seconds = [m["report"]["seconds"] for m in metas]
    assert set(seconds[0]) == {"videos", "split", "cloud", "validate"} and seconds[0]["videos"] == seconds[1]["videos"]
    assert metas[0]["report"]["shared_seconds"] == ["videos", "split"]
    totals = report.stage_seconds()
    assert set(totals) == {"videos", "split", "cloud", "validate", "write", "fingerprints", "cluster", "manifest"}
    blip_load = report.failed[0].stages["videos"]
    assert totals["videos"] == pytest.approx(seconds[0]["videos"] + blip_load, abs=2e-3)  # once per video
    assert totals["cloud"] == pytest.approx(seconds[0]["cloud"] + seconds[1]["cloud"], abs=2e-3)  # per scene
    assert "time: videos " in report.summary() and "cluster" in report.summary()
