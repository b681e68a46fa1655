"""DDP scaling benchmark (issue 6 (e)): the shipped LAM3C graph on 1, 2, … GPUs at a fixed batch per GPU.

    python bench/ddp_scaling.py [--gpus 1,2] [--preset base] [--scenes 2] [--steps 12] [--store stores/scannet-mini]
                                [--set KEY=VALUE ...]

For every world size W it runs ``torchrun --standalone --nproc_per_node W -m pcdag.cli train graphs/lam3c.yaml``
with ``--scenes`` scenes per GPU and no accumulation (global batch W × scenes: weak scaling), reads the run's
metrics and prints one JSON line: median step time after the first 3 steps, scenes per second, and the scaling
efficiency against one GPU, ``scenes/s at W / (W × scenes/s at 1)``. Without GPUs it runs the same on CPU
processes (gloo), which checks the mechanics, not the speed. On the GPU machine: run it on nvidia-h200-x2 (or x4)
with ``NCCL_NVLS_ENABLE=0`` (KINDS.md), carrying the spconv bundle and a small store as ``bench/lam3c_gpu.sh`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def run_world(world: int, args: argparse.Namespace, out: Path) -> dict:
    """Train with ``world`` processes; the medians of the run's metrics (rank 0 writes them)."""
    from pcdag.runtime.metrics import read_metrics

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}"]
    cmd += ["-m", "pcdag.cli", "train", "graphs/lam3c.yaml", "--preset", args.preset, "--quiet", "--out", str(out)]
    sets = {
        "store.path": args.store,
        "settings.train.steps": args.steps,
        "settings.train.global_batch": world * args.scenes,
        "settings.train.batch_per_device": args.scenes,
        "settings.train.checkpoint_every": 10**9,
    }
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    for text in args.overrides:
        cmd += ["--set", text]
    env = {**os.environ, "NCCL_NVLS_ENABLE": "0", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"torchrun with {world} process(es) failed:\n{done.stderr[-4000:]}")
    records = read_metrics(out / "metrics.jsonl")[3:]
    if not records:
        raise SystemExit(f"{world} process(es): fewer than 4 steps were logged; raise --steps")
    step_s = statistics.median(r["time"] for r in records)
    return {"step_ms": 1000 * step_s, "scenes_per_s": world * args.scenes / step_s, "loss_last": records[-1]["loss"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpus", default="1,2", help="world sizes to run, comma-separated")
    ap.add_argument("--preset", default="base")
    ap.add_argument("--scenes", type=int, default=2, help="scenes per GPU per step")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--store", default="stores/scannet-mini")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (gloo)"
    worlds = [int(w) for w in args.gpus.split(",")]
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for world in worlds:
            result = run_world(world, args, Path(tmp) / f"w{world}")
            if world == 1:
                base = result["scenes_per_s"]
            efficiency = result["scenes_per_s"] / (world * base) if base else None
            line = {
                "bench": "ddp_scaling",
                "device": device,
                "preset": args.preset,
                "world_size": world,
                "scenes_per_gpu": args.scenes,
                "median_step_ms": round(result["step_ms"], 1),
                "scenes_per_s": round(result["scenes_per_s"], 3),
                "efficiency": round(efficiency, 3) if efficiency is not None else None,
                "loss_last": round(result["loss_last"], 4),
            }
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
