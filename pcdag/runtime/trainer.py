"""The trainer: runs a plan's device stage over its loader stage. One process by default; ``torchrun`` (or any
launcher that sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``) makes it torch DDP over GPUs and nodes.

Per optimiser step: ``accumulation`` micro-batches of ``batch_per_device`` scenes on every GPU (so one step sees
``global_batch`` scenes whatever the number of GPUs), each a forward of the compiled ``StepModule`` under bf16
autocast on CUDA and a backward (gradients all-reduced by DDP on the last micro-batch only), then global-norm
clipping, AdamW, OneCycle, the weight-decay schedule and every node's ``after_step`` (EMA teachers).
Every random draw is seeded from (graph seed, step, micro-batch, rank) and the data order from (seed, epoch), so
``--resume`` from a checkpoint continues exactly as if the run had not stopped.

The run directory holds ``graph.yaml`` (the resolved graph), ``plan.txt``, ``metrics.jsonl`` / ``metrics.csv``
(per step: total and weighted loss terms, each node's diagnostics, learning rate, weight decay, gradient norm,
step and data-wait time, points, peak GPU memory), ``loss.png`` and ``checkpoints/step-*.pt``.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.distributed as dist

from pcdag.atomic import atomic_write_text
from pcdag.graphs.device import StepContext
from pcdag.graphs.yamlio import dumps_graph
from pcdag.runtime import checkpoint as ckpt
from pcdag.runtime.devices import local_device
from pcdag.runtime.loader import SkippedScene, collate_batch, dataset_from_plan, loader_workers
from pcdag.runtime.metrics import MetricLog, plot_losses, read_metrics, write_csv
from pcdag.runtime.optim import build_optimizer, set_weight_decay
from pcdag.runtime.sampler import ResumableBatchSampler
from pcdag.runtime.step import StepModule


@attrs.frozen
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


@attrs.frozen
class TrainResult:
    run_dir: Path
    steps_done: int
    first_loss: float
    last_loss: float
    checkpoint: Path | None
    skipped_scenes: int


def setup_distributed(device: str = "auto") -> Dist:
    """Join the process group when launched by torchrun; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = local_device(device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(rank, world, local, dev)


def run_directory(plan: Any, out: str | Path | None) -> Path:
    preset = plan.graph.settings.get("preset") or "default"
    return Path(str(out or plan.train.out).format(name=plan.graph.name, preset=preset))


def step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 1_009 + micro * 101 + rank) % (2**62)


def train(
    plan: Any,
    out: str | Path | None = None,
    resume: bool = False,
    device: str = "auto",
    quiet: bool = False,
    stop_after: int | None = None,
) -> TrainResult:
    """Train ``plan`` (a compiled graph with loader and device stages). ``stop_after`` ends after that many
    steps of this invocation (the schedules still span ``settings.train.steps``)."""
    if plan.device is None or plan.train is None or plan.loader is None:
        raise ValueError(f"graph {plan.graph.name!r} has no training step (no loader and device stages)")
    d = setup_distributed(device)
    try:
        return _Run(plan, d, run_directory(plan, out), resume, quiet).loop(stop_after)
    finally:
        if d.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


