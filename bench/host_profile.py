"""Where a training step's host (CPU) time goes, and which lines make the host wait for the GPU.

Used by ``bench/backbone_step.py --host-profile`` and ``bench/lam3c_step.py --host-profile``; run on a GPU
machine. Two instruments, both for benchmarks only (nothing here changes the code being measured):

* ``labelled(targets)``: wraps the ``forward`` of the given module classes, and the given module-level functions,
  in ``torch.profiler.record_function(name)`` for the duration of the block, so the profiler's table has one row
  per layer kind with its inclusive CPU time. Backward rows are the autograd engine's own
  (``autograd::engine::evaluate_function: ...``).
* ``sync_sites()``: turns on ``torch.cuda.set_sync_debug_mode("warn")`` and counts, per source line, the calls
  that synchronise with the GPU (a host read, a pageable copy, an op whose output size depends on the data).
  Each such call stalls the host until the GPU has drained its queue.

``summary(prof, steps)`` turns a profile into one JSON-able dict: per label calls and CPU ms per step, the
step's CPU and GPU totals and the 15 operators with the most self CPU time.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import traceback
import warnings
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def labelled(classes: list[type], functions: list[tuple[object, str]]) -> Iterator[None]:
    """``record_function`` around every ``cls.forward`` and every ``getattr(namespace, name)`` (restored after)."""
    undo = []

    def wrap(owner: object, attr: str, label: str) -> None:
        original = getattr(owner, attr)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            with torch.profiler.record_function(label):
                return original(*args, **kwargs)

        setattr(owner, attr, timed)
        undo.append((owner, attr, original))

    for cls in classes:
        wrap(cls, "forward", f"L:{cls.__name__}")
    for namespace, name in functions:
        wrap(namespace, name, f"L:{name}")
    try:
        yield
    finally:
        for owner, attr, original in reversed(undo):
            setattr(owner, attr, original)


@contextlib.contextmanager
def sync_sites(counts: collections.Counter) -> Iterator[None]:
    """Count the synchronising calls per ``file:line`` (the innermost frames outside torch) into ``counts``."""
    if not torch.cuda.is_available():
        yield
        return

    def record(message, category, filename, lineno, file=None, line=None) -> None:
        skip = ("/torch/", "warnings", "host_profile.py", "contextlib.py")
        frames = [f for f in traceback.extract_stack()[:-1] if not any(part in f.filename for part in skip)]
        where = " < ".join(f"{f.filename.split('/')[-1]}:{f.lineno}" for f in frames[-3:][::-1])
        counts[where] += 1

    previous = warnings.showwarning
    warnings.showwarning = record
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = record
            yield
    finally:
        torch.cuda.set_sync_debug_mode("default")
        warnings.showwarning = previous


def backbone_targets() -> tuple[list[type], list[tuple[object, str]]]:
    """The backbone's layer classes and structure functions worth a label of their own."""
    from pcdag.nodes.backbones.ptv3 import attention
    from pcdag.nodes.backbones.ptv3 import layers as ptv3_layers
    from pcdag.nodes.backbones.ptv3.model import Stage
    from pcdag.ops import sparse_conv

    classes = [
        ptv3_layers.Block,
        ptv3_layers.ConvPositionEncoding,
        sparse_conv.SubMConv3d,
        attention.PatchAttention,
        ptv3_layers.MLP,
        ptv3_layers.DropPath,
        ptv3_layers.GridPooling,
        torch.nn.LayerNorm,
        torch.nn.Linear,
        Stage,
    ]
    functions = [(ptv3_layers, "serialise"), (ptv3_layers, "patch_plan"), (sparse_conv, "_sparse_tensor")]
    return classes, functions


def profile_host(step, sync, classes: list[type], functions: list[tuple[object, str]], steps: int = 3) -> dict:
    """``step()`` once to warm the labels, once counting sync sites, then ``steps`` times under the profiler."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    syncs: collections.Counter = collections.Counter()
    with labelled(classes, functions):
        step()
        sync()
        with sync_sites(syncs):
            step()
        sync()
        with profile(activities=acts) as prof:
            for _ in range(steps):
                step()
            sync()
    return {**summary(prof, steps), "syncs_per_step": sum(syncs.values()), "sync_sites": dict(syncs.most_common(30))}


def summary(prof, steps: int) -> dict:
    """Per label: calls and inclusive CPU ms per step; totals; the operators with the most self CPU time.

    Only host-side rows count (a label also has a GPU-side annotation row of the same name); the GPU time is the
    sum of the kernels' durations."""
    from torch.autograd import DeviceType

    rows = [r for r in prof.key_averages() if r.device_type == DeviceType.CPU]
    per_step = lambda us: round(us / 1000 / steps, 2)  # noqa: E731
    labels = {
        r.key.removeprefix("L:"): {"calls": r.count // steps, "cpu_ms": per_step(r.cpu_time_total)}
        for r in rows
        if r.key.startswith(("L:", "node:")) or r.key in ("forward", "backward", "optimizer")
    }
    backward = [r for r in rows if r.key.startswith("autograd::engine::evaluate_function")]
    top = sorted(rows, key=lambda r: r.self_cpu_time_total, reverse=True)[:15]
    kernel_us = sum(k.duration for e in prof.events() for k in getattr(e, "kernels", []))
    launches = sum(r.count for r in rows if r.key in ("cudaLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx"))
    return {
        "labels": dict(sorted(labels.items(), key=lambda kv: -kv[1]["cpu_ms"])),
        "backward_functions_per_step": sum(r.count for r in backward) // steps,
        "kernel_launches_per_step": launches // steps,
        "gpu_kernel_ms_per_step": per_step(kernel_us),
        "cpu_ms_per_step": per_step(sum(r.self_cpu_time_total for r in rows)),
        "top_self_cpu": {r.key[:60]: {"calls": r.count // steps, "ms": per_step(r.self_cpu_time_total)} for r in top},
    }
