"""Dense from colour only on the real 7-Scenes sequence: the ``mvs`` dense step against the RGB-D fused cloud.

Reads ``../shared/data/rgbd-7scenes`` (every ``--frame-step``-th frame, at most ``--max-frames``), fuses its depth
(``Reconstruct`` backend rgbd, voxel 0.01 m: the reference), and builds the colour-only cloud:

- ``--poses gt`` (default): the frames' ground-truth poses and intrinsics, no depth, ``parts/mvs.densify``; the
  depth range comes from ``--min-depth`` / ``--max-depth`` (no sparse points).
- ``--poses sfm``: ``Reconstruct`` backend sfm with ``use_known_cameras: false`` and ``dense: mvs`` (colour only,
  intrinsics estimated), then the SfM cameras are moved onto the ground-truth ones by a similarity (Umeyama on
  the camera centres) and the cloud with them; the trajectory error (ATE RMSE) is reported.

Prints one JSON line: points, accuracy_m (median distance of MVS points to the RGB-D cloud), completeness (fraction
of RGB-D points within 5 cm of the MVS cloud), seconds, seconds per 100 frames, device, and the MVS report.

    python bench/mvs_7scenes.py                                   # all 300 frames, GT poses
    python bench/mvs_7scenes.py --frame-step 5 --max-image-size 160
    python bench/mvs_7scenes.py --poses sfm --frame-step 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import attrs
import numpy as np
import torch
from scipy.spatial import cKDTree

from pcdag.nodes.reconstruction.parts import mvs
from pcdag.nodes.reconstruction.parts.base import backend
from pcdag.nodes.reconstruction.parts.chunks import reconstruct_in_chunks, transform_points, umeyama
from pcdag.nodes.reconstruction.reconstruct import Reconstruct
from pcdag.nodes.sources.rgbd_sequence import RGBDSequenceSource

ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "rgbd-7scenes"


def compare(points: np.ndarray, reference: np.ndarray, radius: float = 0.05) -> tuple[float, float]:
    """(median distance of ``points`` to ``reference``, fraction of ``reference`` within ``radius`` of ``points``)."""
    accuracy = float(np.median(cKDTree(reference).query(points, workers=-1)[0]))
    completeness = float(np.mean(cKDTree(points).query(reference, workers=-1)[0] <= radius))
    return accuracy, completeness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--frame-step", type=int, default=1)
    parser.add_argument("--max-frames", type=int, default=0)
    parser.add_argument("--poses", choices=("gt", "sfm"), default="gt")
    parser.add_argument("--min-depth", type=float, default=0.3, help="m; depth range without sparse points")
    parser.add_argument("--max-depth", type=float, default=5.0, help="m")
    parser.add_argument("--max-image-size", type=int, default=320)
    parser.add_argument("--stride", type=int, default=2, help="mvs_reference_stride")
    parser.add_argument("--sources", type=int, default=4)
    parser.add_argument("--planes", type=int, default=64)
    parser.add_argument("--window", type=int, default=7)
    parser.add_argument("--min-zncc", type=float, default=0.5)
    parser.add_argument("--consistent", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=0.04)
    parser.add_argument("--voxel", type=float, default=0.01)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument(
        "--colour-focal",
        type=float,
        default=0.0,
        help="px; replaces the focal length of the given intrinsics (0 = keep)",
    )
    args = parser.parse_args()
    source = RGBDSequenceSource(root=str(args.root), frame_step=args.frame_step, max_frames=args.max_frames)
    frames = source.load(source.scenes()[0])
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    reference = Reconstruct(backend="rgbd", voxel_size=0.01).run(rng, frames=frames)["cloud"]["coord"]
    node = Reconstruct(
        backend="sfm",
        dense="mvs",
        use_known_cameras=args.poses == "gt",
        voxel_size=args.voxel,
        min_depth=args.min_depth,
        max_depth=args.max_depth,
        mvs_max_image_size=args.max_image_size,
        mvs_reference_stride=args.stride,
        mvs_sources=args.sources,
        mvs_planes=args.planes,
        mvs_window=args.window,
        mvs_min_zncc=args.min_zncc,
        mvs_consistent_views=args.consistent,
        mvs_consistency_tolerance=args.tolerance,
        device=args.device,
    )
    colour_only = attrs.evolve(frames, depths=None)
    if args.colour_focal:
        colour_only.intrinsics = frames.intrinsics.copy()
        colour_only.intrinsics[0, 0] = colour_only.intrinsics[1, 1] = args.colour_focal
    start = time.perf_counter()
    facts: dict = {}
    if args.poses == "gt":
        empty = np.empty((0, 3))
        cloud, report = mvs.densify(colour_only, frames.poses, colour_only.intrinsics, empty, node.params, "7-Scenes")
        points = cloud["coord"]
    else:
        colour_only = attrs.evolve(colour_only, poses=None, intrinsics=None)
        result = reconstruct_in_chunks(colour_only, backend("sfm"), node.params, rng)
        result = mvs.after_backend(colour_only, result, node.params)
        report = result.report
        facts, points = _align_to_gt(result, frames)
    seconds = time.perf_counter() - start
    accuracy, completeness = compare(points, reference)
    line = {
        "frames": len(frames),
        "poses": args.poses,
        "points": len(points),
        "reference_points": len(reference),
        "accuracy_m": round(accuracy, 4),
        "completeness": round(completeness, 4),
        "seconds": round(seconds, 1),
        "seconds_per_100_frames": round(100 * seconds / len(frames), 1),
        "device": report.get("mvs_device"),
        **facts,
        "report": report,
    }
    print(json.dumps(line, default=str))


def _align_to_gt(result, frames) -> tuple[dict, np.ndarray]:
    """The SfM cloud moved by the similarity of the SfM camera centres onto the ground-truth ones, and facts:
    frames registered, ATE RMSE (m) after the alignment, the scale."""
    ok = np.isfinite(result.poses).all(axis=(1, 2))
    src, dst = result.poses[ok, :3, 3], np.asarray(frames.poses, np.float64)[ok, :3, 3]
    s, r, t = umeyama(src, dst)
    ate = float(np.sqrt(np.mean(np.sum((transform_points(src, s, r, t) - dst) ** 2, axis=1))))
    facts = {"registered": int(ok.sum()), "ate_rmse_m": round(ate, 4), "sfm_to_gt_scale": round(s, 4)}
    return facts, transform_points(np.asarray(result.cloud["coord"]), s, r, t)


if __name__ == "__main__":
    main()
