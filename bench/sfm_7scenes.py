"""SfM registration and trajectory error on the real 7-Scenes sequence treated as a plain video.

Loads ``../shared/data/rgbd-7scenes`` (colour, depth, poses, intrinsics), keeps the colour frames only (no depth,
no poses, no intrinsics: the camera is estimated) and runs ``Reconstruct(backend="sfm")``'s backend through the
chunking layer, as the node does. Then the registered camera centres are aligned to the ground-truth ones by a
similarity (Umeyama) and the ATE RMSE (metres) reported. Prints one JSON line. CPU-bound; set ``PCDAG_THREADS``
for COLMAP threads (default 1: reproducible).

    python bench/sfm_7scenes.py --step 3 --max-frames 100          # exploration: every 3rd frame, 100 frames
    python bench/sfm_7scenes.py --step 1                           # all 300 frames
    python bench/sfm_7scenes.py --step 3 --set sfm_matching=exhaustive --set sfm_models=largest
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import yaml

from pcdag.graphs.frames import Frames
from pcdag.nodes.reconstruction.parts.base import backend
from pcdag.nodes.reconstruction.parts.chunks import reconstruct_in_chunks, transform_points, umeyama
from pcdag.nodes.reconstruction.reconstruct import Reconstruct
from pcdag.nodes.sources.rgbd_sequence import RGBDSequenceSource

ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "rgbd-7scenes"


def ate_rmse(estimated: np.ndarray, truth: np.ndarray) -> float:
    """RMSE (truth units) of the registered camera centres after the least-squares similarity onto the truth."""
    ok = np.isfinite(estimated).all(axis=(1, 2))
    if ok.sum() < 3:
        return float("nan")
    src, dst = estimated[ok, :3, 3], truth[ok, :3, 3].astype(np.float64)
    moved = transform_points(src, *umeyama(src, dst))
    return float(np.sqrt(np.mean(np.sum((moved - dst) ** 2, axis=1))))


def parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected key=value")
        out[key] = yaml.safe_load(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--step", type=int, default=3, help="keep every k-th frame of the sequence")
    parser.add_argument("--frames", type=int, default=0, help="first frames of the sequence to consider (0 = all)")
    parser.add_argument("--max-frames", type=int, default=0, help="frames kept after --step at most (0 = all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="Reconstruct parameter, key=value (repeatable)")
    args = parser.parse_args()
    source = RGBDSequenceSource(root=str(args.root), max_frames=args.frames)
    rgbd = source.load(source.scenes()[0])
    keep = np.arange(0, len(rgbd), args.step)[: args.max_frames or None]
    frames = Frames(rgbd.colors[keep], [rgbd.frame_ids[i] for i in keep], meta={"scene": "7scenes"}).validate()
    truth = rgbd.poses[keep]
    options = parse_sets(args.set)
    params = Reconstruct(backend="sfm", use_known_cameras=False, **options).params
    start, cpu = time.perf_counter(), time.process_time()
    result = reconstruct_in_chunks(frames, backend("sfm"), params, np.random.default_rng(args.seed))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    report = result.report
    line = {
        "frames": len(frames),
        "step": args.step,
        "options": options,
        "threads": int(os.environ.get("PCDAG_THREADS", "1")),
        "frames_used": report.get("frames_used"),
        "registered": report.get("frames_registered"),
        "models": report.get("models"),
        "points": report.get("points"),
        "ate_rmse_m": round(ate_rmse(result.poses, truth), 4),
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu, 1),  # all threads of this process: comparable on a shared, loaded machine
        "report": {k: report.get(k) for k in ("matching", "mapper", "sfm_seconds", "colmap_warnings", "camera")},
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
