"""Gravity accuracy of ``AlignZUp`` on the real 7-Scenes RGB-D sequence, with and without the camera prior.

Runs the nodes of ``graphs/rgbd-to-cloud.yaml`` up to ``AlignZUp`` (same parameters; ``--frame-step`` as in the
graph by default) on ``../shared/data/rgbd-7scenes``, then ``AlignZUp`` with ``camera_prior: auto`` and ``off``
for several RANSAC seeds, and prints the angle between the direction ``AlignZUp`` puts on +z (from its reported
rotation) and minus ``gravity-direction.txt``, the measured up. Not a timing benchmark.

``--sfm`` checks the sparse path instead: the colour frames alone (no depth, poses or intrinsics) through
``Reconstruct`` backend ``sfm``, the same outlier removal, then ``AlignZUp``; the measured up is carried into the
SfM model's frame by the similarity that best maps its camera centres onto the true ones (Umeyama), whose fit is
printed as the trajectory error (ATE RMSE). It also prints the share of points left below the floor.

    python bench/gravity_7scenes.py                   # frame_step 2 (the graph's), seeds 0-7
    python bench/gravity_7scenes.py --frame-step 10 --seeds 4
    python bench/gravity_7scenes.py --sfm --frame-step 10 --seeds 4
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from pcdag.graphs.frames import Frames
from pcdag.nodes.alignment.align_z_up import AlignZUp
from pcdag.nodes.geometry.outliers import RadiusOutlierRemoval, StatisticalOutlierRemoval
from pcdag.nodes.reconstruction.parts.base import backend
from pcdag.nodes.reconstruction.parts.chunks import reconstruct_in_chunks, transform_points, umeyama
from pcdag.nodes.reconstruction.reconstruct import Reconstruct
from pcdag.nodes.sources.rgbd_sequence import RGBDSequenceSource

ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "rgbd-7scenes"


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    cos = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--frame-step", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--sfm", action="store_true", help="colour frames alone through SfM (sparse cloud)")
    args = parser.parse_args()
    source = RGBDSequenceSource(root=str(args.root), frame_step=args.frame_step)
    rng = np.random.default_rng(0)
    frames = source.load(source.scenes()[0])
    up = -np.loadtxt(args.root / "gravity-direction.txt")  # gravity points down: up is its opposite
    cloud, up, unit = sparse_cloud(frames, up, rng) if args.sfm else (dense_cloud(frames, rng), up, 1.0)
    cloud = RadiusOutlierRemoval(spacing_factor=10.0, min_neighbours=1).apply(cloud, rng)
    cloud = StatisticalOutlierRemoval(k=50, std_ratio=4.0).apply(cloud, rng)
    prior = angle_deg(np.array(cloud.meta["camera_up"]), up)
    print(f"{len(frames)} frames, {len(cloud):,} points; camera prior {prior:.1f} deg from measured up")
    for mode in ("auto", "off"):
        angles, below = [], []
        for seed in range(args.seeds):
            out = AlignZUp(camera_prior=mode).apply(cloud.copy(), np.random.default_rng(seed))
            z = np.asarray(out.meta["report"]["AlignZUp"]["rotation"]).T @ [0.0, 0.0, 1.0]  # input put on +z
            angles.append(round(angle_deg(z, up), 2))
            below.append(round(float(np.mean(out["coord"][:, 2] * unit < -0.05)), 3))  # 5 cm under z = 0
        print(f"camera_prior={mode}: output +z vs measured up, seeds 0-{args.seeds - 1}: {angles} deg; "
              f"share of points below the floor: {below}")  # fmt: skip


def dense_cloud(frames, rng: np.random.Generator):
    """graphs/rgbd-to-cloud.yaml's reconstruction of the RGB-D frames (metres, the poses' world frame)."""
    node = Reconstruct(backend="rgbd", voxel_size=0.01, max_depth=6.0, edge_threshold=0.05)
    return node.run(rng, frames=frames)["cloud"]


def sparse_cloud(frames, up: np.ndarray, rng: np.random.Generator):
    """SfM of the colour frames alone with the camera prior ``Reconstruct`` writes; ``up`` in the model's frame; the
    model's scale in metres per unit (from the fit to the true camera centres)."""
    from pcdag.ops.camera_up import CAMERA_UP, CAMERA_UP_AGREEMENT, mean_camera_up

    video = Frames(colors=frames.colors, frame_ids=frames.frame_ids, meta={"scene": "7-scenes colour only"})
    params = Reconstruct(backend="sfm", use_known_cameras=False, voxel_size=0.0).params
    result = reconstruct_in_chunks(video, backend("sfm"), params, rng)
    ok = np.isfinite(result.poses).all(axis=(1, 2))  # registered frames
    est, true = result.poses[ok, :3, 3], frames.poses[ok, :3, 3].astype(np.float64)
    s, r, t = umeyama(est, true)  # true ≈ s r est + t
    ate = float(np.sqrt(np.mean(np.sum((transform_points(est, s, r, t) - true) ** 2, axis=1))))
    print(f"sfm: {int(ok.sum())} of {len(ok)} frames registered, ATE RMSE {100 * ate:.1f} cm, {result.report}")
    cloud = result.cloud
    camera_up, agreement = mean_camera_up(result.poses)
    cloud.meta.update({"scene": video.meta["scene"], CAMERA_UP: list(camera_up), CAMERA_UP_AGREEMENT: agreement})
    return cloud, r.T @ up, s  # up is a direction (rotation only); s: metres per model unit


if __name__ == "__main__":
    main()
