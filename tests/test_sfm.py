"""The ``sfm`` reconstruction backend (pycolmap) on rendered room videos with ground truth."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcdag.datasets.roomvideo import RoomVideo, render_room_video, write_video
from pcdag.graphs.frames import Frames
from pcdag.nodes.reconstruction.parts import sfm, sfm_models
from pcdag.nodes.reconstruction.parts.base import backend
from pcdag.nodes.reconstruction.parts.chunks import transform_points, umeyama
from pcdag.nodes.reconstruction.parts.colmap_log import colmap_log
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
    # Every model COLMAP made is listed, largest first; the cloud is the ones merged into the largest.
    models = report["models"]
    assert models and all(set(m) == {"frames", "points", "in_cloud"} for m in models) and models[0]["in_cloud"]
    assert [m["frames"] for m in models] == sorted((m["frames"] for m in models), reverse=True)
    assert sum(m["points"] for m in models if m["in_cloud"]) == report["points"]
    assert report["matching"] == "exhaustive" and report["mapper"] == "incremental"  # auto: 30 frames ≤ 40
    assert set(report["sfm_seconds"]) == {"extract", "match", "map"}
    assert report["colmap_warnings"] >= len(report["colmap_warning_texts"]) >= 0


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


def test_sfm_without_a_model_says_why(capfd) -> None:
    blank = np.full((5, 48, 64, 3), 90, np.uint8)
    with pytest.raises(ValueError, match="sfm on scene 'blank': no model from 5 frames"):
        frames = Frames(blank, [str(i) for i in range(5)], meta={"scene": "blank"})
        sfm.reconstruct(frames, params(), np.random.default_rng(0))
    # COLMAP logged "No images with matches" and "Failed to create any sparse model": to its file, not here.
    err = capfd.readouterr().err
    assert "incremental_pipeline" not in err and "sparse model" not in err, err


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


def test_colmap_log_goes_to_a_file_and_the_report(tmp_path, capfd) -> None:
    import pycolmap

    before = pycolmap.logging.alsologtostderr
    with colmap_log(pycolmap, tmp_path) as warnings:
        for _ in range(2):
            pycolmap.logging.warning("first warning")  # the same text from the same line: kept once
        pycolmap.logging.error("an error")
        pycolmap.logging.info("an info line")  # below the WARNING level kept
        facts = warnings()
    assert facts["colmap_warnings"] == 3
    assert [t.split(": ", 1)[1] for t in facts["colmap_warning_texts"]] == ["first warning", "an error"]
    assert facts["colmap_warning_texts"][0].startswith("W ") and facts["colmap_warning_texts"][1].startswith("E ")
    assert "first warning" not in capfd.readouterr().err
    assert pycolmap.logging.alsologtostderr == before, "glog settings are restored"


def test_bad_sfm_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="sfm_models = 'all' is not allowed; choose one of 'merged', 'largest'"):
        params(sfm_models="all")
    with pytest.raises(ValueError, match="sfm_matching = 'vocab' is not allowed"):
        params(sfm_matching="vocab")
    with pytest.raises(ValueError, match="sfm_mapper"):
        params(sfm_mapper="hierarchical")
    with pytest.raises(ValueError, match="sfm_blur_drop"):
        params(sfm_blur_drop=1.5)
    assert sfm.matching_mode(params(), 40) == "exhaustive" and sfm.matching_mode(params(), 41) == "sequential"
    assert sfm.matching_mode(params(sfm_matching="sequential"), 5) == "sequential"


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 40), st.integers(0, 2**31 - 1))
def test_union_poses_keeps_the_first_model_and_fills_gaps(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    models = [rng.normal(size=(n, 4, 4)) for _ in range(3)]
    for m in models:
        m[rng.random(n) < 0.5] = np.nan  # unregistered frames
    out = sfm_models.union_poses(models)
    for f in range(n):
        having = [m[f] for m in models if np.isfinite(m[f]).all()]
        expected = having[0] if having else np.full((4, 4), np.nan)
        np.testing.assert_array_equal(out[f], expected)


def test_drop_blurry_drops_a_blurred_frame_but_never_two_in_a_row() -> None:
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 256, (12, 32, 32, 3)).astype(np.uint8)
    blurred = sharp.copy()
    for i in (3, 7, 8):  # box blur: much lower Laplacian variance
        f = sharp[i].astype(np.float32)
        blurred[i] = ((f + np.roll(f, 1, 0) + np.roll(f, 1, 1) + np.roll(f, (1, 1), (0, 1))) / 4).astype(np.uint8)
    index = np.arange(12)
    assert sfm.drop_blurry(blurred, index, 0.0).tolist() == index.tolist()
    kept = sfm.drop_blurry(blurred, index, 0.5).tolist()
    assert kept == [0, 1, 2, 4, 5, 6, 8, 9, 10, 11], "3 and 7 dropped; 8 kept since its neighbour 7 was dropped"
    assert sfm.sharpness(blurred[3]) < 0.5 * sfm.sharpness(sharp[3])


def test_models_sharing_frames_are_merged_into_the_largest(video: RoomVideo, tmp_path) -> None:
    # One real COLMAP model of 12 frames, cut into two overlapping models (frames 0-7 and 5-11), the second moved
    # by a known similarity: merging must bring it back (camera centres within 1 % of the path's extent).
    import pycolmap

    frames = video.to_frames()
    index = sfm.select_frames(30, params(max_frames=12))
    (tmp_path / "images").mkdir()
    names, scale = sfm._write_images(frames, index, tmp_path / "images", 640)
    reader, _ = sfm._camera_options(pycolmap, frames, params(use_known_cameras=False), scale)
    with colmap_log(pycolmap, tmp_path):
        models, _ = sfm._run_colmap(pycolmap, tmp_path, names, reader, params(), False, 0)
    full = sfm_models.by_size(models)[0]
    assert full.num_reg_images() == 12
    ids = sorted(full.reg_image_ids(), key=lambda i: full.image(i).name)
    first, second = pycolmap.Reconstruction(full), pycolmap.Reconstruction(full)
    for i in ids[8:]:
        first.deregister_frame(first.image(i).frame_id)
    for i in ids[:5]:
        second.deregister_frame(second.image(i).frame_id)
    moved = pycolmap.Sim3d(2.5, pycolmap.Rotation3d(np.array([0.3, -1.0, 0.4])), np.array([1.0, -2.0, 0.5]))
    second.transform(moved)
    models = [first, second]
    assert sfm_models.merge_into_largest(pycolmap, models) == [0, 1]
    truth = sfm._poses(full, 30)[:, :3, 3]
    merged = sfm_models.union_poses([sfm._poses(m, 30) for m in models])[:, :3, 3]
    ok = np.isfinite(truth).all(axis=1)
    assert np.isfinite(merged).all(axis=1).tolist() == ok.tolist()
    extent = np.linalg.norm(truth[ok].max(0) - truth[ok].min(0))
    assert np.abs(merged[ok] - truth[ok]).max() < 0.01 * extent
    facts = sfm_models.model_facts(models, [0])
    assert [f["frames"] for f in facts] == [8, 7] and [f["in_cloud"] for f in facts] == [True, False]


def test_real_7scenes_colour_frames_register_in_one_model(shared_data) -> None:
    # The real 7-Scenes walk as a plain video: every 10th colour frame (30), no depth, poses or intrinsics, shrunk
    # to 320 px to stay quick. Measured (`python bench/sfm_7scenes.py --step 10 --set sfm_max_image_size=320`):
    # 30/30 frames in one model, ATE RMSE 0.0374 m after a similarity (0.0375 m at 640 px). Bound: 0.06 m.
    from pcdag.nodes.reconstruction.parts.chunks import reconstruct_in_chunks
    from pcdag.nodes.sources.rgbd_sequence import RGBDSequenceSource

    source = RGBDSequenceSource(root=str(shared_data / "rgbd-7scenes"), frame_step=10)
    rgbd = source.load(source.scenes()[0])
    frames = Frames(rgbd.colors, rgbd.frame_ids, meta={"scene": "7scenes"})
    rng = np.random.default_rng(0)
    result = reconstruct_in_chunks(frames, backend("sfm"), params(use_known_cameras=False, sfm_max_image_size=320), rng)
    report = result.report
    assert len(frames) == 30 and report["frames_registered"] == 30 and report["models"][0]["frames"] == 30
    errors = centre_errors(result.poses, rgbd.poses, similarity=True)
    assert np.sqrt(np.mean(errors**2)) < 0.06
