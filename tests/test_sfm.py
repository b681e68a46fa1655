"""The ``sfm`` reconstruction backend (pycolmap) on rendered room videos with ground truth."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from pcdag.datasets.roomvideo import RoomVideo, render_room_video, write_video
from pcdag.graphs.frames import Frames
from pcdag.nodes.reconstruction.parts import sfm
from pcdag.nodes.reconstruction.parts.base import backend
from pcdag.nodes.reconstruction.parts.chunks import transform_points, umeyama
from pcdag.nodes.reconstruction.reconstruct import Reconstruct
from pcdag.nodes.sources.video import VideoSource


def params(**kw):
    return Reconstruct(backend="sfm", **kw).params


@pytest.fixture(scope="module")
def video() -> RoomVideo:
    return render_room_video(3, n_frames=30)  # 320x240, 3 s at 10 fps


def centre_errors(estimated: np.ndarray, truth: np.ndarray, similarity: bool) -> np.ndarray:
    """Distances [R] between registered camera centres and the true ones, after a Umeyama similarity if asked."""
    ok = np.isfinite(estimated).all(axis=(1, 2))
    src, dst = estimated[ok, :3, 3], truth[ok, :3, 3].astype(np.float64)
    if similarity:
        src = transform_points(src, *umeyama(src, dst))
    return np.linalg.norm(src - dst, axis=1)


def test_sfm_recovers_the_camera_path_up_to_similarity(video: RoomVideo) -> None:
    frames = video.to_frames()
    frames.poses = frames.intrinsics = None  # nothing known: plain video
    result = backend("sfm")(frames, params(), np.random.default_rng(0))
    # Measured (seed 3): 30/30 frames, median centre error 0.16 % of the 2.8 m trajectory, focal off by 0.6 %,
    # ~4300 points, reprojection error 0.14 px. Tolerances: >= 90 % registered, median error < 2 % of the extent.
    report = result.report
    assert report["frames_given"] == report["frames_used"] == 30
    assert report["frames_registered"] >= 27
    assert np.isfinite(result.poses).all(axis=(1, 2)).sum() == report["frames_registered"]
    truth = video.poses[:, :3, 3].astype(np.float64)
    extent = float(np.linalg.norm(truth.max(axis=0) - truth.min(axis=0)))
    errors = centre_errors(result.poses, video.poses, similarity=True)
    assert np.median(errors) < 0.02 * extent, f"median {np.median(errors):.4f} m of a {extent:.2f} m path"
    focal = result.intrinsics[0, 0] / float(video.intrinsics[0, 0])
    assert abs(focal - 1) < 0.02 and report["camera"] == "estimated SIMPLE_RADIAL"
    cloud = result.cloud.validate()
    assert len(cloud) == report["points"] >= 1000
    assert cloud["coord"].dtype == np.float32 and cloud["color"].dtype == np.uint8
    assert cloud["color"].astype(float).std() > 10, "points are coloured from the images"
    assert 0 < report["mean_reprojection_error_px"] < 1.0


def test_sfm_with_known_cameras_lands_in_their_world(video: RoomVideo, tmp_path) -> None:
    # The realistic path: the video as H.264 mp4 + camera sidecar, decoded by VideoSource (all frames, shrunk to
    # 308x224 for multiples of 14, intrinsics scaled), plus a blank frame (no features: never registered), then
    # thinned to 16 evenly spaced frames by max_frames.
    write_video(tmp_path / "tour.mp4", video)
    source = VideoSource(root=str(tmp_path / "tour.mp4"), fps=0.0, known_cameras=True)
    decoded = source.load(source.scenes()[0])
    assert decoded.size == (224, 308) and len(decoded) == 30
    colors = np.concatenate([decoded.colors, np.full((1, 224, 308, 3), 128, np.uint8)])
    poses = np.concatenate([decoded.poses, decoded.poses[-1:]])
    frames = Frames(colors, [f"{i:06d}" for i in range(31)], poses=poses, intrinsics=decoded.intrinsics).validate()
    result = sfm.reconstruct(frames, params(max_frames=16), np.random.default_rng(0))
    report = result.report
    used = sfm.select_frames(31, params(max_frames=16))
    assert report["frames_used"] == 16 and report["frames_registered"] == 15 and report["frames_given"] == 31
    registered = np.isfinite(result.poses).all(axis=(1, 2))
    assert registered[used[:-1]].all() and not registered[-1], "the blank frame is not registered"
    assert not registered[np.setdiff1d(np.arange(31), used)].any(), "frames SfM did not use have NaN poses"
    assert np.allclose(result.intrinsics, decoded.intrinsics, atol=1e-3) and report["camera"] == "known PINHOLE"
    # Already in the known world and metric: no alignment needed. Measured: median 4 mm, alignment RMS 5 mm.
    assert np.median(centre_errors(result.poses, poses, similarity=False)) < 0.02
    assert report["known_pose_alignment_rms_m"] < 0.02
    # The sparse points lie on the rendered surfaces: their depth in a frame matches the true depth map there.
    # Measured: median |relative error| 0.4-0.6 %, >= 90 % within 2 %.
    k = video.intrinsics.astype(np.float64)
    for i in (0, 14, 28):
        w2c = np.linalg.inv(video.poses[i].astype(np.float64))
        cam = result.cloud["coord"].astype(np.float64) @ w2c[:3, :3].T + w2c[:3, 3]  # [N, 3]
        z = cam[:, 2]
        u, v = np.round(cam[:, :2] / np.maximum(z, 1e-9)[:, None] * np.diag(k)[:2] + k[:2, 2]).astype(np.int64).T
        seen = (z > 0.1) & (u >= 0) & (u < 320) & (v >= 0) & (v < 240)
        rel = np.abs(z[seen] / video.depths[i, v[seen], u[seen]] - 1)
        assert seen.sum() > 200 and np.median(rel) < 0.015 and np.mean(rel < 0.02) > 0.8, i


def test_sfm_without_a_model_says_why() -> None:
    blank = np.full((5, 48, 64, 3), 90, np.uint8)
    with pytest.raises(ValueError, match="sfm on scene 'blank': no model from 5 frames"):
        frames = Frames(blank, [str(i) for i in range(5)], meta={"scene": "blank"})
        sfm.reconstruct(frames, params(), np.random.default_rng(0))


def test_sfm_hooks_for_chunking() -> None:
    assert sfm.select_frames(1000, params(max_frames=400)).tolist() == np.round(np.linspace(0, 999, 400)).tolist()
    assert sfm.select_frames(10, params(max_frames=400)).tolist() == list(range(10))
    assert sfm.frame_pixels(1080, 1920, params(sfm_max_image_size=640)) == 360 * 640
    assert sfm.frame_pixels(240, 320, params(sfm_max_image_size=640)) == 240 * 320


def test_missing_pycolmap_is_named(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pycolmap", None)  # import pycolmap now raises ImportError
    frames = Frames(np.zeros((3, 8, 8, 3), np.uint8), ["a", "b", "c"])
    with pytest.raises(ImportError, match=r"needs pycolmap: pip install 'pcdag\[sfm\]'"):
        sfm.reconstruct(frames, params(), np.random.default_rng(0))


def test_sfm_is_reproducible_for_a_seed(video: RoomVideo) -> None:
    # One COLMAP thread by default: the same frames and seed give the same model, bit for bit.
    frames = video.to_frames()
    frames.poses = frames.intrinsics = None  # plain video
    runs = [sfm.reconstruct(frames, params(max_frames=12), np.random.default_rng(7)) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].cloud["coord"], runs[1].cloud["coord"])
    np.testing.assert_array_equal(runs[0].poses, runs[1].poses)
