"""rgbd backend: depth edges, back-projection, fusion, errors, and 7-Scenes checked against held-out frames.

The 7-Scenes tests read every 2nd frame of the 300-frame sequence (150 frames at 640x480, to stay within a few
seconds per reconstruction on 2 cores) and hold out every 5th of those (every 10th original frame).
"""

from __future__ import annotations

import attrs
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from pcdag.graphs.frames import Frames
from pcdag.nodes.reconstruction.parts import rgbd
from pcdag.nodes.reconstruction.parts.chunks import reconstruct_in_chunks
from pcdag.nodes.reconstruction.reconstruct import Reconstruct
from pcdag.nodes.sources.rgbd_sequence import RGBDSequenceSource
from pcdag.testing import seeds

RNG = np.random.default_rng(0)
K = np.array([[60.0, 0, 15.5], [0, 60.0, 11.5], [0, 0, 1]], np.float32)


def params(**given) -> Reconstruct.Params:
    return Reconstruct(backend="rgbd", **given).params


def random_pose(rng: np.random.Generator) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = Rotation.random(random_state=int(rng.integers(2**31))).as_matrix()
    pose[:3, 3] = rng.normal(size=3)
    return pose


def project(points: np.ndarray, intrinsics: np.ndarray, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel column, row and depth of world points seen by a camera-to-world ``pose``."""
    camera = (points.astype(np.float64) - pose[:3, 3]) @ pose[:3, :3]  # R^T (x - t)
    z = camera[:, 2]
    return (
        intrinsics[0, 0] * camera[:, 0] / z + intrinsics[0, 2],
        intrinsics[1, 1] * camera[:, 1] / z + intrinsics[1, 2],
        z,
    )


# ------------------------------------------------------------------------------------------ pieces


@given(seed=seeds(), threshold=st.sampled_from((0.0, 0.02, 0.1, 0.5)))
def test_depth_edges_match_a_brute_force_neighbour_scan(seed, threshold):
    rng = np.random.default_rng(seed)
    depth = rng.choice([0.0, 1.0, 1.01, 2.0, 5.0], size=(2, 7, 9)) * rng.uniform(0.5, 2.0)
    depth = depth.astype(np.float32)
    edges = rgbd.depth_edges(depth, threshold)
    expected = np.zeros_like(edges)
    for b, i, j in np.ndindex(depth.shape):
        d = depth[b, i, j]
        if d == 0 or threshold == 0:
            continue
        block = depth[b, max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2]
        expected[b, i, j] = (np.abs(block[block > 0] - d) > threshold * d).any()
    np.testing.assert_array_equal(edges, expected)


@given(seed=seeds())
def test_back_projected_pixels_project_back_to_themselves(seed):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.2, 6.0, size=(24, 32)).astype(np.float32)
    pose = random_pose(rng)
    rows, cols = np.nonzero(rng.random((24, 32)) < 0.5)
    points = rgbd.back_project(depth, rows, cols, K, pose)
    u, v, z = project(points, K.astype(np.float64), pose)
    np.testing.assert_allclose(u, cols, atol=1e-3)
    np.testing.assert_allclose(v, rows, atol=1e-3)
    np.testing.assert_allclose(z, depth[rows, cols], rtol=1e-5)


def synthetic_frames(n: int = 4, h: int = 24, w: int = 32) -> Frames:
    """A wall at z = 3 m seen by cameras translated along x; colours encode the pixel column."""
    poses = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    poses[:, 0, 3] = np.arange(n) * 0.1
    colors = np.zeros((n, h, w, 3), np.uint8)
    colors[..., 0] = np.arange(w) * 8
    depths = np.full((n, h, w), 3.0, np.float32)
    return Frames(colors, [f"f{i}" for i in range(n)], depths=depths, poses=poses, intrinsics=K, meta={"scene": "wall"})


def test_fusion_keeps_every_valid_pixel_at_voxel_size_zero_and_points_lie_on_the_wall():
    frames = synthetic_frames()
    frames.depths[1, :5] = 0.0  # no measurement
    frames.depths[2, :, :4] = 20.0  # beyond max_depth (and makes an edge next to it)
    result = rgbd.reconstruct(frames, params(voxel_size=0.0, edge_threshold=0.0), RNG)
    expected = frames.depths.size - 5 * 32 - 24 * 4
    assert len(result.cloud) == expected == result.report["points_before_fusion"]
    np.testing.assert_allclose(result.cloud["coord"][:, 2], 3.0, rtol=1e-6)
    with_edges = rgbd.reconstruct(frames, params(voxel_size=0.0, edge_threshold=0.05), RNG)
    assert len(with_edges.cloud) == expected - 24  # the column beside the 20 m jump is an edge


def test_fused_voxels_average_position_and_colour():
    frames = synthetic_frames(n=1)
    result = rgbd.reconstruct(frames, params(voxel_size=0.5), RNG)
    cloud = result.cloud
    assert len(cloud) < 24 * 32 and result.report["points_after_fusion"] == len(cloud)
    x = rgbd.back_project(frames.depths[0], *np.nonzero(np.ones((24, 32), bool)), K, np.eye(4))[:, 0]
    for point, color in zip(cloud["coord"], cloud["color"], strict=True):  # colour = mean column colour of the voxel
        inside = np.floor(x / 0.5) == np.floor(point[0] / 0.5)
        cols = np.tile(np.arange(32), 24)[inside]
        assert abs(color[0] - np.mean(cols * 8)) <= 0.5 + 1e-9
        assert abs(point[0] - x[inside].mean()) < 1e-5


def test_frames_without_a_finite_pose_are_skipped():
    frames = synthetic_frames()
    frames.poses[1] = np.nan
    result = rgbd.reconstruct(frames, params(voxel_size=0.0, edge_threshold=0.0), RNG)
    assert len(result.cloud) == 3 * 24 * 32 and np.isnan(result.poses[1]).all() and np.isfinite(result.poses[0]).all()


def test_bad_inputs_get_clear_errors():
    frames = synthetic_frames()
    with pytest.raises(ValueError, match="scene 'wall'.*needs depths, poses and intrinsics.*no depths"):
        rgbd.reconstruct(attrs.evolve(frames, depths=None), params(), RNG)
    with pytest.raises(ValueError, match="use_known_cameras: true"):
        rgbd.reconstruct(frames, params(use_known_cameras=False), RNG)
    small = attrs.evolve(frames, depths=[d[:12, :16] if i == 2 else d for i, d in enumerate(frames.depths)])
    with pytest.raises(ValueError, match=r"depth of frame 'f2' is \[12, 16\] but its colour image is \[24, 32\]"):
        rgbd.reconstruct(small, params(), RNG)
    with pytest.raises(ValueError, match="no depth pixel survived"):
        rgbd.reconstruct(frames, params(max_depth=1.0), RNG)


# ------------------------------------------------------------------------------------------ 7-Scenes


@pytest.fixture(scope="module")
def seven_scenes(shared_data) -> tuple[Frames, np.ndarray]:
    source = RGBDSequenceSource(root=str(shared_data / "rgbd-7scenes"), frame_step=2)
    (ref,) = source.scenes()
    frames = source.load(ref)
    held_out = np.arange(len(frames)) % 5 == 2  # every 10th original frame
    return frames, held_out


@pytest.fixture(scope="module")
def seven_scenes_cloud(seven_scenes):
    frames, held_out = seven_scenes
    return reconstruct_in_chunks(frames.subset(np.flatnonzero(~held_out)), rgbd.reconstruct, params(), RNG)


def held_out_agreement(coord: np.ndarray, color: np.ndarray, frames: Frames, i: int) -> tuple[float, float, int]:
    """Render the cloud into frame i with a z-buffer (nearest point per pixel, at 1/4 resolution so that 2 cm
    voxels cover the image without see-through gaps); for visible points with a measured depth return the
    fraction within 5 cm of it, the correlation of point and image grey levels, and the number compared."""
    k, pose, depth = frames.intrinsics.astype(np.float64), frames.poses[i].astype(np.float64), frames.depths[i]
    u, v, z = project(coord, k, pose)
    h, w = depth.shape
    inside = np.flatnonzero((z > 0.1) & (u > -0.5) & (u < w - 0.5) & (v > -0.5) & (v < h - 0.5))
    col, row = np.round(u[inside]).astype(int), np.round(v[inside]).astype(int)
    cell = (row // 4) * w + col // 4  # [M] coarse pixel
    order = np.lexsort((z[inside], cell))
    first = np.concatenate([[True], cell[order][1:] != cell[order][:-1]])
    visible = order[first]  # nearest point of each coarse pixel
    measured = depth[row[visible], col[visible]]
    ok = measured > 0
    error = np.abs(z[inside][visible][ok] - measured[ok])
    grey_cloud = color[inside][visible][ok].astype(float).mean(1)
    grey_image = frames.colors[i][row[visible][ok], col[visible][ok]].astype(float).mean(1)
    return float((error < 0.05).mean()), float(np.corrcoef(grey_cloud, grey_image)[0, 1]), int(ok.sum())


def test_seven_scenes_cloud_agrees_with_held_out_depth_and_colour(seven_scenes, seven_scenes_cloud):
    """Measured: 75% of visible points within 5 cm of the held-out depth (68-85% per frame; a control with the cloud
    shifted 10 cm: 41%), grey-level correlation 0.75 (0.64-0.84; shuffled colours: 0.00). The limit is the data:
    raw 7-Scenes frames projected into frames 1-20 apart agree to 98-99% within 5 cm, frames 50-100 apart only to
    75-93% (cm-level pose drift, uncalibrated Kinect depth, auto exposure), and the z-buffer keeps the nearest of
    slightly offset layers. The local test below isolates our part."""
    frames, held_out = seven_scenes
    cloud = seven_scenes_cloud.cloud
    results = [held_out_agreement(cloud["coord"], cloud["color"], frames, i) for i in np.flatnonzero(held_out)]
    within, correlation, compared = (np.array(r) for r in zip(*results, strict=True))
    assert compared.min() > 2000  # the cloud covers every held-out view
    assert within.mean() > 0.7 and within.min() > 0.6
    assert correlation.mean() > 0.65


def test_seven_scenes_local_reconstruction_matches_held_out_depth_closely(seven_scenes):
    """From the 10 nearest kept frames: measured 94-96% within 5 cm of held-out depth, grey correlation 0.95-0.98."""
    frames, held_out = seven_scenes
    for i in np.flatnonzero(held_out)[[2, 14, 26]]:
        window = [j for j in range(i - 6, i + 7) if 0 <= j < len(frames) and not held_out[j]]
        result = rgbd.reconstruct(frames.subset(np.array(window)), params(), RNG)
        within, correlation, _ = held_out_agreement(result.cloud["coord"], result.cloud["color"], frames, i)
        assert within > 0.92 and correlation > 0.9


def test_seven_scenes_in_chunks_matches_the_whole_sequence(seven_scenes, seven_scenes_cloud):
    frames, held_out = seven_scenes
    kept = frames.subset(np.flatnonzero(~held_out))
    chunked = reconstruct_in_chunks(kept, rgbd.reconstruct, params(chunk_frames=40, chunk_overlap=8), RNG)
    assert chunked.report["chunks"] == 4 and seven_scenes_cloud.report["chunks"] == 1
    assert max(chunked.report["stitch_rms"]) < 1e-6 and np.allclose(chunked.report["stitch_scale"], 1.0)
    a, b = seven_scenes_cloud.cloud["coord"], chunked.cloud["coord"]
    assert len(a) == len(b)  # known poses: the same voxels are occupied
    chamfer = (cKDTree(a).query(b)[0].mean() + cKDTree(b).query(a)[0].mean()) / 2
    assert chamfer < 0.2 * 0.02  # well below a voxel: only the weighting of the voxel means differs
    np.testing.assert_allclose(chunked.poses, kept.poses, atol=1e-5)
