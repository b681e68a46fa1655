"""SpUNet training step (issue 13): pcdag's ``SparseUNet`` node against Pointcept's own SpUNet-v1m1, same input.

Used by ``bench/backbone_step.py --backbone sparse_unet [--impl pcdag|pointcept|both]``. The step is forward +
backward + AdamW (fused on CUDA), under fp16 autocast with a ``GradScaler`` on CUDA (Pointcept trains SpUNet with
AMP fp16: spconv has no bf16 kernels), on the synthetic rooms of ``backbone_step.rooms`` with 9 input features and
the voxel coordinates ``floor((coord - scene minimum) / grid)`` given to both (one point per 0.02 m voxel, so both
see the same voxels). The mean of the output features stands in for a loss.

pcdag's side is built through the node registry (``SparseUNet``, parameters preset, backend, in_channels,
grid_size) and called as a backbone module, ``PointBatch -> Encoded``. Pointcept's side is the unchanged model
file under ``.ref/pointcept_spunet`` (``bash bench/ref_spunet.sh`` recreates it from a Pointcept mirror).

With ``--impl both`` the two are timed in alternating rounds (``--rounds``) in one process, so that a drift of
the host's speed reaches both; each one's peak memory is measured in its first round and excludes what the other
one holds (its weights and optimiser state). One JSON line per implementation, then one comparing them
(pcdag / Pointcept step time, the issue's target 0.8, and whether the parameter counts are equal).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch

REF = Path(__file__).resolve().parent.parent / ".ref" / "pointcept_spunet"
TARGET_RATIO = 0.8  # issue 13: pcdag's step time at most 0.8x Pointcept's
# Pointcept / MinkowskiEngine U-Net variants: (channels, blocks) per stage (4 encoder then 4 decoder stages)
REF_PRESETS = {
    "14a": ((32, 64, 128, 256, 128, 128, 96, 96), (1, 1, 1, 1, 1, 1, 1, 1)),
    "18a": ((32, 64, 128, 256, 128, 128, 96, 96), (2, 2, 2, 2, 2, 2, 2, 2)),
    "34c": ((32, 64, 128, 256, 256, 128, 96, 96), (2, 3, 4, 6, 2, 2, 2, 2)),
}
IN_CHANNELS = 9


class Unavailable(RuntimeError):
    """An implementation that cannot be built here (not merged yet, reference folder missing)."""


def spunet_batch(clouds, grid: float, device: torch.device):
    """The ``PointBatch`` of ``clouds`` with 9 features and per-scene voxel coordinates at ``grid``."""
    from backbone_step import batch_of

    batch = batch_of(clouds, device)
    sample = batch.batch
    low = torch.stack([c.min(0).values for c in torch.split(batch.coord, batch.counts.tolist())])  # [B, 3]
    grid_coord = torch.floor((batch.coord - low[sample]) / grid).to(torch.int64)  # [N, 3]
    return batch.replace(grid_coord=grid_coord)


def build_pcdag(preset: str, backend: str, grid: float, device: torch.device):
    """pcdag's module, through the registry, and its forward (features of every input point)."""
    from pcdag.graphs import registry

    cls = registry.get("SparseUNet")
    if cls is None:
        raise Unavailable("node type SparseUNet is not registered in this checkout (not merged yet)")
    node = cls(preset=preset, backend=backend, in_channels=IN_CHANNELS, grid_size=grid)
    module = node.build({}).to(device)
    return module, lambda batch: module(batch).feat


def _stand_ins() -> None:
    """Modules the reference file imports that this machine may lack: timm's ``trunc_normal_`` (torch's own has
    the same defaults, bounds +-2 absolute) and torch_geometric's ``scatter`` (the reference uses it only in
    ``enc_mode``, a per-sample mean)."""
    try:
        import timm.layers  # noqa: F401
    except ImportError:
        timm = types.ModuleType("timm")
        timm.layers = types.ModuleType("timm.layers")
        timm.layers.trunc_normal_ = torch.nn.init.trunc_normal_
        sys.modules.update({"timm": timm, "timm.layers": timm.layers})
    try:
        import torch_geometric.utils  # noqa: F401
    except ImportError:

        def scatter(src, index, dim=0, reduce="mean"):
            if reduce != "mean" or dim != 0:
                raise NotImplementedError(f"stand-in scatter: reduce={reduce!r}, dim={dim} (only mean over dim 0)")
            n = int(index.max()) + 1
            total = src.new_zeros((n, *src.shape[1:])).index_add_(0, index, src)
            return total / torch.bincount(index, minlength=n).clamp_min(1).reshape(-1, *[1] * (src.dim() - 1))

        pyg = types.ModuleType("torch_geometric")
        pyg.utils = types.ModuleType("torch_geometric.utils")
        pyg.utils.scatter = scatter
        sys.modules.update({"torch_geometric": pyg, "torch_geometric.utils": pyg.utils})


