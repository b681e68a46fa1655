"""Chunked reconstruction: umeyama, chunk spans, voxel fusion, and stitching chunks moved by known similarities."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from pcdag.graphs.cloud import PointCloud
from pcdag.graphs.frames import Frames
from pcdag.nodes.reconstruction.parts import rgbd
from pcdag.nodes.reconstruction.parts.base import Reconstruction
from pcdag.nodes.reconstruction.parts.chunks import (
    VoxelFusion,
    chunk_spans,
    evenly_spaced,
    frames_per_chunk,
    reconstruct_in_chunks,
    robust_umeyama,
    transform_points,
    transform_poses,
    umeyama,
)
from pcdag.nodes.reconstruction.reconstruct import Reconstruct
from pcdag.testing import seeds


def random_similarity(rng: np.random.Generator) -> tuple[float, np.ndarray, np.ndarray]:
    rotation = Rotation.random(random_state=int(rng.integers(2**31))).as_matrix()
    return float(np.exp(rng.uniform(np.log(0.2), np.log(5.0)))), rotation, rng.normal(scale=3.0, size=3)


def cost(src: np.ndarray, dst: np.ndarray, r: np.ndarray) -> float:
    """Least-squares cost of the best scale and translation for a fixed rotation ``r``."""
    a, b = src - src.mean(0), dst - dst.mean(0)
    s = (b * (a @ r.T)).sum() / (a * a).sum()
    return float(np.square(b - s * a @ r.T).sum())


# ------------------------------------------------------------------------------------------ umeyama


@given(seed=seeds(), n=st.integers(3, 40), with_scale=st.booleans())
def test_umeyama_recovers_a_random_similarity(seed, n, with_scale):
    rng = np.random.default_rng(seed)
    src = rng.normal(size=(n, 3)) * rng.uniform(0.1, 10.0, size=3)
    sv = np.linalg.svd(src - src.mean(0), compute_uv=False)
    assume(sv[1] > 1e-3 * sv[0])  # not (nearly) collinear
    s, r, t = random_similarity(rng)
    s = s if with_scale else 1.0
    dst = s * src @ r.T + t
    s_hat, r_hat, t_hat = umeyama(src, dst, with_scale=with_scale)
    assert np.isclose(s_hat, s, rtol=1e-7)
    np.testing.assert_allclose(r_hat, r, atol=1e-7)
    np.testing.assert_allclose(t_hat, t, atol=1e-6 * (1 + np.abs(t).max()))
    assert np.isclose(np.linalg.det(r_hat), 1.0)


@given(seed=seeds(), n=st.integers(3, 30))
def test_umeyama_turns_a_mirrored_planar_set_into_a_rotation(seed, n):
    """A planar set mirrored within its plane is reachable by a proper rotation (a half turn about an in-plane
    axis); the unconstrained orthogonal fit may be the reflection, umeyama must return the rotation, exactly."""
    rng = np.random.default_rng(seed)
    src = np.column_stack([rng.normal(size=(n, 2)), np.zeros(n)])  # z = 0
    sv = np.linalg.svd(src - src.mean(0), compute_uv=False)
    assume(sv[1] > 1e-3 * sv[0])
    s, r, t = random_similarity(rng)
    mirrored = src * [1.0, -1.0, 1.0]  # y -> -y: a reflection of the plane ...
    dst = s * mirrored @ r.T + t  # ... equal to the rotation diag(1, -1, -1) on these points
    s_hat, r_hat, t_hat = umeyama(src, dst)
    assert np.isclose(np.linalg.det(r_hat), 1.0)
    np.testing.assert_allclose(r_hat, r @ np.diag([1.0, -1.0, -1.0]), atol=1e-7)
    np.testing.assert_allclose(s_hat * src @ r_hat.T + t_hat, dst, atol=1e-7 * (1 + np.abs(dst).max()))


@given(seed=seeds(), n=st.integers(4, 30))
def test_umeyama_on_a_mirrored_solid_returns_the_best_rotation_not_the_reflection(seed, n):
    rng = np.random.default_rng(seed)
    src = rng.normal(size=(n, 3))
    sv = np.linalg.svd(src - src.mean(0), compute_uv=False)
    assume(sv[2] > 0.05 * sv[0])  # a solid: no rotation reproduces the mirror image
    dst = src * [1.0, 1.0, -1.0]
    u, _, vt = np.linalg.svd((dst - dst.mean(0)).T @ (src - src.mean(0)))
    assert np.linalg.det(u @ vt) < 0  # the unconstrained fit is the reflection: the branch under test
    _, r_hat, _ = umeyama(src, dst)
    assert np.isclose(np.linalg.det(r_hat), 1.0)
    best = cost(src, dst, r_hat)
    for _ in range(20):  # no nearby rotation does better
        nudge = Rotation.from_rotvec(rng.normal(scale=0.05, size=3)).as_matrix()
        assert best <= cost(src, dst, nudge @ r_hat) + 1e-9


def test_umeyama_refuses_degenerate_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="at least 3"):
        umeyama(rng.normal(size=(2, 3)), rng.normal(size=(2, 3)))
    with pytest.raises(ValueError, match="degenerate"):
        umeyama(np.ones((5, 3)), rng.normal(size=(5, 3)))
    line = np.outer(np.arange(6.0), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="degenerate"):
        umeyama(line, line + 1.0)
    with pytest.raises(ValueError, match="finite"):
        umeyama(np.full((4, 3), np.nan), rng.normal(size=(4, 3)))
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        umeyama(rng.normal(size=(4, 2)), rng.normal(size=(4, 2)))


# ------------------------------------------------------------------------------------------ spans and frames


@given(count=st.integers(1, 500), size=st.integers(2, 80), overlap=st.integers(1, 79))
def test_chunk_spans_cover_the_sequence_with_exact_overlaps(count, size, overlap):
    assume(overlap < size)
    spans = chunk_spans(count, size, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == count
    lengths = [b - a for a, b in spans]
    assert max(lengths) <= size and max(lengths) - min(lengths) <= 1
    for (a0, b0), (a1, b1) in zip(spans, spans[1:], strict=False):
        assert b0 - a1 == overlap and a1 > a0 and b1 > b0  # exactly `overlap` shared frames, progress
    if count <= size:
        assert spans == [(0, count)]
    else:  # fewest chunks: one fewer could not cover the sequence
        k = len(spans)
        assert (k - 1) * size - (k - 2) * overlap < count


@given(count=st.integers(1, 2000), at_most=st.integers(2, 500))
def test_evenly_spaced_frames(count, at_most):
    index = evenly_spaced(count, at_most)
    assert len(index) == min(count, at_most)
    assert index[0] == 0 and index[-1] == count - 1
    assert (np.diff(index) > 0).all()
    if count > at_most:  # gaps differ by at most one frame
        assert np.diff(index).max() - np.diff(index).min() <= 1


def test_frames_per_chunk_from_parameters_and_memory_budget():
    frames = Frames(np.zeros((3, 480, 640, 3), np.uint8), ["a", "b", "c"])
    params = Reconstruct(backend="rgbd", chunk_frames=40, chunk_overlap=8).params
    assert frames_per_chunk(frames, params, rgbd.reconstruct) == 40
    params = Reconstruct(backend="rgbd", memory_budget=2.0).params
    expected = int(2.0 * 2**30 // (rgbd.BYTES_PER_PIXEL * 480 * 640))
    assert frames_per_chunk(frames, params, rgbd.reconstruct) == expected
    with pytest.raises(ValueError, match="memory_budget=0.1 GiB"):
        frames_per_chunk(
            frames, Reconstruct(backend="rgbd", memory_budget=0.1, chunk_overlap=20).params, rgbd.reconstruct
        )
    with pytest.raises(ValueError, match="chunk_overlap = 8 must be smaller than chunk_frames = 8"):
        Reconstruct(chunk_frames=8, chunk_overlap=8)  # refused when the graph is built, not scene by scene


# ------------------------------------------------------------------------------------------ voxel fusion


@given(seed=seeds(), n=st.integers(1, 300), voxel=st.sampled_from((0.01, 0.1, 0.5)), parts=st.integers(1, 4))
def test_voxel_fusion_means_match_a_brute_force_groupby_in_any_batching(seed, n, voxel, parts):
    rng = np.random.default_rng(seed)
    coord = (rng.normal(size=(n, 3)) * rng.choice([0.02, 1.0, 30.0])).astype(np.float32)
    color = rng.integers(0, 256, size=(n, 3)).astype(np.uint8)
    fusion = VoxelFusion(voxel, "test")
    for piece in np.array_split(np.arange(n), parts):
        fusion.add(coord[piece], color[piece])
    out_coord, out_color = fusion.result()
    groups: dict[tuple, list[int]] = {}
    for i, cell in enumerate(map(tuple, np.floor(coord.astype(np.float64) / voxel).astype(np.int64))):
        groups.setdefault(cell, []).append(i)
    assert fusion.points_in == n and len(out_coord) == len(groups)
    expected = {cell: (coord[i].astype(np.float64).mean(0), color[i].mean(0)) for cell, i in groups.items()}
    for c, col in zip(out_coord, out_color, strict=True):
        mean, mean_color = expected[tuple(np.floor(c.astype(np.float64) / voxel).astype(np.int64))]
        np.testing.assert_allclose(c, mean, rtol=1e-5, atol=1e-6)
        assert np.abs(col.astype(float) - mean_color).max() <= 0.5 + 1e-9


def test_voxel_fusion_size_zero_keeps_every_point_and_far_points_are_refused():
    rng = np.random.default_rng(1)
    coord, color = rng.normal(size=(50, 3)).astype(np.float32), rng.integers(0, 256, (50, 3)).astype(np.uint8)
    fusion = VoxelFusion(0.0, "test")
    fusion.add(coord[:20], color[:20])
    fusion.add(coord[20:], color[20:])
    out_coord, out_color = fusion.result()
    np.testing.assert_array_equal(out_coord, coord)
    np.testing.assert_array_equal(out_color, color)
    with pytest.raises(ValueError, match="scene X.*larger voxel_size"):
        VoxelFusion(0.001, "scene X").add(np.array([[5000.0, 0, 0]], np.float32), np.zeros((1, 3), np.uint8))


# ------------------------------------------------------------------------------------------ stitching


@attrs.define
class SyntheticScene:
    """Ground truth for a fake backend: camera poses on a curve and a few points per frame, each chunk returned
    moved by its own random similarity (as a scale-free network's chunks would be)."""

    poses: np.ndarray  # [F, 4, 4]
    points: np.ndarray  # [F, P, 3]
    with_poses: bool = True
    with_anchors: bool = True
    outliers: float = 0.0  # fraction of anchor points replaced by junk in every chunk
    moves: dict = attrs.field(factory=dict)  # first frame of a chunk -> its similarity

    @classmethod
    def make(cls, n_frames: int, seed: int, **kwargs) -> SyntheticScene:
        rng = np.random.default_rng(seed)
        angle = 0.08 * np.arange(n_frames)
        poses = np.tile(np.eye(4), (n_frames, 1, 1))
        poses[:, :3, :3] = Rotation.from_euler("y", angle[:, None]).as_matrix()
        poses[:, :3, 3] = np.column_stack([np.sin(angle), 0.1 * np.sin(3 * angle), 1 - np.cos(angle)]) * 2.0
        points = rng.uniform(-1, 1, size=(n_frames, 30, 3)) + [0, 0, 3]
        return cls(poses, points, **kwargs)

    def backend(self, frames: Frames, params, rng) -> Reconstruction:
        index = np.array([int(i) for i in frames.frame_ids])
        move = random_similarity(np.random.default_rng(int(index[0])))
        self.moves[int(index[0])] = move
        anchors = transform_points(self.points[index], *move).astype(np.float32)  # [n, P, 3]
        if self.outliers:
            junk = np.random.default_rng(int(index[0]) + 1).random(anchors.shape[:2]) < self.outliers
            anchors[junk] += np.float32(50.0)
        poses = transform_poses(self.poses[index], *move) if self.with_poses else np.full((len(index), 4, 4), np.nan)
        coord = transform_points(self.points[index].reshape(-1, 3), *move).astype(np.float32)
        color = np.repeat(index % 256, self.points.shape[1]).astype(np.uint8)[:, None].repeat(3, 1)
        cloud = PointCloud({"coord": coord, "color": color})
        report = {"n": 1, "mean_error": float(index[0])}
        return Reconstruction(cloud, poses, np.eye(3), report, anchors if self.with_anchors else None)


def stitched(scene: SyntheticScene, n_frames: int, size: int, overlap: int) -> Reconstruction:
    frames = Frames(np.zeros((n_frames, 2, 2, 3), np.uint8), [str(i) for i in range(n_frames)], meta={"scene": "s"})
    params = Reconstruct(voxel_size=0.0, chunk_frames=size, chunk_overlap=overlap).params
    return reconstruct_in_chunks(frames, scene.backend, params, np.random.default_rng(0))


@given(
    seed=seeds(),
    n_frames=st.integers(12, 60),
    size=st.integers(6, 20),
    overlap=st.integers(3, 5),
    mode=st.sampled_from(("poses+anchors", "poses only", "anchors only")),
)
def test_stitching_undoes_per_chunk_similarities(seed, n_frames, size, overlap, mode):
    scene = SyntheticScene.make(n_frames, seed, with_poses=mode != "anchors only", with_anchors=mode != "poses only")
    result = stitched(scene, n_frames, size, overlap)
    spans = chunk_spans(n_frames, size, overlap)
    s0, r0, t0 = scene.moves[0]  # the world is chunk 0's
    expected = np.concatenate([transform_points(scene.points[a:b].reshape(-1, 3), s0, r0, t0) for a, b in spans])
    scale = 1 + np.abs(expected).max()
    np.testing.assert_allclose(result.cloud["coord"], expected, atol=1e-4 * scale)
    assert result.report["chunks"] == len(spans) and len(result.report["stitch_scale"]) == len(spans) - 1
    if scene.with_poses:
        np.testing.assert_allclose(result.poses, transform_poses(scene.poses, s0, r0, t0), atol=1e-4 * scale)
        assert max(result.report["stitch_rms"], default=0.0) < 1e-4 * scale
        assert result.report["frames_registered"] == n_frames
    else:
        assert np.isnan(result.poses).all() and result.report["stitch_rms"] == [None] * (len(spans) - 1)
    assert result.report["n"] == len(spans)  # backend counts are summed over chunks
    assert result.report["mean_error"] == np.mean([a for a, _ in spans])  # intensive facts are averaged
    assert result.anchors is None


def test_stitching_survives_junk_anchor_points():
    scene = SyntheticScene.make(40, 3, outliers=0.05)
    result = stitched(scene, 40, 12, 4)
    s0, r0, t0 = scene.moves[0]
    np.testing.assert_allclose(result.poses, transform_poses(scene.poses, s0, r0, t0), atol=1e-4 * (1 + 3 * s0))


def test_stitching_needs_shared_anchors():
    scene = SyntheticScene.make(20, 0, with_poses=False, with_anchors=False)
    with pytest.raises(ValueError, match="chunk 1 .*too few to stitch; raise chunk_overlap"):
        stitched(scene, 20, 8, 3)


@given(seed=seeds(), n=st.integers(20, 200), junk=st.floats(0.0, 0.4))
def test_robust_umeyama_ignores_junk_pairs(seed, n, junk):
    rng = np.random.default_rng(seed)
    src = rng.normal(size=(n, 3))
    s, r, t = random_similarity(rng)
    dst = s * src @ r.T + t
    bad = rng.permutation(n) < round(junk * n)  # exactly that share of junk: at most 40 %, below the breakdown point
    dst[bad] += rng.normal(scale=5.0 * s, size=(bad.sum(), 3)) + 3.0 * s  # junk, partly in one direction
    s_hat, r_hat, t_hat, inliers = robust_umeyama(src, dst)
    assert np.isclose(s_hat, s, rtol=1e-6)
    np.testing.assert_allclose(r_hat, r, atol=1e-6)
    np.testing.assert_array_equal(inliers, ~bad)
