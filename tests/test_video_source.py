"""Video decoding (sampling, resizing, known cameras, errors) and the VideoSource node."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcdag.datasets.roomvideo import RoomVideo, render_room_video, write_video
from pcdag.datasets.video import decode, probe, sample_frames, sidecar_path, target_size
from pcdag.graphs import registry
from pcdag.graphs.params import ParamError
from pcdag.graphs.ports import VIDEO
from pcdag.nodes.sources.video import VideoSource


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, RoomVideo]:
    """A 48-frame 320x240 10 fps walkthrough written as mp4 (+ sidecar)."""
    video = render_room_video(4, n_frames=48)
    path = tmp_path_factory.mktemp("videos") / "tour.mp4"
    write_video(path, video)
    return path, video


# ------------------------------------------------------------------------------------------ decoding


def test_probe(rendered) -> None:
    path, _ = rendered
    assert probe(path) == {"duration": pytest.approx(4.8), "fps": 10.0, "width": 320, "height": 240, "frames": 48}


def test_decode_everything_round_trips_the_colours(rendered) -> None:
    path, video = rendered
    frames = decode(path)
    assert frames.colors.shape == video.frames.shape
    assert frames.frame_ids == [f"{i:06d}" for i in range(48)]
    assert np.allclose(frames.timestamps, np.arange(48) / 10.0)
    error = np.abs(frames.colors.astype(np.int16) - video.frames).mean()
    assert error < 6.0, f"H.264 at crf 18 should keep colours within a few levels, mean abs error {error:.2f}"
    assert frames.poses is None and frames.intrinsics is None and frames.depths is None


def test_decode_by_fps_and_count(rendered) -> None:
    path, _ = rendered
    two_hz = decode(path, fps=2.0)
    assert [int(i) for i in two_hz.frame_ids] == list(range(0, 48, 5))  # ticks every 0.5 s over 4.7 s
    assert np.allclose(two_hz.timestamps, np.arange(10) * 0.5)
    counted = decode(path, max_frames=7)
    assert [int(i) for i in counted.frame_ids] == [0, 8, 16, 24, 31, 39, 47]
    both = decode(path, fps=4.0, max_frames=5, skip_seconds=1.0)
    assert len(both) == 5 and both.timestamps[0] == pytest.approx(1.0) and both.timestamps[-1] == pytest.approx(4.5)
    faster = decode(path, fps=25.0)  # above the native rate: every frame once
    assert len(faster) == 48


def test_decode_resizes_within_budget_to_multiples(rendered) -> None:
    path, video = rendered
    frames = decode(path, fps=2.0, pixel_budget=40_000, multiple=14, known_cameras=True)
    h, w = frames.size
    assert (w, h) == (224, 168) and w * h <= 40_000 and w % 14 == 0 and h % 14 == 0
    shrunk = video.frames[::5, ::2, ::2].astype(np.float64)  # a crude 160x120 reference
    assert abs(frames.colors.mean() - shrunk.mean()) < 3.0
    keep = decode(path, fps=2.0, pixel_budget=10**9, multiple=14)  # never enlarged, only cut to multiples
    assert keep.size == (224, 308)


def test_known_cameras_follow_the_sampling_and_the_resize(rendered) -> None:
    path, video = rendered
    frames = decode(path, fps=2.0, pixel_budget=160 * 120, known_cameras=True)
    assert frames.size == (120, 160)
    index = [int(i) for i in frames.frame_ids]
    assert np.array_equal(frames.poses, video.poses[index])
    k = video.intrinsics.astype(np.float64)
    # Half size: focal halves; pixel centres at integers, so cx' = (cx + 0.5) / 2 - 0.5.
    expect = np.array(
        [[k[0, 0] / 2, 0, (k[0, 2] + 0.5) / 2 - 0.5], [0, k[1, 1] / 2, (k[1, 2] + 0.5) / 2 - 0.5], [0, 0, 1]]
    )
    assert np.allclose(frames.intrinsics, expect, atol=1e-4)
    assert frames.meta["cameras"] == str(sidecar_path(path))


def test_broken_and_missing_files_name_the_file(tmp_path, rendered) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video\x00" * 500)
    with pytest.raises(ValueError, match="garbage.mp4"):
        decode(garbage)
    with pytest.raises(ValueError, match="garbage.mp4"):
        probe(garbage)
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(rendered[0].read_bytes()[:20_000])
    with pytest.raises(ValueError, match="cut.mp4"):
        decode(truncated)
    with pytest.raises(FileNotFoundError, match="absent.mp4"):
        decode(tmp_path / "absent.mp4")
    with pytest.raises(ValueError, match=r"tour.mp4: no frames left after skipping 60"):
        decode(rendered[0], skip_seconds=60.0)


def test_bad_sidecar_is_refused(tmp_path, rendered) -> None:
    path = tmp_path / "tour.mp4"
    shutil.copy(rendered[0], path)
    with pytest.raises(FileNotFoundError, match="tour.cameras.npz"):
        decode(path, known_cameras=True)
    np.savez(sidecar_path(path), poses=np.zeros((3, 4, 4), np.float32), intrinsics=np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="poses \\[48, 4, 4\\]"):
        decode(path, known_cameras=True)


# ------------------------------------------------------------------------------------------ sampling maths


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(1, 300),
    native=st.sampled_from([10.0, 24.0, 29.97, 30.0, 60.0]),
    fps=st.one_of(st.none(), st.floats(0.2, 80.0)),
    max_frames=st.integers(0, 50),
    skip=st.floats(0.0, 5.0),
)
def test_sample_frames_properties(n: int, native: float, fps: float | None, max_frames: int, skip: float) -> None:
    times = np.arange(n) / native
    if times[-1] < skip - 1e-9:
        with pytest.raises(ValueError, match="no frames left"):
            sample_frames(times, fps, max_frames, skip)
        return
    idx = sample_frames(times, fps, max_frames, skip)
    eligible = np.flatnonzero(times >= skip - 1e-9)
    assert len(idx) >= 1 and np.all(np.diff(idx) > 0), "sorted, unique"
    assert idx[0] == eligible[0], "starts at the first frame after the skip"
    if max_frames:
        assert len(idx) <= max_frames
    if fps is None:
        expect = len(eligible) if not max_frames else min(max_frames, len(eligible))
        assert len(idx) == expect
        return
    span = times[eligible[-1]] - times[eligible[0]]
    ticks = int(np.floor(span * fps + 1e-6)) + 1
    assert len(idx) <= ticks
    if not max_frames or max_frames >= ticks:
        gaps = np.diff(times[idx])
        # nearest frame to each tick: gaps within one native frame of the tick spacing (or larger when fps > native)
        assert np.all(gaps >= 1 / fps - 1 / native - 1e-9)
        assert np.all(gaps <= 1 / fps + 1 / native + 1e-9)


@settings(max_examples=50, deadline=None)
@given(
    width=st.integers(16, 4000),
    aspect=st.floats(0.4, 2.5),
    budget=st.integers(4000, 3_000_000),
    multiple=st.sampled_from([1, 2, 8, 14, 16]),
)
def test_target_size_properties(width: int, aspect: float, budget: int, multiple: int) -> None:
    height = max(16, round(width / aspect))
    try:
        w, h = target_size(width, height, budget, multiple)
    except ValueError:
        assert width < multiple or multiple * multiple > budget or height < multiple
        return
    assert w % multiple == 0 and h % multiple == 0
    assert w * h <= min(budget, width * height) and w <= width and h <= height
    clamped = h == multiple * (height // multiple) < multiple * round(w * height / (width * multiple))
    assert clamped or abs(h - w * height / width) <= multiple / 2 + 1e-9, "aspect kept to the nearest multiple"
    # largest: the next wider candidate (with its own nearest height) no longer fits
    w2 = w + multiple
    h2 = multiple * max(1, round(w2 * height / (width * multiple)))
    assert w2 > width or h2 > height or w2 * h2 > min(budget, width * height) or w2 * h2 <= w * h


def test_target_size_zero_budget_keeps_the_size() -> None:
    assert target_size(333, 211, 0, 14) == (333, 211)


# ------------------------------------------------------------------------------------------ the node


@pytest.fixture(scope="module")
def video_tree(tmp_path_factory) -> Path:
    """root/a.mp4, root/junk.txt, root/val/b.mkv (no sidecar), root/test/c.mov."""
    root = tmp_path_factory.mktemp("tree")
    small = dict(n_frames=6, width=64, height=48, fps=5.0)
    write_video(root / "a.mp4", render_room_video(1, **small))
    write_video(root / "val" / "b.mp4", render_room_video(2, **small))
    (root / "val" / "b.mp4").rename(root / "val" / "b.mkv")
    sidecar_path(root / "val" / "b.mp4").unlink()
    write_video(root / "test" / "c.mp4", render_room_video(3, **small))
    (root / "test" / "c.mp4").rename(root / "test" / "c.mov")
    (root / "junk.txt").write_text("not a video")
    return root


def test_video_source_is_registered_with_its_contract() -> None:
    assert registry.get("VideoSource") is VideoSource
    assert VideoSource.outputs["frames"].type is VIDEO and VideoSource.requires == ("av",)
    node = VideoSource(root="x")
    assert node.provides() == frozenset() and node.source_fields() == frozenset()
    assert (node.params.fps, node.params.pixel_budget, node.params.multiple) == (2.0, 255_000, 14)
    with pytest.raises(ParamError, match="fps"):
        VideoSource(root="x", fps=-1.0)
    with pytest.raises(ParamError, match="splits"):
        VideoSource(root="x", splits=["training"])


def test_video_source_lists_splits_and_rooms(video_tree: Path) -> None:
    refs = VideoSource(root=str(video_tree), splits=["train", "val", "test"]).scenes()
    assert [(r.id, r.split, r.room) for r in refs] == [
        ("a", "train", "a"),
        ("val/b", "val", "b"),
        ("test/c", "test", "c"),
    ]
    assert all(len(r.paths) == 1 for r in refs)
    known = VideoSource(root=str(video_tree), splits=["train", "val"], known_cameras=True).scenes()
    assert known[0].paths == (str(video_tree / "a.mp4"), str(video_tree / "a.cameras.npz"))
    assert known[1].paths == (str(video_tree / "val" / "b.mkv"),), "no sidecar: the video alone"
    assert [r.id for r in VideoSource(root=str(video_tree)).scenes()] == ["a"]
    single = VideoSource(root=str(video_tree / "test" / "c.mov")).scenes()
    assert [(r.id, r.split) for r in single] == [("c", "train")]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        VideoSource(root=str(video_tree / "nowhere")).scenes()
    with pytest.raises(ValueError, match="not a video"):
        VideoSource(root=str(video_tree / "junk.txt")).scenes()


def test_video_source_refuses_a_room_in_two_splits(tmp_path, video_tree: Path) -> None:
    shutil.copytree(video_tree, tmp_path / "t")
    shutil.copy(tmp_path / "t" / "a.mp4", tmp_path / "t" / "val" / "a.mp4")
    with pytest.raises(ValueError, match="room 'a'"):
        VideoSource(root=str(tmp_path / "t"), splits=["train"]).scenes()


def test_video_source_loads_frames(video_tree: Path) -> None:
    src = VideoSource(root=str(video_tree), splits=["train", "val"], fps=0.0, pixel_budget=0, known_cameras=True)
    a, b = (src.load(r) for r in src.scenes())
    assert len(a) == 6 and a.size == (48, 64) and a.poses is not None and a.intrinsics is not None
    assert a.meta["scene"] == "a" and a.meta["split"] == "train" and a.meta["room"] == "a"
    assert b.poses is None and b.meta["split"] == "val"
    sampled = VideoSource(root=str(video_tree), fps=2.0, max_frames=2, multiple=14, pixel_budget=2000)
    frames = sampled.load(sampled.scenes()[0])
    assert len(frames) == 2 and frames.size == (28, 42) and frames.poses is None