def build_pointcept(preset: str, device: torch.device):
    """Pointcept's SpUNet-v1m1 (no classifier: 96-d features per voxel) and its forward."""
    if device.type != "cuda":
        raise Unavailable("the Pointcept reference trains only on CUDA (spconv's CPU build has no backward)")
    if preset not in REF_PRESETS:
        raise Unavailable(f"Pointcept has no SpUNet preset {preset!r} (known: {', '.join(REF_PRESETS)})")
    if not (REF / "pointcept" / "models" / "sparse_unet" / "spconv_unet_v1m1_base.py").is_file():
        raise Unavailable(f"{REF} is missing: run `bash bench/ref_spunet.sh` from the checkout root")
    _stand_ins()
    sys.path.insert(0, str(REF))
    from pointcept.models.sparse_unet.spconv_unet_v1m1_base import SpUNetBase

    channels, layers = REF_PRESETS[preset]
    model = SpUNetBase(IN_CHANNELS, num_classes=0, channels=channels, layers=layers).to(device)

    def forward(batch):
        return model({"grid_coord": batch.grid_coord, "feat": batch.feat, "offset": batch.offset})

    return model, forward


class Runner:
    """One implementation's module, optimiser and AMP scaler; ``step()`` is one training step."""

    def __init__(self, name: str, module: torch.nn.Module, forward: Callable, batch, amp: bool) -> None:
        self.name, self.module, self.forward, self.batch, self.amp = name, module, forward, batch, amp
        self.device = batch.coord.device
        cuda = self.device.type == "cuda"
        self.opt = torch.optim.AdamW(module.parameters(), lr=1e-4, fused=cuda or None)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp)
        self.times: list[float] = []
        self.peak_gib: float | None = None
        self.params = sum(p.numel() for p in module.parameters())
        self.out_channels: int | None = None

    def step(self) -> None:
        with torch.autocast(self.device.type, torch.float16, enabled=self.amp):
            feat = self.forward(self.batch)
        self.out_channels = int(feat.shape[1])
        self.scaler.scale(feat.float().mean()).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_round(runner: Runner, steps: int, warmup: int, held_by_others: int | None) -> None:
    """``warmup`` untimed steps, then ``steps`` timed ones (synchronised); the peak memory when measured."""
    dev = runner.device
    if held_by_others is not None and dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for _ in range(warmup):
        runner.step()
    sync(dev)
    for _ in range(steps):
        t0 = time.perf_counter()
        runner.step()
        sync(dev)
        runner.times.append(time.perf_counter() - t0)
    if held_by_others is not None and dev.type == "cuda":
        runner.peak_gib = round((torch.cuda.max_memory_allocated(dev) - held_by_others) / 2**30, 2)


def run(args, clouds, device: torch.device) -> None:
    """Build the implementations ``args.impl`` names, time them in alternating rounds, print JSON lines."""
    amp = args.precision == "fp16" and device.type == "cuda"
    batch = spunet_batch(clouds, args.grid, device)
    builders = {
        "pointcept": lambda: build_pointcept(args.preset, device),
        "pcdag": lambda: build_pcdag(args.preset, args.backend, args.grid, device),
    }
    names = ["pcdag", "pointcept"] if args.impl == "both" else [args.impl]
    base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    common = {"bench": "sparse_unet_step", "preset": args.preset, "device": device_name(device)}
    common.update(precision="fp16-amp" if amp else "fp32", scenes=len(clouds), points=len(batch))
    runners: list[Runner] = []
    for name in names:
        try:
            torch.manual_seed(0)
            module, forward = builders[name]()
        except Unavailable as exc:
            print(json.dumps({**common, "impl": name, "skipped": str(exc)}), flush=True)
            continue
        held = (torch.cuda.memory_allocated(device) if device.type == "cuda" else 0) - base
        runner = Runner(name, module.train(), forward, batch, amp)
        time_round(runner, args.steps, args.warmup, held_by_others=max(held - param_bytes(module), 0))
        runners.append(runner)
    for _ in range(args.rounds - 1):
        for runner in runners:
            time_round(runner, args.steps, 2, held_by_others=None)
    for r in runners:
        med = statistics.median(r.times)
        record = {**common, "impl": r.name, "backend": args.backend if r.name == "pcdag" else "spconv"}
        record.update(parameters=r.params, out_channels=r.out_channels, steps_timed=len(r.times))
        record.update(median_ms=round(1000 * med, 1), mean_ms=round(1000 * statistics.fmean(r.times), 1))
        record.update(points_per_s=round(len(batch) / med), peak_gib=r.peak_gib)
        print(json.dumps(record), flush=True)
    if len(runners) == 2:
        ours, ref = (statistics.median(r.times) for r in runners)
        ratio = ours / ref
        same = runners[0].params == runners[1].params
        summary = {**common, "impl": "pcdag/pointcept", "step_ratio": round(ratio, 3), "target_ratio": TARGET_RATIO}
        summary.update(target_met=ratio <= TARGET_RATIO, parameters_equal=same)
        summary.update(parameters=[r.params for r in runners])
        print(json.dumps(summary), flush=True)


def param_bytes(module: torch.nn.Module) -> int:
    """Bytes of the module's own parameters and buffers (allocated at build, before the peak is reset)."""
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
