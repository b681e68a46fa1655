"""Toy nodes for testing the trainer on its own: a one-view loader node, a point-wise MLP backbone and a
regression loss. They are small on purpose (a training step takes milliseconds) and registered only inside
``registry.registered(*TOY_NODES)``, never in user graphs.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import torch

from pcdag.graphs.batch import Encoded, PointBatch, ViewSample
from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.graphs.device import DeviceNode, LossValue, StepContext
from pcdag.graphs.node import In, Node, Out
from pcdag.graphs.params import in_range, integer, one_of, param
from pcdag.graphs.ports import FEATURES, LOSS, MODEL, MULTI_VIEW_BATCH, POINT_CLOUD, Placement
from pcdag.graphs.schedule import Schedule, schedule


class ToyViews(Node):
    """One global view per scene: a random subset of ``points`` points, features = coordinates."""

    role = "views"
    placements = (Placement.LOADER,)
    per_item = True
    inputs = {"cloud": In(POINT_CLOUD)}
    outputs = {"views": Out(MULTI_VIEW_BATCH)}

    @attrs.frozen
    class Params:
        points: int = param(64, integer(1, None))

    def run(self, rng: np.random.Generator, **inputs: Any) -> dict[str, Any]:
        cloud: PointCloud = inputs["cloud"]
        if len(cloud) < self.params.points:
            raise CloudError(f"ToyViews: {len(cloud)} points, a view needs {self.params.points}")
        keep = rng.choice(len(cloud), self.params.points, replace=False)
        coord = cloud["coord"][keep].astype(np.float32)  # [n, 3]
        coord = coord - coord.mean(0)
        view = {"coord": coord, "origin_coord": coord.copy(), "feat": coord.copy()}
        return {"views": ViewSample("", [view], [])}


class ToyMLP(torch.nn.Module):
    def __init__(self, width: int, batch_norm: bool = False) -> None:
        super().__init__()
        norm = [torch.nn.BatchNorm1d(width, momentum=0.01)] if batch_norm else []
        self.net = torch.nn.Sequential(torch.nn.Linear(3, width), *norm, torch.nn.GELU(), torch.nn.Linear(width, 3))
        self.out_channels = 3

    def forward(self, points: PointBatch) -> Encoded:
        return Encoded(self.net(points.feat), points.coord, points.origin_coord, points.offset)

    def layer_ids(self) -> dict[str, tuple[int, int]]:
        last = str(len(self.net) - 1)
        return {name: (1 if name.split(".")[1] == last else 0, 2) for name, _ in self.named_parameters()}


class ToyBackbone(DeviceNode):
    """A point-wise MLP 3 → width → 3 (a BatchNorm after the first layer with ``batch_norm``; not trained with
    ``frozen``)."""

    role = "backbones"
    outputs = {"model": Out(MODEL)}

    @attrs.frozen
    class Params:
        width: int = param(16, integer(1, None))
        batch_norm: bool = param(False, one_of(False, True))
        frozen: bool = param(False, one_of(False, True))

    @property
    def trainable(self) -> bool:  # type: ignore[override]
        return not self.params.frozen

    def build(self, inputs: Any) -> torch.nn.Module:
        return ToyMLP(self.params.width, self.params.batch_norm)

    def forward(self, ctx: StepContext, module: torch.nn.Module | None, **inputs: Any) -> dict[str, Any]:
        return {"model": module}


class ToyLoss(DeviceNode):
    """Mean squared error between the features and a fixed map of the coordinates (learnable), plus a little
    noise from ``ctx.generator`` so that device randomness is exercised."""

    role = "losses"
    inputs = {"features": In(FEATURES)}
    outputs = {"loss": Out(LOSS)}

    @attrs.frozen
    class Params:
        weight: Any = param(1.0, schedule(0.0, None))
        noise: float = param(0.01, in_range(0.0, None))
        nan_at_step: int = param(-1, integer(-1, None), doc="make the loss NaN at this step (tests)")

    def __post_init__(self) -> None:
        self.weight = Schedule.parse(self.params.weight)

    def forward(self, ctx: StepContext, module: torch.nn.Module | None, **inputs: Any) -> dict[str, Any]:
        f: Encoded = inputs["features"]
        target = torch.stack([f.coord[:, 1], -f.coord[:, 0], 0.5 * f.coord[:, 2]], 1)  # [N, 3]
        noise = torch.randn(target.shape, generator=ctx.generator, device=target.device) * self.params.noise
        value = ((f.feat.float() - target - noise) ** 2).mean()
        if ctx.step == self.params.nan_at_step:
            value = value * float("nan")
        ctx.log("points", float(len(f)))
        return {"loss": LossValue(value, self.weight(ctx.progress))}


TOY_NODES = (ToyViews, ToyBackbone, ToyLoss)

TOY_GRAPH = """
pcdag: 1
name: toy
settings:
  seed: 5
  train: {steps: 12, global_batch: 4, batch_per_device: 2, lr: 0.01, checkpoint_every: 4, workers: 0,
          out: OUT}
nodes:
  store: {type: Store, params: {path: STORE, splits: [train]}}
  views: {type: ToyViews, params: {points: 64}, inputs: {cloud: store}}
  net: {type: ToyBackbone}
  teacher: {type: EMATeacher, inputs: {model: net}}
  encode: {type: Encode, inputs: {model: net, views: views}}
  encode_t: {type: Encode, inputs: {model: teacher, views: views}}
  fit: {type: ToyLoss, inputs: {features: encode}}
  fit_t: {type: ToyLoss, params: {weight: 0.0}, inputs: {features: encode_t}}
"""
