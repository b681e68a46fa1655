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
    ap.add_argument("--profile", action="store_true", help="profile forward + backward of one batch instead")
    ap.add_argument("--host-profile", action="store_true", help="host time per node and layer kind, sync sites")
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
    graph = apply_overrides(apply_preset(load_graph(Path("graphs/lam3c.yaml")), args.preset), values, base=Path.cwd())
    plan = compile_graph(graph)
    if args.profile or args.host_profile:
        profile_step(plan, args.scenes, host=args.host_profile)
        return
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


def profile_step(plan, scenes: int, host: bool = False) -> None:
    """Forward + backward of the step module on one batch under the torch profiler: the operators and the graph
    nodes (``node:NAME`` rows) with the most device time, and with the most host time. ``host``: one JSON line
    instead, host time per node and backbone layer kind and the lines that sync (``bench/host_profile.py``)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from pcdag.graphs.device import StepContext
    from pcdag.runtime.loader import collate_batch, dataset_from_plan
    from pcdag.runtime.step import StepModule

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module = StepModule(plan.device).to(device).train()
    data = dataset_from_plan(plan)
    batch = collate_batch([data[(0, i % len(data))] for i in range(scenes)]).to(device)
    cuda = device.type == "cuda"

    def once(step: int) -> None:
        ctx = StepContext(step, 100, torch.Generator(device).manual_seed(step), device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            total, _ = module(batch, ctx)
        total.backward()
        module.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()

    for step in range(3):
        once(step)
    if host:
        from host_profile import backbone_targets, profile_host

        counter = iter(range(3, 100))
        result = profile_host(lambda: once(next(counter)), lambda: None, *backbone_targets())
        print(json.dumps({"bench": "lam3c_host_profile", "scenes": scenes, **result}))
        return
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for step in range(3, 5):
            once(step)
    table = prof.key_averages()
    for key in (["self_cuda_time_total"] if cuda else []) + ["cpu_time_total"]:
        print(table.table(sort_by=key, row_limit=30, max_name_column_width=50))


if __name__ == "__main__":
    main()
