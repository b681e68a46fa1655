"""Full LAM3C training-step benchmark (issue 6 (b)): the shipped graph trained for a few steps, timed by the trainer.

    python bench/lam3c_step.py [--preset base] [--scenes 2] [--steps 12] [--store stores/scannet-mini]
                               [--backend auto] [--workers 6] [--set KEY=VALUE ...]

The step is the whole of `graphs/lam3c.yaml`: teacher on the global and the noise-perturbed views, student on the
masked global and the local views, both heads, Sinkhorn, matching, the Laplacian and consistency losses, AdamW,
clipping, bf16 on CUDA. ``--scenes`` per GPU and per step (no accumulation). Prints one JSON line with the median
step time after the first 3 steps, the median data wait, view points per step and peak GPU memory, read from the
run's metrics. The reference (official LAM3C, nvidia-h200): 808 ms at 2 scannet-mini scenes (~207k view points,
34.5 GiB), 1,829 ms at 6; issue 6's target is ≤ 270 ms at 2 and 12 scenes fitting in 80 GB.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import yaml


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="base")
    ap.add_argument("--scenes", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--store", default="stores/scannet-mini")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    import torch

    from pcdag.compiler import compile_graph
    from pcdag.graphs.overrides import apply_overrides, apply_preset
    from pcdag.graphs.yamlio import load_graph
    from pcdag.runtime.metrics import read_metrics
    from pcdag.runtime.trainer import train

    values = {
        "store.path": args.store,
        "student.backend": args.backend,
        "settings.train.steps": args.steps,
        "settings.train.global_batch": args.scenes,
        "settings.train.batch_per_device": args.scenes,
        "settings.train.workers": args.workers,
        "settings.train.checkpoint_every": 10**9,
    }
    for text in args.overrides:
        key, _, raw = text.partition("=")
        values[key] = yaml.safe_load(raw)
    graph = apply_overrides(apply_preset(load_graph(Path("graphs/lam3c.yaml")), args.preset), values)
    plan = compile_graph(graph)
    with tempfile.TemporaryDirectory() as tmp:
        train(plan, out=tmp, quiet=True)
        records = read_metrics(Path(tmp) / "metrics.jsonl")[3:]
    device = "cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name(0)
    med = lambda key: statistics.median(r[key] for r in records)  # noqa: E731
    print(
        json.dumps(
            {
                "bench": "lam3c_step",
                "preset": args.preset,
                "device": device,
                "scenes_per_gpu": args.scenes,
                "steps_timed": len(records),
                "median_ms": round(1000 * med("time"), 1),
                "data_wait_ms": round(1000 * med("data_wait"), 1),
                "view_points": int(med("points")),
                "peak_gib": max(r.get("mem_gib", 0.0) for r in records) or None,
                "loss_last": round(records[-1]["loss"], 4),
            }
        )
    )


if __name__ == "__main__":
    main()
