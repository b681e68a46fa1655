"""Benchmark of SubMConv3d (3×3×3, C→C): torch backend forward and forward+backward, spconv backend forward.

The points are the surface voxels of a synthetic room (floor, ceiling, four walls and a few boxes standing on the
floor) at unit grid spacing, shuffled, cut to N, batch of one: a surface cloud like a 2 cm voxelised scan, with
~7 of the 27 neighbours present. For each N the table gives the fastest of ``--repeat`` runs of:

    first        forward of the first convolution of a stage: builds the neighbour pairs (torch) or indice pairs
                 (spconv) into the stage cache, under torch.no_grad()
    fwd          forward with a warm stage cache (every later convolution of the stage), under torch.no_grad()
    fwd+bwd      forward and backward of (out**2).mean() with a warm cache (torch everywhere; spconv on CUDA only:
                 spconv's CPU build has no backward)

CPU runs use one thread unless ``--threads`` says otherwise: on a small shared machine several OpenMP pools (torch's
and the libgomp that spconv bundles) spinning against other jobs made 2-thread timings swing by 100×.

    python bench/sparse_conv.py                             # N = 10k, 100k; C = 64; CPU, 1 thread
    python bench/sparse_conv.py --sizes 50000 --channels 32 --device cuda --repeat 10
    python bench/sparse_conv.py --sizes 10000 --forms 50000  # + present pairs vs dense loop vs vectorised
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable


def _threads() -> int:
    """--threads, read before torch and spconv load their OpenMP runtimes (each reads OMP_NUM_THREADS once)."""
    if "--threads" in sys.argv[:-1]:
        return int(sys.argv[sys.argv.index("--threads") + 1])
    return 1


for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(_threads())

import torch  # noqa: E402

from pcdag.ops.sparse_conv import SubMConv3d, neighbour_map, spconv_available  # noqa: E402


def room(n: int, seed: int = 0) -> torch.Tensor:
    """Surface voxels [n, 3] of a box room with a few boxes inside, shuffled (about n·1.3 generated, cut to n)."""
    gen = torch.Generator().manual_seed(seed)
    side = int((n / 7.5) ** 0.5) + 4  # 6 faces + boxes ≈ 7.5·side² voxels
    solids = [(torch.zeros(3, dtype=torch.long), torch.full((3,), side))]
    for _ in range(6):
        lo = torch.randint(2, side // 2, (3,), generator=gen)
        lo[2] = 0
        solids.append((lo, lo + torch.randint(side // 8 + 2, side // 3 + 3, (3,), generator=gen)))
    faces = [_box_surface(lo, hi) for lo, hi in solids]
    grid = torch.unique(torch.cat(faces), dim=0)
    grid = grid[(grid >= 0).all(1) & (grid <= side).all(1)]
    return grid[torch.randperm(len(grid), generator=gen)[:n]]


def _box_surface(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    axes = [torch.arange(int(lo[a]), int(hi[a]) + 1) for a in range(3)]
    cube = torch.cartesian_prod(*axes)  # [V, 3]
    on_face = ((cube == lo) | (cube == hi)).any(1)
    return cube[on_face]


def fastest(fn: Callable[[], object], repeat: int, device: torch.device) -> float:
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def bench(n: int, channels: int, backend: str, device: torch.device, repeat: int) -> dict[str, float | None]:
    torch.manual_seed(0)
    grid = room(n).to(device)
    batch = torch.zeros(len(grid), dtype=torch.long, device=device)
    conv = SubMConv3d(channels, channels, backend=backend).to(device)
    feat = torch.randn(len(grid), channels, device=device)
    cache: dict = {}

    def cold() -> None:
        cache.clear()
        with torch.no_grad():
            conv(feat, grid, batch, cache)

    def forward() -> None:
        with torch.no_grad():
            conv(feat, grid, batch, cache)

    def train() -> None:
        x = feat.detach().requires_grad_()
        conv(x, grid, batch, cache).square().mean().backward()

    cold()  # warm-up, and the stage cache for `forward`
    fwd = fastest(forward, repeat, device)
    row = {"n": len(grid), "first": fastest(cold, repeat, device), "fwd": fwd, "fwd+bwd": None}
    if backend == "torch":
        rows, _, _ = cache["subm3:torch"][1]  # present (output, input) pairs, the centre included
        row["neighbours"] = len(rows) / len(grid)
    if backend == "torch" or device.type == "cuda":
        row["fwd+bwd"] = fastest(train, repeat, device)
    return row


def compare_forms(n: int, channels: int, repeat: int) -> None:
    """The torch backend's form against two others it could have taken (CPU; why the present-pair loop was kept)."""
    grid = room(n)
    batch = torch.zeros(len(grid), dtype=torch.long)
    conv = SubMConv3d(channels, channels, bias=False, backend="torch")
    nbr = neighbour_map(grid, batch)  # [N, 27]
    padded = torch.where(nbr < 0, len(grid), nbr)  # [N, 27]; absent -> an appended zero row
    w = conv.weight.flatten(1, 3).permute(1, 2, 0)  # [27, C, C]
    cache: dict = {}

    def dense_loop(x: torch.Tensor) -> torch.Tensor:
        xz = torch.cat([x, x.new_zeros(1, channels)])  # [N + 1, C]
        return sum(xz[padded[:, k]] @ w[k] for k in range(27))

    def vectorised(x: torch.Tensor) -> torch.Tensor:
        xz = torch.cat([x, x.new_zeros(1, channels)])  # [N + 1, C]
        return xz[padded].flatten(1) @ w.flatten(0, 1)  # [N, 27·C] @ [27·C, C]

    forms = {
        "present pairs (kept)": lambda x: conv(x, grid, batch, cache),
        "dense loop, 27 offsets": dense_loop,
        "vectorised [N,27C]": vectorised,
    }
    feat = torch.randn(len(grid), channels)
    print(f"\nforms of the torch backend, N={len(grid)}, C={channels}, CPU, fastest of {repeat} (ms)")
    for name, form in forms.items():
        with torch.no_grad():
            fwd = fastest(lambda form=form: form(feat), repeat, torch.device("cpu"))
        both = fastest(
            lambda form=form: form(feat.requires_grad_()).square().mean().backward(), repeat, torch.device("cpu")
        )
        print(f"{name:24} fwd {fwd * 1e3:8.1f}   fwd+bwd {both * 1e3:8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch and spconv (default 1)")
    parser.add_argument("--forms", type=int, default=0, metavar="N", help="also compare torch-backend forms at N")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    backends = ["torch"] + (["spconv"] if spconv_available() else [])
    print(f"SubMConv3d 3x3x3, C={args.channels}->{args.channels}, {device}, torch {torch.__version__}, ", end="")
    print(f"{torch.get_num_threads()} threads, fastest of {args.repeat} (ms)")
    print(f"{'backend':8} {'N':>8} {'nbrs':>5} {'first':>9} {'fwd':>9} {'fwd+bwd':>9}")
    for n in args.sizes:
        for backend in backends:
            row = bench(n, args.channels, backend, device, args.repeat)
            nbrs = f"{row['neighbours']:5.1f}" if "neighbours" in row else f"{'':5}"
            cells = [f"{row[k] * 1e3:9.1f}" if row[k] is not None else f"{'-':>9}" for k in ("first", "fwd", "fwd+bwd")]
            print(f"{backend:8} {row['n']:8d} {nbrs} {' '.join(cells)}")
    if args.forms:
        compare_forms(args.forms, args.channels, args.repeat)


if __name__ == "__main__":
    main()
