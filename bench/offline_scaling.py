"""Offline preprocessing throughput over Dask workers (issue 6 (d)): the alignment chain of ``bench/align.py``
on densified scannet-mini scans, as one Dask task per scene, on 1, 2, 4, 8 process workers of one thread each.

    python bench/offline_scaling.py --workers 1,2,4,8 --points 200000 --scenes 16

Prints one JSON line per worker count: wall seconds, scenes per second, the speed-up over the first count and the
parallel efficiency. Scenes cycle through 8 training scans (seeds differ per task). Run it from a file, as
here: Dask's process workers import this module.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "PCDAG_THREADS"):
    os.environ[_var] = "1"  # every worker one thread: the scaling is over workers

sys.path.insert(0, str(Path(__file__).resolve().parent))

SCANS = [f"scene000{r}_0{s}" for r, s in ((0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0))]


def one_scene(scene: str, points: int, seed: int) -> int:
    from align import run_chain  # bench/align.py

    cloud, *_ = run_chain(scene, points, seed)
    return len(cloud)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", default="1,2,4,8")
    ap.add_argument("--points", type=int, default=200_000)
    ap.add_argument("--scenes", type=int, default=16)
    args = ap.parse_args()
    from dask.distributed import Client, LocalCluster

    first = None
    for n in [int(w) for w in args.workers.split(",")]:
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
        with cluster, Client(cluster) as client:
            client.run(lambda: None)  # workers up before timing
            t0 = time.perf_counter()
            futures = [
                client.submit(one_scene, SCANS[i % len(SCANS)], args.points, i, pure=False) for i in range(args.scenes)
            ]
            client.gather(futures)
            wall = time.perf_counter() - t0
        rate = args.scenes / wall
        first = first or (n, rate)
        speedup = rate / first[1]
        print(
            json.dumps(
                {
                    "bench": "offline_scaling",
                    "workers": n,
                    "points": args.points,
                    "scenes": args.scenes,
                    "wall_s": round(wall, 2),
                    "scenes_per_s": round(rate, 3),
                    "speedup": round(speedup, 2),
                    "efficiency": round(speedup * first[0] / n, 2),
                    "cpus": os.cpu_count(),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
