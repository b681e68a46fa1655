"""Oversegmentation speed: seconds of ``pcdag.ops.felzenszwalb.oversegment`` on 50k-point scannet-mini scans, one core.

    python bench/oversegment.py [--scenes 3] [--repeat 5] [--k 8]

Target (issue 15): <= 0.5 s per 50k-point scene on one core, kNN graph included (normals come from upstream and are
not timed). Runs with ``PCDAG_THREADS=1`` (the kd-tree query on one thread); per scene, the median of ``--repeat``
runs of the whole call (wall and process CPU seconds) and of its phases: canonical order + kNN graph, edge
weights, the Felzenszwalb merge (sort, the two Python passes, renumbering). Prints one JSON line. On a loaded
machine the wall figures are noisy (the CPU seconds less so): the line carries the load average; say so with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

os.environ["PCDAG_THREADS"] = "1"

from pcdag.ops import felzenszwalb as fz  # noqa: E402
from pcdag.ops.normals import estimate_normals, orient_toward  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "scannet-mini"
TARGET_S = 0.5


def phases(coord: np.ndarray, normal: np.ndarray, k: int) -> dict[str, float]:
    """Wall seconds of each phase of one ``oversegment`` call (the same steps, timed apart)."""
    t0 = time.perf_counter()
    order = fz.canonical_order(coord, normal)
    c, n = coord[order], normal[order]
    u, v = fz.knn_edges(c, k)
    t1 = time.perf_counter()
    w = fz.edge_weights(c, n, u, v)
    t2 = time.perf_counter()
    fz.segment_graph(len(c), u, v, w, 0.01, 20)
    t3 = time.perf_counter()
    return {"graph": t1 - t0, "weights": t2 - t1, "merge": t3 - t2}


def scene(path: Path, k: int, repeat: int) -> dict:
    coord = np.load(path / "coord.npy")
    normal = orient_toward(estimate_normals(coord, 32), coord, coord.astype(np.float64).mean(axis=0))
    label = fz.oversegment(coord, normal, k=k)  # warm-up (imports scipy, first allocations)
    wall, cpu, parts = [], [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fz.oversegment(coord, normal, k=k)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
        parts.append(phases(coord, normal, k))
    sizes = np.bincount(label)
    return {
        "scene": f"{path.parent.name}/{path.name}",
        "points": len(coord),
        "segments": len(sizes),
        "median_points": float(np.median(sizes)),
        "wall_s": round(statistics.median(wall), 3),
        "cpu_s": round(statistics.median(cpu), 3),
        "phases_s": {p: round(statistics.median(x[p] for x in parts), 3) for p in parts[0]},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenes", type=int, default=3, help="train scenes of scannet-mini (default 3)")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per scene (default 5)")
    ap.add_argument("--k", type=int, default=8, help="neighbours per point (default 8, the node's default)")
    args = ap.parse_args()
    if args.scenes < 1 or args.repeat < 1:
        ap.error("--scenes and --repeat must be at least 1")
    paths = sorted(p for p in (DATA / "train").iterdir() if (p / "coord.npy").exists())[: args.scenes]
    if not paths:
        raise SystemExit(f"no scannet-mini scans under {DATA / 'train'}")
    rows = [scene(p, args.k, args.repeat) for p in paths]
    worst = max(r["wall_s"] for r in rows)
    print(
        json.dumps(
            {
                "bench": "oversegment",
                "k": args.k,
                "threads": 1,
                "target_s": TARGET_S,
                "worst_wall_s": worst,
                "meets_target": worst <= TARGET_S,
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "machine": platform.processor() or platform.machine(),
                "scenes": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
