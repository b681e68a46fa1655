"""Neighbour-search benchmark: the training step's knn_within and nearest_between, cell grid against brute force.

    python bench/neighbours.py [--samples 4] [--points 16000] [--grid 0.08] [--k 24] [--radius 0.12]
                               [--repeats 5] [--device auto]

Each sample is a generated room (``pcdag.datasets.synthetic.make_room``) grid-sampled at ``--grid`` until it holds
``--points`` points, like the LAM3C views at the 0.08 m level. ``knn_within`` runs with ``--k`` (24: the
Laplacian), ``nearest_between`` matches every sample against a second view of it (the same room re-sampled: the
points moved by 1 cm Gaussian noise, in another order) with ``--radius`` (0.08 × 1.5). Both run with
``method="grid"`` (what "auto" picks here) and ``method="brute"`` (the fallback and reference), on CUDA when
available (synchronised) else CPU. Prints one JSON line: median ms of ``--repeats`` calls after one warm-up, the
speed-up, what the grid did (cell side, candidate distances per point, chunks, knn rows sent to the brute force),
host syncs per call (CUDA only, counted with ``torch.cuda.set_sync_debug_mode``), peak GPU memory of one call, and
the agreement of the two paths (largest distance difference, identical matches).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from backbone_step import rooms

from pcdag.ops.neighbours import knn_within_stats, nearest_between_stats


def views(args: argparse.Namespace, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``coord`` [N, 3], ``offset`` [B] and a second view ``other`` [N, 3] (1 cm noise, shuffled per sample)."""
    clouds = rooms(args.samples, args.points, args.grid, seed=args.seed)
    rng = np.random.default_rng(args.seed + 1)
    other = [c[rng.permutation(len(c))] + rng.normal(0, 0.01, size=c.shape).astype(np.float32) for c in clouds]
    offset = torch.cumsum(torch.tensor([len(c) for c in clouds]), 0).to(device)
    as_tensor = lambda parts: torch.from_numpy(np.concatenate(parts)).to(device)  # [N, 3]
    return as_tensor(clouds), offset, as_tensor(other)


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, object]:
    """Median milliseconds of ``repeats`` synchronised calls after a warm-up, and the last result."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    out = fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times), out


def syncs_and_memory(fn: Callable[[], object], device: torch.device) -> tuple[int | None, float | None]:
    """Host syncs of one call and its peak GPU memory (GiB); ``None`` on the CPU."""
    if device.type != "cuda":
        return None, None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    return syncs, round((torch.cuda.max_memory_allocated(device) - base) / 2**30, 3)


def compare(args: argparse.Namespace, name: str, grid_fn, brute_fn, device: torch.device) -> tuple[dict, tuple]:
    grid_ms, grid = timed(grid_fn, args.repeats, device)
    brute_ms, brute = timed(brute_fn, args.repeats, device)
    stats = grid[-1]
    syncs, peak = syncs_and_memory(grid_fn, device)
    brute_syncs, brute_peak = syncs_and_memory(brute_fn, device)
    out = {
        f"{name}_ms": round(grid_ms, 2),
        f"{name}_brute_ms": round(brute_ms, 2),
        f"{name}_speedup": round(brute_ms / grid_ms, 1),
        f"{name}_path": stats.path,
        f"{name}_cell_m": round(stats.cell, 4),
        f"{name}_candidates_per_point": round(stats.candidates / args.total, 1),
        f"{name}_chunks": stats.chunks,
        f"{name}_syncs": syncs,
        f"{name}_brute_syncs": brute_syncs,
        f"{name}_peak_gib": peak,
        f"{name}_brute_peak_gib": brute_peak,
    }
    return out, (grid, brute)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--points", type=int, default=16_000)
    ap.add_argument("--grid", type=float, default=0.08, help="grid sampling of the rooms (m)")
    ap.add_argument("--k", type=int, default=24)
    ap.add_argument("--radius", type=float, default=0.08 * 1.5, help="nearest_between's match radius (m)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    args = ap.parse_args()
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    coord, offset, other = views(args, device)
    args.total = len(coord)
    pairs = torch.stack([torch.arange(args.samples)] * 2, dim=1).to(device)  # [B, 2] each view with its twin

    knn = lambda method: lambda: knn_within_stats(coord, offset, args.k, method=method)
    near = lambda method: lambda: nearest_between_stats(coord, offset, other, offset, pairs, args.radius, method=method)
    knn_row, ((_, dist, stats), (_, ref_dist, _)) = compare(args, "knn", knn("grid"), knn("brute"), device)
    near_row, (got, ref) = compare(args, "nearest", near("grid"), near("brute"), device)
    same = len(got[0]) == len(ref[0]) and all(torch.equal(a, b) for a, b in zip(got[:3], ref[:3], strict=True))
    out = {
        "bench": "neighbours",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "samples": args.samples,
        "points": args.total,
        "k": args.k,
        "radius": args.radius,
        **knn_row,
        "knn_fallback_rows": stats.fallback_rows,
        "knn_max_dist_diff": float((dist - ref_dist).nan_to_num(posinf=0.0).abs().max()),
        **near_row,
        "nearest_matches": len(got[0]),
        "nearest_same_as_brute": same,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
