"""Backbone training-step benchmark (issue 6 (a)): PTv3 forward + backward + AdamW on synthetic rooms.

    python bench/backbone_step.py [--preset base] [--scenes 2] [--points 100000] [--steps 20] [--backend auto]
                                  [--precision bf16] [--profile] [--checkpoint] [--compile] [--host-profile]
    python bench/backbone_step.py --backbone sparse_unet [--impl pcdag|pointcept|both] [--preset 34c]
                                  [--backend spconv] [--precision fp16] [--rounds 3] [--steps 20]

``--backbone sparse_unet`` (issue 13) times the SpUNet step of pcdag's ``SparseUNet`` node and of Pointcept's own
SpUNet-v1m1 on the same input, AMP fp16; see ``bench/sparse_unet_step.py``.

Each scene is a generated room (``pcdag.datasets.synthetic.make_room``) grid-sampled at 0.02 m until it holds
``--points`` points. The step is the encoder (pre-training mode, up-cast to level 2 as in LAM3C) → mean of the
features as a stand-in loss → backward → AdamW, under bf16 autocast on CUDA. Prints one JSON line: median and
mean step time (ms, after 5 warm-up steps, synchronised), points/s, peak GPU memory, and an estimated model-FLOP
utilisation: 6 × (multiply-adds of the linear/conv layers + attention) per step over the GPU's dense bf16 peak
(``--peak-tflops``, 989 for the H100/H200 SXM). ``--profile`` prints the 25 operators with the most device time.
The reference (Pointcept PTv3-Base, spconv, SDPA, nvidia-h200) takes 133 ms for 2 × 100k points (Large 154 ms);
issue 6's target is ≤ 90 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch


def rooms(n_scenes: int, points: int, grid: float, seed: int = 0) -> list[np.ndarray]:
    """``n_scenes`` grid-sampled synthetic rooms of ~``points`` points each (``[n, 3]`` float32)."""
    from pcdag.datasets.synthetic import make_room
    from pcdag.nodes.views.parts.eval_view import grid_eval_rows

    out, rng = [], np.random.default_rng(seed)
    for _ in range(n_scenes):
        raw = points * 2
        while True:
            coord = make_room(rng, raw)["coord"]
            rows, _ = grid_eval_rows(coord, grid, "bench room")
            if len(rows) >= points or raw > 64 * points:
                break
            raw *= 2
        out.append(coord[rows[rng.permutation(len(rows))[:points]]])
    return out


def batch_of(clouds: list[np.ndarray], device: torch.device):
    from pcdag.graphs.batch import PointBatch

    coord = torch.from_numpy(np.concatenate(clouds)).to(device)  # [N, 3]
    feat = torch.cat([coord, torch.rand_like(coord), torch.nn.functional.normalize(torch.randn_like(coord))], 1)
    offset = torch.cumsum(torch.tensor([len(c) for c in clouds]), 0).to(device)
    return PointBatch(coord, feat, offset)


def flops_per_step(module: torch.nn.Module, n_points: list[int], config) -> float:
    """Rough model FLOPs of forward + backward: 6 × linear/conv weights × points at each level, plus attention
    (2 × 2 × patch × C per point and block, ×3 for the backward)."""
    from pcdag.nodes.backbones.ptv3.model import N_STAGES

    total = 0.0
    for s in range(N_STAGES):
        n = sum(n_points) / 8**s  # a coarse estimate of the points at level s (surfaces: closer to 4**s)
        stage = module.stages[s]
        weights = sum(p.numel() for name, p in stage.named_parameters() if p.dim() > 1)
        c = config.enc_channels[s]
        attention = 4 * config.enc_patch_size[s] * c * config.enc_depths[s]
        total += 6 * weights * n + 3 * attention * n
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default="ptv3", choices=["ptv3", "sparse_unet"])
    ap.add_argument("--preset", default=None, help="default: base (ptv3), 34c (sparse_unet)")
    ap.add_argument("--scenes", type=int, default=2)
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=20, help="timed steps (per round for sparse_unet)")
    ap.add_argument("--backend", default=None, help="default: auto (ptv3), spconv (sparse_unet)")
    ap.add_argument("--precision", default=None, choices=["bf16", "fp16", "fp32"], help="bf16|fp16 AMP")
    ap.add_argument("--impl", default="both", choices=["pcdag", "pointcept", "both"], help="sparse_unet only")
    ap.add_argument("--rounds", type=int, default=3, help="sparse_unet: alternating timed rounds")
    ap.add_argument("--warmup", type=int, default=5, help="sparse_unet: untimed steps before the first round")
    ap.add_argument("--grid", type=float, default=0.02, help="sparse_unet: voxel edge (m)")
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--checkpoint", action="store_true", help="activation checkpointing of every block")
    ap.add_argument("--host-profile", action="store_true", help="host time per layer kind and the sync sites")
    ap.add_argument("--compile", action="store_true", help="torch.compile (dynamic shapes) each block's norms and MLP")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.backbone == "sparse_unet":
        from sparse_unet_step import run

        args.preset, args.backend = args.preset or "34c", args.backend or "spconv"
        args.precision = args.precision or "fp16"
        run(args, rooms(args.scenes, args.points, args.grid), device)
        return
    args.preset, args.backend, args.precision = args.preset or "base", args.backend or "auto", args.precision or "bf16"
    if args.precision == "fp16":
        ap.error("--backbone ptv3 runs bf16 or fp32")
    from pcdag.nodes.backbones.ptv3.model import PointTransformerV3Module, PTv3Config

    torch.manual_seed(0)
    config = PTv3Config.preset(
        args.preset, mode="encoder", upcast_level=2, backend=args.backend, checkpoint=args.checkpoint
    )
    module = PointTransformerV3Module(config).to(device)
    if args.compile:  # an experiment: fuse LayerNorm and the MLP's GELU with Inductor (graph per block kind)
        for block in (b for stage in module.stages for b in stage.blocks):
            for name in ("norm1", "norm2", "mlp"):
                setattr(block, name, torch.compile(getattr(block, name), dynamic=True))
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4, fused=device.type == "cuda" or None)  # as the trainer
    clouds = rooms(args.scenes, args.points, config.grid_size)
    batch = batch_of(clouds, device)
    bf16 = args.precision == "bf16" and device.type == "cuda"

    def step() -> None:
        with torch.profiler.record_function("forward"), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            out = module(batch)
        with torch.profiler.record_function("backward"):
            out.feat.float().mean().backward()
        with torch.profiler.record_function("optimizer"):
            opt.step()
            opt.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(5):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    n = sum(len(c) for c in clouds)
    median = statistics.median(times)
    flops = flops_per_step(module, [len(c) for c in clouds], config)
    out = {
        "bench": "backbone_step",
        "preset": args.preset,
        "backend": config.backend,
        "checkpoint": config.checkpoint,
        "compile": args.compile,
        "precision": args.precision if device.type == "cuda" else "fp32",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "scenes": args.scenes,
        "points": n,
        "median_ms": round(1000 * median, 1),
        "mean_ms": round(1000 * statistics.fmean(times), 1),
        "points_per_s": round(n / median),
        "peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
        "est_tflop_per_step": round(flops / 1e12, 2),
        "est_mfu": round(flops / median / (args.peak_tflops * 1e12), 4) if device.type == "cuda" else None,
    }
    print(json.dumps(out))
    if args.host_profile:
        host_profile(step, sync)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            for _ in range(3):
                step()
            sync()
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60))


def host_profile(step, sync) -> None:
    """One JSON line: host time per layer kind (``bench/host_profile.py``) and the lines that sync."""
    from host_profile import backbone_targets, profile_host

    print(json.dumps({"bench": "backbone_host_profile", **profile_host(step, sync, *backbone_targets())}))


if __name__ == "__main__":
    main()
