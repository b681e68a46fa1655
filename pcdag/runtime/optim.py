"""The optimiser of the training step: AdamW (or SGD, ``settings.train.optimizer``) over the trainable modules
with layer-wise learning-rate decay, a OneCycle learning-rate schedule (cosine warm-up from ``lr / div_factor``
to ``lr`` over ``pct_start`` of the steps, then cosine decay; AdamW's β1 cycled with it, SGD's momentum fixed),
and a weight-decay schedule.

Layer-wise decay: a module may say which layer each parameter belongs to (``layer_ids()``, e.g. the
encoder blocks of a transformer); a parameter of layer ``i`` of ``n`` gets ``lr · decay^(n − 1 − i)`` (the last
block the base rate), every other parameter (stem, pooling, heads) the base rate. A module may also scale
the rate of some parameters (``lr_scales()``, e.g. fine-tuning's 10x lower rate for a backbone's blocks).
Parameters with equal factors share a group.
"""

from __future__ import annotations

import torch

from pcdag.compiler.training import TrainSettings


def param_groups(modules: dict[str, torch.nn.Module], settings: TrainSettings) -> list[dict]:
    """AdamW parameter groups: one per learning-rate factor, each naming its parameters (``names``)."""
    groups: dict[float, dict] = {}
    for node, module in modules.items():
        layers = module.layer_ids() if hasattr(module, "layer_ids") else {}
        scales = module.lr_scales() if hasattr(module, "lr_scales") else {}
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            scale = 1.0
            if name in layers:
                i, n = layers[name]
                scale = settings.layer_decay ** (n - 1 - i)
            scale *= scales.get(name, 1.0)
            g = groups.setdefault(scale, {"params": [], "names": [], "lr_scale": scale})
            g["params"].append(p)
            g["names"].append(f"{node}.{name}")
    if not groups:
        raise ValueError("no trainable parameters: the device stage's trainable modules have none")
    return [groups[k] for k in sorted(groups)]


def build_optimizer(
    modules: dict[str, torch.nn.Module], settings: TrainSettings
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.OneCycleLR]:
    groups = param_groups(modules, settings)
    wd0 = settings.weight_decay_schedule()(0.0)
    for g in groups:
        g["lr"] = settings.lr * g["lr_scale"]
        g["weight_decay"] = wd0
    plain = [{k: v for k, v in g.items() if k != "names"} for g in groups]
    fused = all(p.is_cuda for g in groups for p in g["params"]) or None  # one kernel per step on a GPU
    if settings.optimizer == "sgd":
        opt = torch.optim.SGD(
            plain, lr=settings.lr, momentum=settings.momentum, nesterov=settings.nesterov, fused=fused
        )  # fmt: skip
    else:
        opt = torch.optim.AdamW(plain, lr=settings.lr, betas=tuple(settings.betas), fused=fused)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=[settings.lr * g["lr_scale"] for g in groups],
        total_steps=settings.steps,
        pct_start=settings.pct_start,
        anneal_strategy="cos",
        div_factor=settings.div_factor,
        final_div_factor=settings.final_div_factor,
        cycle_momentum=settings.optimizer == "adamw",
        base_momentum=settings.cycle_momentum[0],
        max_momentum=settings.cycle_momentum[1],
    )
    return opt, sched


def set_weight_decay(opt: torch.optim.Optimizer, value: float) -> None:
    for g in opt.param_groups:
        g["weight_decay"] = value
