"""Benchmark of the alignment chain on one CPU core: a ScanNet scan densified to 200k and 2M points.

A scannet-mini scan (50,000 points) is densified by repeating its points with 1 cm Gaussian noise, then rotated by
a random rotation (any axis and angle) and scaled by a random factor in [0.5, 2], and run through

    RandomDownsample(2M) -> RadiusOutlierRemoval(spacing_factor=10) -> StatisticalOutlierRemoval(50, 4.0)
    -> AlignZUp -> AlignScale -> NormalizeSpacing -> NormalizeDensity -> EstimateNormals(32)

in one process pinned to one core (thread pools of BLAS/OpenMP and pcdag's kd-tree queries set to 1 thread, CPU
affinity set to one core). Prints one JSON line per size: seconds per node (wall and CPU) of the fastest of
``--repeat`` passes, points in and out, whether a plane was found and the tilt of the labelled floor (RANSAC + SVD
on ScanNet's floor label) from +z afterwards.

    python bench/align.py                    # 200k and 2M points, scene0000_00, seed 0
    python bench/align.py --sizes 200000 --scene scene0003_00 --seed 3 --repeat 3
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "PCDAG_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported: its BLAS reads these once

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402

from pcdag.datasets import scannet  # noqa: E402
from pcdag.graphs.cloud import PointCloud  # noqa: E402
from pcdag.nodes.alignment.align_scale import AlignScale  # noqa: E402
from pcdag.nodes.alignment.align_z_up import AlignZUp  # noqa: E402
from pcdag.nodes.alignment.normalize_density import NormalizeDensity  # noqa: E402
from pcdag.nodes.alignment.normalize_spacing import NormalizeSpacing  # noqa: E402
from pcdag.nodes.alignment.parts.planes import plane_from_inliers, ransac_plane  # noqa: E402
from pcdag.nodes.alignment.random_downsample import RandomDownsample  # noqa: E402
from pcdag.nodes.geometry.normals import EstimateNormals  # noqa: E402
from pcdag.nodes.geometry.outliers import RadiusOutlierRemoval, StatisticalOutlierRemoval  # noqa: E402

DATA = Path(  # PCDAG_SCANNET: a copy of the scans elsewhere (e.g. carried to the GPU machine)
    os.environ.get("PCDAG_SCANNET", Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scannet-mini")
)
FLOOR = 1  # ScanNet-20 label "floor"


def chain() -> list:
    return [
        RandomDownsample(max_points=2_000_000),
        RadiusOutlierRemoval(spacing_factor=10),
        StatisticalOutlierRemoval(k=50, std_ratio=4.0),
        AlignZUp(),
        AlignScale(),
        NormalizeSpacing(),
        NormalizeDensity(),
        EstimateNormals(k=32),
    ]


def densified_scene(scene: str, n_points: int, rng: np.random.Generator) -> tuple[PointCloud, float]:
    """The scan repeated to ``n_points`` with 1 cm noise, randomly rotated and scaled; returns (cloud, scale)."""
    split = next(s for s in ("train", "val") if (DATA / s / scene).is_dir())
    arrays = scannet.read_scan(DATA / split / scene, ["color", "segment"], "segment20")
    source = np.arange(n_points) % len(arrays["coord"])  # [N] every scan point used equally often
    coord = arrays["coord"][source].astype(np.float64) + rng.normal(0.0, 0.01, (n_points, 3))  # [N, 3]
    rot, scale = Rotation.random(random_state=int(rng.integers(2**31))).as_matrix(), float(rng.uniform(0.5, 2.0))
    fields = {"coord": (coord @ rot.T * scale).astype(np.float32)}
    fields |= {"color": arrays["color"][source], "segment": arrays["segment"][source]}
    return PointCloud(fields, {"scene": f"{scene}-x{n_points}"}), scale


def floor_tilt_deg(cloud: PointCloud, scale: float) -> float | None:
    """Angle of the labelled floor's dominant plane (RANSAC, 2 cm x scale band, then SVD) from the z axis."""
    floor = cloud["coord"][cloud["segment"] == FLOOR].astype(np.float64)  # [F, 3]
    if len(floor) < 3:
        return None
    mask = ransac_plane(floor, 0.02 * scale, 2000, np.random.default_rng(0))
    if mask is None:
        return None
    normal = plane_from_inliers(floor, mask).normal
    return math.degrees(math.acos(min(1.0, abs(float(normal[2])))))


def run_chain(scene: str, n_points: int, seed: int) -> tuple[PointCloud, float, dict, dict]:
    """One pass: (output cloud, input scale, wall seconds per node, CPU seconds per node)."""
    rng = np.random.default_rng(seed)
    cloud, scale = densified_scene(scene, n_points, rng)
    wall, cpu = {}, {}
    for node in chain():
        t0, c0 = time.perf_counter(), time.process_time()
        cloud = node.apply(cloud, rng)
        wall[node.type_name()] = round(time.perf_counter() - t0, 3)
        cpu[node.type_name()] = round(time.process_time() - c0, 3)
    cloud.materialise()
    return cloud, scale, wall, cpu


def run(scene: str, n_points: int, seed: int, repeat: int) -> dict:
    """The chain ``repeat`` times on the same input (same seed): the figures of the fastest pass."""
    cloud, scale, wall, cpu = min(
        (run_chain(scene, n_points, seed) for _ in range(repeat)), key=lambda r: sum(r[2].values())
    )
    report = cloud.meta["report"]
    align = report["AlignZUp"]
    tilt = floor_tilt_deg(cloud, scale * report["AlignScale"]["factor"])
    return {
        "bench": "align",
        "scene": scene,
        "seed": seed,
        "repeat": repeat,
        "points_in": n_points,
        "points_out": len(cloud),
        "input_scale": round(scale, 4),
        "seconds": wall,
        "cpu_seconds": cpu,
        "total_s": round(sum(wall.values()), 3),
        "total_cpu_s": round(sum(cpu.values()), 3),
        "points_after": {k: v["n_out"] for k, v in report.items() if isinstance(v, dict) and "n_out" in v},
        "plane_found": align["plane_found"],
        "floor_tilt_deg": None if tilt is None else round(tilt, 3),
        "floor_within_2deg": tilt is not None and tilt <= 2.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[200_000, 2_000_000], help="points after densifying")
    ap.add_argument("--scene", default="scene0000_00", help="scannet-mini scan to densify")
    ap.add_argument("--seed", type=int, default=0, help="seed of noise, rotation, scale and every node")
    ap.add_argument("--repeat", type=int, default=1, help="passes per size; the fastest is reported (noisy hosts)")
    ap.add_argument("--cpu", type=int, default=None, help="core to pin to (default: the first one allowed)")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))})
    for n in args.sizes:
        print(json.dumps(run(args.scene, n, args.seed, args.repeat)), flush=True)


if __name__ == "__main__":
    main()