class _Run:
    def __init__(self, plan: Any, d: Dist, run_dir: Path, resume: bool, quiet: bool) -> None:
        self.plan, self.d, self.run_dir, self.quiet = plan, d, run_dir, quiet
        self.t = plan.train
        self.accum = self.t.accumulation(d.world_size)
        self.weight_decay = self.t.weight_decay_schedule()
        self.ckpt_dir = run_dir / "checkpoints"
        self.sig = ckpt.signature(plan)
        torch.manual_seed(plan.seed)  # the same initial weights on every rank
        self.module = StepModule(plan.device).to(d.device)
        self.opt, self.sched = build_optimizer(self.module.trainable_modules(), self.t)
        self.start = self._restore() if resume else self._fresh()
        self.model = self._wrap()
        self.bf16 = self.t.precision == "bf16" or (self.t.precision == "auto" and d.device.type == "cuda")
        self.skipped = 0

    # ------------------------------------------------------------------ set-up
    def _fresh(self) -> int:
        if ckpt.list_checkpoints(self.ckpt_dir):
            raise ValueError(
                f"{self.run_dir} already holds checkpoints: pass --resume to continue that run, or --out to start "
                "a new one elsewhere"
            )
        return 0

    def _restore(self) -> int:
        found = ckpt.list_checkpoints(self.ckpt_dir)
        if not found:
            if self.d.main:
                print(f"--resume: no checkpoint in {self.ckpt_dir}; starting from step 0")
            return 0
        step, path = found[-1]
        state = ckpt.load(path, map_location=self.d.device)
        ckpt.check_compatible(state, self.sig, path)
        self.module.nodes.load_state_dict(state["modules"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if self.d.main:
            was = state.get("world_size")
            note = f" (written on {was} GPU(s), now {self.d.world_size})" if was != self.d.world_size else ""
            print(f"resumed from {path} at step {state['step']}{note}")
        return int(state["step"])

    def _wrap(self) -> torch.nn.Module:
        if self.d.world_size == 1:
            return self.module
        ids = [self.d.device.index] if self.d.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(
            self.module,
            device_ids=ids,
            broadcast_buffers=False,
            find_unused_parameters=self.t.find_unused_parameters,
        )

    def _loader(self) -> torch.utils.data.DataLoader:
        dataset = dataset_from_plan(self.plan, skip_bad=True)
        sampler = ResumableBatchSampler(
            len(dataset.entries),
            self.t.batch_per_device,
            self.d.rank,
            self.d.world_size,
            self.plan.seed,
            start=self.start * self.accum,
        )
        self.sampler = sampler
        w = loader_workers(self.t.workers)
        return torch.utils.data.DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=w,
            collate_fn=collate_batch,
            pin_memory=self.d.device.type == "cuda",
            persistent_workers=w > 0,
            prefetch_factor=4 if w > 0 else None,
        )

    def _write_header_files(self) -> None:
        if not self.d.main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "graph.yaml", dumps_graph(self.plan.graph))
        atomic_write_text(self.run_dir / "plan.txt", self.plan.render(scene_counts=False) + "\n")
        if self.d.device.type == "cuda":
            from pcdag.runtime.memory import memory_warning

            warning = memory_warning(self.plan, torch.cuda.get_device_properties(self.d.device).total_memory)
            if warning:
                print(warning, file=sys.stderr)

    # ------------------------------------------------------------------ the loop
    def loop(self, stop_after: int | None) -> TrainResult:
        self._write_header_files()
        log = MetricLog(self.run_dir / "metrics.jsonl", self.start if self.start else None) if self.d.main else None
        batches = iter(self._loader())
        end = self.t.steps if stop_after is None else min(self.t.steps, self.start + stop_after)
        bar = self._bar(end)
        if self.start == 0 and self.t.recalibrate_bn:
            self._recalibrate_batch_norm(batches)
        self.module.train()
        path = None
        try:
            for step in range(self.start, end):
                record = self._step(step, batches)
                if log is not None and (step % self.t.log_every == 0 or step == end - 1):
                    log.write(record)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{record['loss']:.4g}", lr=f"{record['lr']:.2e}", s=f"{record['time']:.2f}")
                if (step + 1) % self.t.checkpoint_every == 0 or step + 1 == end:
                    path = self._save(step + 1)
        finally:
            if bar is not None:
                bar.close()
            if log is not None:
                log.close()
        return self._finish(end, path)

    def _recalibrate_batch_norm(self, batches) -> None:
        """Replace the running statistics of every BatchNorm layer of the untrained modules (a probe's frozen
        backbone) by their plain average over ``recalibrate_bn`` micro-batches of the run's own data, forward
        only, everything else in eval mode (Wu & Johnson's "precise BN"). A random or briefly trained BatchNorm
        backbone otherwise normalises with statistics that do not match its activations, and its features are
        near-constant. Averaged over ranks; saved with the module, so a resumed run keeps them."""
        layers = [
            m
            for name, module in self.module.nodes.items()
            if name not in self.plan.device.trainable
            for m in module.modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        ]
        if not layers:
            return
        self.module.eval()
        kept = [layer.momentum for layer in layers]
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None  # cumulative average over the calibration batches
            layer.train()
        n = self.t.recalibrate_bn
        with torch.no_grad():
            for i in range(n):
                batch = self._next(batches).to(self.d.device, non_blocking=True)
                with torch.autocast(self.d.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    self.module(batch, self._context(0, i))  # no gradient: DDP has nothing to do
        for layer, momentum in zip(layers, kept, strict=True):
            layer.momentum = momentum
            if self.d.world_size > 1:
                for buf in (layer.running_mean, layer.running_var):
                    dist.all_reduce(buf)
                    buf /= self.d.world_size
        if self.d.main and not self.quiet:
            print(f"recalibrated {len(layers)} BatchNorm layers of the untrained modules over {n} micro-batches")

    def _bar(self, end: int):
        if not self.d.main or self.quiet:
            return None
        from tqdm import tqdm

        return tqdm(total=self.t.steps, initial=self.start, desc=f"train {self.plan.graph.name}", unit="step")

    def _step(self, step: int, batches) -> dict[str, Any]:
        t0 = time.perf_counter()
        progress = step / max(1, self.t.steps - 1)
        set_weight_decay(self.opt, self.weight_decay(progress))
        sums: dict[str, Any] = {}  # floats and 0-d device tensors
        wait, points = 0.0, 0
        ctx = None
        for micro in range(self.accum):
            tw = time.perf_counter()
            batch = self._next(batches)
            wait += time.perf_counter() - tw
            points += batch.n_points if hasattr(batch, "n_points") else 0
            ctx = self._context(step, micro)
            last = micro == self.accum - 1 or self.d.world_size == 1
            with contextlib.nullcontext() if last else self.model.no_sync():
                with torch.autocast(self.d.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    total, losses = self.model(batch.to(self.d.device, non_blocking=True), ctx)
                _check_finite(total, losses, step)
                (total / self.accum).backward()
            _accumulate(sums, total, losses, ctx.metrics, 1.0 / self.accum)
        params = [p for m in self.module.trainable_modules().values() for p in m.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, self.t.clip if self.t.clip > 0 else math.inf)
        group = self.opt.param_groups[-1]  # the base-rate group (factor 1): what this step used
        momentum = {"beta1": group["betas"][0]} if "betas" in group else {"momentum": group["momentum"]}  # AdamW | SGD
        sums.update(lr=group["lr"], weight_decay=group["weight_decay"], **momentum)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.sched.step()
        self.module.after_step(ctx)
        _accumulate(sums, None, {}, {k: v for k, v in ctx.metrics.items() if k not in sums}, 1.0)
        if self.d.device.type == "cuda":
            torch.cuda.synchronize(self.d.device)
        return self._record(step, sums, norm, wait, points, time.perf_counter() - t0)

    def _next(self, batches):
        """The next micro-batch; batches whose every scene was refused are skipped, but an epoch of nothing
        but refusals stops the run (no scene of the store suits the loader chain)."""
        for _ in range(self.sampler.micro_per_epoch + 1):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", SkippedScene)
                batch = next(batches)
            for w in caught:
                self.skipped += 1
                if self.d.main:
                    print(f"warning: {w.message}", file=sys.stderr)
                last = str(w.message)
            if batch is not None:
                return batch
        raise ValueError(f"a whole epoch of micro-batches had no usable scene; the last refusal: {last}")

    def _context(self, step: int, micro: int) -> StepContext:
        seed = step_seed(self.plan.seed, step, micro, self.d.rank)
        torch.manual_seed(seed)
        gen = torch.Generator(self.d.device).manual_seed(seed + 1)
        return StepContext(step, self.t.steps, gen, self.d.device, self.d.rank, self.d.world_size)

    def _record(self, step: int, sums: dict[str, Any], norm, wait: float, points: int, seconds: float) -> dict:
        sums = _to_floats(sums)
        record: dict[str, Any] = {"step": step, **sums}
        if self.d.world_size > 1:  # losses averaged over ranks (diagnostics stay rank 0's)
            keys = ["loss", *sorted(k for k in sums if k.startswith("loss/"))]
            t = torch.tensor([sums[k] for k in keys], device=self.d.device, dtype=torch.float64)
            dist.all_reduce(t)
            record.update({k: float(v) / self.d.world_size for k, v in zip(keys, t.tolist(), strict=True)})
        record["grad_norm"] = float(norm)
        record["time"] = round(seconds, 4)
        record["data_wait"] = round(wait, 4)
        record["points"] = points
        if self.d.device.type == "cuda":
            record["mem_gib"] = round(torch.cuda.max_memory_allocated(self.d.device) / 2**30, 3)
        return record

    def _save(self, steps_done: int) -> Path | None:
        path = None
        if self.d.main:
            state = ckpt.header(self.plan, dumps_graph(self.plan.graph), self.d.world_size)
            state.update(
                step=steps_done,
                modules=self.module.nodes.state_dict(),
                optimizer=self.opt.state_dict(),
                scheduler=self.sched.state_dict(),
            )
            path = ckpt.checkpoint_path(self.ckpt_dir, steps_done)
            ckpt.save(path, state)
            ckpt.prune(self.ckpt_dir, self.t.keep_checkpoints)
        if self.d.world_size > 1:
            dist.barrier()
        return path

    def _finish(self, end: int, path: Path | None) -> TrainResult:
        first = last = math.nan
        if self.d.main:
            records = read_metrics(self.run_dir / "metrics.jsonl")
            if records:
                write_csv(records, self.run_dir / "metrics.csv")
                plot_losses(records, self.run_dir / "loss.png", f"{self.plan.graph.name} — loss per step")
                first, last = records[0]["loss"], records[-1]["loss"]
            if not self.quiet:
                print(
                    f"trained {self.plan.graph.name}: steps {self.start}→{end} of {self.t.steps}, loss {first:.4g} → "
                    f"{last:.4g}; {self.skipped} scene(s) skipped; run directory {self.run_dir}"
                )
        return TrainResult(self.run_dir, end, first, last, path, self.skipped)


def _accumulate(sums: dict[str, Any], total, losses: dict, metrics: dict, share: float) -> None:
    """Average over micro-batches: the total, each weighted term (``loss/NODE``), each node's diagnostics."""
    items: dict[str, Any] = {}
    if total is not None:
        items["loss"] = total
    for name, loss in losses.items():
        items[f"loss/{name}"] = loss.weight * loss.value
        items[f"{name}/weight"] = loss.weight
        for k, v in loss.terms.items():
            items[f"{name}/{k}"] = v
    items.update(metrics)
    for k, v in items.items():  # tensors stay on the device: read once per step, in ``_to_floats``
        value = v.detach().float() if isinstance(v, torch.Tensor) else float(v)
        sums[k] = sums.get(k, 0.0) + value * share


def _to_floats(sums: dict[str, Any]) -> dict[str, float]:
    """The step's sums as Python floats, with one device-to-host copy for all tensor-valued ones."""
    keys = [k for k, v in sums.items() if isinstance(v, torch.Tensor)]
    read = torch.stack([sums[k].reshape(()) for k in keys]).tolist() if keys else []
    values = dict(zip(keys, read, strict=True))
    return {k: values[k] if k in values else float(v) for k, v in sums.items()}  # the order the step logged them


def _check_finite(total: torch.Tensor, losses: dict, step: int) -> None:
    if torch.isfinite(total.detach()).item():
        return
    bad = [f"{n} = {float(v.value.detach())}" for n, v in losses.items() if not torch.isfinite(v.value.detach()).item()]
    raise FloatingPointError(
        f"step {step}: the loss is {float(total.detach())}; non-finite term(s): {', '.join(bad) or 'none alone'}. "
        "Lower the learning rate or check the inputs of those nodes; the last checkpoint is intact (--resume)."
    )
