"""feedforward backend plumbing with the stand-in network (pcdag.testing.standin: NOT a reconstruction model)."""

from __future__ import annotations

import json

import attrs
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.spatial import cKDTree

from pcdag.graphs.frames import Frames
from pcdag.nodes.reconstruction.parts import feedforward
from pcdag.nodes.reconstruction.parts.chunks import reconstruct_in_chunks, umeyama
from pcdag.nodes.reconstruction.parts.rgbd import depth_edges
from pcdag.nodes.reconstruction.reconstruct import Reconstruct
from pcdag.testing.standin import StandInPointMapNet, make_standin

WITH_POSES = "pcdag.testing.standin:make_standin"
WITHOUT_POSES = "pcdag.testing.standin:make_standin_without_poses"
RNG = np.random.default_rng(0)
H, W = 60, 80  # frames; with pixel_budget 4096 and patch_multiple 8 the network sees 48 x 72


def video(n: int = 30) -> Frames:
    rows, cols = np.mgrid[0:H, 0:W]
    colors = np.zeros((n, H, W, 3), np.uint8)
    for i in range(n):
        colors[i, ..., 0] = 120 + 100 * np.sin(cols / 7 + i / 3)
        colors[i, ..., 1] = rows * 3
        colors[i, ..., 2] = (rows + cols + 5 * i) % 256
    return Frames(colors, [f"frame{i:03d}" for i in range(n)], meta={"scene": "toy"})


def params(**given) -> Reconstruct.Params:
    defaults = {"backend": "feedforward", "model": WITH_POSES, "pixel_budget": 4096, "patch_multiple": 8}
    return Reconstruct(**{**defaults, **given}).params


def keep_all(**given) -> Reconstruct.Params:
    """Keep every pixel: no fusion, no confidence or edge filtering."""
    return params(**{"voxel_size": 0.0, "conf_threshold": 0.0, "edge_threshold": 0.0, "min_depth": 0.0, **given})


def run_standin(frames: Frames, network: torch.nn.Module | None = None) -> dict[str, np.ndarray]:
    """The stand-in's raw outputs on the frames as the backend resizes them."""
    h, w = feedforward.network_size(H, W, 4096, 8)
    images = feedforward._resize(frames.colors, h, w)
    with torch.no_grad():
        out = (network or make_standin())(images[None])
    return {k: v[0].numpy() for k, v in out.items()}


# ------------------------------------------------------------------------------------------ sizes and frames


@given(height=st.integers(16, 4000), width=st.integers(16, 4000), budget=st.integers(1024, 2_000_000))
def test_network_size_is_within_budget_in_multiples_and_keeps_the_aspect(height, width, budget):
    multiple = 14
    try:
        h, w = feedforward.network_size(height, width, budget, multiple)
    except ValueError as exc:  # only when even one patch per side does not fit the aspect
        assert "pixel_budget" in str(exc)
        assert min(height, width) * np.sqrt(budget / (height * width)) < multiple
        return
    assert h % multiple == 0 and w % multiple == 0 and h * w <= budget
    scale = np.sqrt(budget / (height * width))
    assert height * scale - multiple < h <= height * scale and width * scale - multiple < w <= width * scale


def test_at_most_max_frames_evenly_spaced_and_unused_frames_have_nan_poses():
    result = reconstruct_in_chunks(video(30), feedforward.reconstruct, params(max_frames=7), RNG)
    used = np.flatnonzero(np.isfinite(result.poses).all(axis=(1, 2)))
    np.testing.assert_array_equal(used, [0, 5, 10, 14, 19, 24, 29])
    assert result.report["frames_selected"] == 7 and result.report["frames"] == 30
    assert result.report["network_size"] == [48, 72] and result.anchors is None


# ------------------------------------------------------------------------------------------ filtering


