"""Compare training runs' metric logs: 1 GPU vs 2 GPUs (DDP) at the same global batch against a seed-to-seed
control, then step time and peak memory of a run. Usage: compare_runs.py ONE TWO CONTROL [TIMING]."""

from __future__ import annotations

import json
import statistics
import sys


def read(path: str) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


def gap(a: list[dict], b: list[dict], key: str = "loss") -> float:
    """Mean absolute difference of ``key`` over the common steps, relative to the mean of ``a``."""
    pairs = [(x[key], y[key]) for x, y in zip(a, b, strict=False)]
    return statistics.mean(abs(x - y) for x, y in pairs) / statistics.mean(abs(x) for x, _ in pairs)


def timing(run: list[dict], skip: int = 3) -> str:
    rows = run[skip:] or run
    t = statistics.median(r["time"] for r in rows)
    wait = statistics.median(r["data_wait"] for r in rows)
    mem = max(r.get("mem_gib", 0.0) for r in run)
    pts = statistics.median(r["points"] for r in rows)
    return f"median step {t:.3f} s (data wait {wait:.3f} s), {pts:,.0f} points per step, peak memory {mem:.1f} GiB"


def main(argv: list[str]) -> None:
    one, two, control = (read(p) for p in argv[:3])
    print("step   1 GPU    2 GPUs   seed 1")
    for a, b, c in zip(one, two, control, strict=False):
        print(f"{a['step']:4d}  {a['loss']:.4f}  {b['loss']:.4f}  {c['loss']:.4f}")
    print(f"1 vs 2 GPUs: mean |Δloss| {gap(one, two):.2%} of the loss; seed 0 vs seed 1: {gap(one, control):.2%}")
    for key in ("loss/mask", "loss/roll", "loss/unmask", "loss/laplacian", "loss/consistency"):
        if key in one[0]:
            print(f"  {key}: 1 vs 2 GPUs {gap(one, two, key):.2%}, seed 0 vs 1 {gap(one, control, key):.2%}")
    print(f"1 GPU: {timing(one)}")
    print(f"2 GPUs: {timing(two)}")
    if len(argv) > 3:
        print(f"2 scenes x 100k points, 1 GPU: {timing(read(argv[3]))}")


if __name__ == "__main__":
    main(sys.argv[1:])
