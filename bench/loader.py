"""Loader benchmark: milliseconds per scene of a graph's loader stage on ONE core (issue 6 (c)).

    python bench/loader.py [--graph graphs/lam3c.yaml] [--preset base] [--repeat 3] [--profile]

Reads every training scene of the graph's store once (timed apart: `read`), then runs the fused loader program
(GridSample → MultiViewGenerator for LAM3C) on each, `--repeat` passes with fresh randomness, pinned to one core
with one thread. Prints one JSON line: median and mean wall ms per scene for reading and for the transforms, the
median CPU ms (the steadier figure on a shared virtual machine), scenes/s per core, points per scene.
`--profile` adds the 12 functions with the most cumulative time (cProfile).
The reference (Pointcept / official LAM3C transform pipeline, one core of the 2-core dev machine) takes 134 ms per
50,000-point scannet-mini scene; issue 6's target is ≤ 45 ms.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import statistics
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--graph", default="graphs/lam3c.yaml")
    ap.add_argument("--preset", default=None, help="graph preset (default: the graph's own settings)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--sort", default="cumulative", help="cProfile order: cumulative or tottime")
    ap.add_argument("--top", type=int, default=12, help="functions to list")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    from pcdag.compiler import compile_graph
    from pcdag.graphs.overrides import apply_preset
    from pcdag.graphs.yamlio import load_graph
    from pcdag.runtime.loader import dataset_from_plan

    plan = compile_graph(apply_preset(load_graph(Path(args.graph)), args.preset))
    data = dataset_from_plan(plan)
    store, fields = data.store, data.fields
    reads, clouds = [], []
    for entry in data.entries:
        t0 = time.perf_counter()
        clouds.append(store.read(entry.id, fields))
        reads.append(time.perf_counter() - t0)
    program, times, cpu = data.transform, [], []
    profiler = cProfile.Profile() if args.profile else None
    for r in range(args.repeat):
        for i, cloud in enumerate(clouds):
            item = cloud.copy()
            rng = np.random.default_rng([0, r, i])
            t0, c0 = time.perf_counter(), time.process_time()
            if profiler is not None:
                profiler.enable()
            program(item, rng)
            if profiler is not None:
                profiler.disable()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    out = {
        "bench": "loader",
        "graph": plan.graph.name,
        "preset": args.preset,
        "scenes": len(clouds),
        "passes": args.repeat,
        "points_per_scene": int(np.median([len(c) for c in clouds])),
        "read_ms_median": round(1000 * statistics.median(reads), 2),
        "transform_ms_median": round(1000 * statistics.median(times), 2),
        "transform_ms_mean": round(1000 * statistics.fmean(times), 2),
        "transform_cpu_ms_median": round(1000 * statistics.median(cpu), 2),  # CPU time: robust to a busy VM
        "scenes_per_s_per_core": round(1 / statistics.fmean(times), 2),
        "machine": platform.node(),
        "cpu": platform.processor() or platform.machine(),
    }
    print(json.dumps(out))
    if profiler is not None:
        pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    main()