def test_confidence_and_edge_filtering_keep_exactly_the_expected_pixels():
    frames = video(6)
    raw = run_standin(frames)
    confident = 1 / (1 + np.exp(-raw["conf"])) > 0.5
    assert 0.05 < confident.mean() < 0.95  # the threshold really splits the stand-in's pixels
    result = feedforward.reconstruct(frames, keep_all(conf_threshold=0.5), RNG)
    assert len(result.cloud) == confident.sum()
    edges = depth_edges(raw["local_points"][..., 2], 0.03)
    assert 0.02 < edges.mean() < 0.9
    result = feedforward.reconstruct(frames, keep_all(conf_threshold=0.5, edge_threshold=0.03), RNG)
    assert len(result.cloud) == (confident & ~edges).sum()
    everything = feedforward.reconstruct(frames, keep_all(), RNG)
    assert len(everything.cloud) == 6 * 48 * 72
    np.testing.assert_allclose(everything.cloud["coord"], raw["points"].reshape(-1, 3), rtol=1e-6)
    with pytest.raises(ValueError, match="no pixel kept by conf_threshold=1.0"):
        feedforward.reconstruct(frames, params(conf_threshold=1.0), RNG)


def test_colours_come_from_the_resized_frames_and_intrinsics_are_fitted_to_local_points():
    frames = video(3)
    result = feedforward.reconstruct(frames, keep_all(), RNG)
    resized = feedforward._resize(frames.colors, 48, 72).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(result.cloud["color"], np.round(resized * 255).astype(np.uint8).reshape(-1, 3))
    focal = 0.8  # the stand-in's pinhole: x / z = (u - (w - 1) / 2) / (0.8 w), in network pixels
    expected = [[focal * 72 * W / 72, 0, (W - 1) / 2], [0, focal * 72 * H / 48, (H - 1) / 2], [0, 0, 1]]
    np.testing.assert_allclose(result.intrinsics, expected, rtol=1e-4, atol=1e-3)
    known = np.array([[70.0, 0, 40], [0, 70, 30], [0, 0, 1]], np.float32)
    assert np.array_equal(
        feedforward.reconstruct(attrs.evolve(frames, intrinsics=known), params(), RNG).intrinsics, known
    )


# ------------------------------------------------------------------------------------------ chunks


def test_chunks_with_returned_poses_match_the_whole_sequence_up_to_scale():
    frames = video(30)
    whole = reconstruct_in_chunks(frames, feedforward.reconstruct, keep_all(), RNG)
    chunked = reconstruct_in_chunks(frames, feedforward.reconstruct, keep_all(chunk_frames=12, chunk_overlap=4), RNG)
    assert chunked.report["chunks"] == 4 and whole.report["chunks"] == 1
    assert max(chunked.report["stitch_rms"]) < 1e-5 and max(chunked.report["stitch_point_rms"]) < 1e-5
    # both worlds are frame 0's camera; only the stand-in's per-call normalisation (scale) differs
    s, r, t = umeyama(whole.poses[:, :3, 3], chunked.poses[:, :3, 3])
    assert abs(s - 1) > 1e-4  # the chunks really came back at other scales
    np.testing.assert_allclose(r, np.eye(3), atol=1e-5)
    np.testing.assert_allclose(t, 0, atol=1e-5)
    distance, _ = cKDTree(s * whole.cloud["coord"]).query(chunked.cloud["coord"])
    assert distance.max() < 1e-4  # every chunked point is a (scaled) point of the whole reconstruction
    assert len(chunked.cloud) == 30 * 48 * 72 + 3 * 4 * 48 * 72  # shared frames appear once per chunk


def test_chunks_without_poses_are_stitched_on_overlapping_pixels():
    frames = video(30)
    chunking = {"chunk_frames": 12, "chunk_overlap": 4}
    posed = reconstruct_in_chunks(frames, feedforward.reconstruct, keep_all(**chunking), RNG)
    unposed = reconstruct_in_chunks(frames, feedforward.reconstruct, keep_all(model=WITHOUT_POSES, **chunking), RNG)
    assert np.isnan(unposed.poses).all() and unposed.report["stitch_rms"] == [None] * 3
    assert max(unposed.report["stitch_point_rms"]) < 1e-5
    np.testing.assert_allclose(unposed.cloud["coord"], posed.cloud["coord"], atol=1e-4)


