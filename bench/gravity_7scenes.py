"""Gravity accuracy of ``AlignZUp`` on the real 7-Scenes RGB-D sequence, with and without the camera prior.

Runs the nodes of ``graphs/rgbd-to-cloud.yaml`` up to ``AlignZUp`` (same parameters; ``--frame-step`` as in the
graph by default) on ``../shared/data/rgbd-7scenes``, then ``AlignZUp`` with ``camera_prior: auto`` and ``off``
for several RANSAC seeds, and prints the angle between the direction ``AlignZUp`` puts on +z (from its reported
rotation) and minus ``gravity-direction.txt``, the measured up. Not a timing benchmark.

    python bench/gravity_7scenes.py                   # frame_step 2 (the graph's), seeds 0-7
    python bench/gravity_7scenes.py --frame-step 10 --seeds 4
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from pcdag.nodes.alignment.align_z_up import AlignZUp
from pcdag.nodes.geometry.outliers import RadiusOutlierRemoval, StatisticalOutlierRemoval
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
    args = parser.parse_args()
    source = RGBDSequenceSource(root=str(args.root), frame_step=args.frame_step)
    rng = np.random.default_rng(0)
    frames = source.load(source.scenes()[0])
    cloud = Reconstruct(backend="rgbd", voxel_size=0.01, max_depth=6.0, edge_threshold=0.05).run(rng, frames=frames)
    cloud = RadiusOutlierRemoval(spacing_factor=10.0, min_neighbours=1).apply(cloud["cloud"], rng)
    cloud = StatisticalOutlierRemoval(k=50, std_ratio=4.0).apply(cloud, rng)
    up = -np.loadtxt(args.root / "gravity-direction.txt")
    prior = angle_deg(np.array(cloud.meta["camera_up"]), up)
    print(f"{len(frames)} frames, {len(cloud):,} points; camera prior {prior:.1f} deg from measured up")
    for mode in ("auto", "off"):
        angles = []
        for seed in range(args.seeds):
            facts = AlignZUp(camera_prior=mode).apply(cloud.copy(), np.random.default_rng(seed)).meta["report"]
            z = np.asarray(facts["AlignZUp"]["rotation"]).T @ [0.0, 0.0, 1.0]  # input direction put on +z
            angles.append(round(angle_deg(z, up), 2))
        print(f"camera_prior={mode}: output +z vs measured up, seeds 0-{args.seeds - 1}: {angles} deg")


if __name__ == "__main__":
    main()