def test_chunk_size_from_the_memory_budget():
    frames = video(30)
    given = {"pixel_budget": 10_000, "chunk_overlap": 4}  # the network sees 80 x 112: 8.75 MiB per frame
    per_frame = feedforward.BYTES_PER_PIXEL * feedforward.frame_pixels(H, W, params(**given))
    assert feedforward.frame_pixels(H, W, params(**given)) == 80 * 112
    result = reconstruct_in_chunks(frames, feedforward.reconstruct, params(memory_budget=1.0, **given), RNG)
    assert result.report["chunks"] == 1 and result.report["chunk_frames"] == int(2**30 // per_frame) == 117
    result = reconstruct_in_chunks(frames, feedforward.reconstruct, params(memory_budget=0.1, **given), RNG)
    assert result.report["chunk_frames"] == int(0.1 * 2**30 // per_frame) == 11 and result.report["chunks"] == 4


# ------------------------------------------------------------------------------------------ network and weights


def test_weights_are_loaded_from_a_local_state_dict(tmp_path):
    network = make_standin()
    with torch.no_grad():
        network.head.bias[1] = 3.0  # far more confident
        network.focal.fill_(1.3)
    path = tmp_path / "standin.pt"
    torch.save(network.state_dict(), path)
    frames = video(4)
    raw = run_standin(frames, network.eval())
    result = feedforward.reconstruct(frames, keep_all(weights=str(path), conf_threshold=0.5), RNG)
    assert len(result.cloud) == (1 / (1 + np.exp(-raw["conf"])) > 0.5).sum()
    default = feedforward.reconstruct(frames, keep_all(conf_threshold=0.5), RNG)
    assert len(result.cloud) > len(default.cloud)
    assert result.intrinsics[0, 0] == pytest.approx(1.3 * W, rel=1e-4)


def test_weights_are_read_with_weights_only_and_missing_weights_are_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pt not found: weights must be supplied locally"):
        feedforward.reconstruct(video(2), params(weights=str(tmp_path / "nowhere.pt")), RNG)
    pickled = tmp_path / "pickled.pt"
    torch.save({"network": StandInPointMapNet()}, pickled)  # a pickled module, not a state dict
    with pytest.raises(ValueError, match=r"pickled\.pt: not a state dict torch.load\(weights_only=True\) can read"):
        feedforward.reconstruct(video(2), params(weights=str(pickled)), RNG)
    partial = tmp_path / "partial.pt"
    torch.save({"focal": torch.tensor(1.0)}, partial)
    with pytest.raises(ValueError, match=r"partial\.pt: does not fit model"):
        feedforward.reconstruct(video(2), params(weights=str(partial)), RNG)


def test_bad_model_specs_are_clear_errors():
    with pytest.raises(ValueError, match="needs model"):
        feedforward.reconstruct(video(2), params(model=None), RNG)
    with pytest.raises(ValueError, match="must be 'package.module:factory'"):
        feedforward.reconstruct(video(2), params(model="pcdag.testing.standin"), RNG)
    with pytest.raises(ValueError, match="cannot import the factory"):
        feedforward.reconstruct(video(2), params(model="pcdag.testing.standin:no_such_factory"), RNG)
    with pytest.raises(TypeError, match="expected a torch.nn.Module"):
        feedforward.reconstruct(video(2), params(model="builtins:dict"), RNG)
    with pytest.raises(ValueError, match="'numpy:eye': the factory failed: TypeError"):
        feedforward.reconstruct(video(2), params(model="numpy:eye"), RNG)


def test_the_reconstruct_node_reports_json_facts_and_no_anchor_arrays():
    node = Reconstruct(
        backend="feedforward", model=WITH_POSES, pixel_budget=4096, patch_multiple=8, chunk_frames=12, chunk_overlap=4
    )
    cloud = node.run(np.random.default_rng(0), frames=video(20))["cloud"]
    cloud.validate("feedforward output")
    report = cloud.meta["report"]["Reconstruct"]
    json.dumps(report)
    assert report["backend"] == "feedforward" and report["chunks"] == 2 and report["poses_returned"] is True
    assert "frame_points" not in cloud.meta and cloud.meta["scene"] == "toy"
