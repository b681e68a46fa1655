"""The device, source, run-node and evaluator contracts catch breaches: deliberately broken nodes, never
registered (they would join the contract tests of every registered node type)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
import torch

from pcdag.graphs.backbone import BackboneNode
from pcdag.graphs.device import DeviceNode, LossValue, StepContext
from pcdag.graphs.evaluation import EvalContext, EvalResult, Evaluator
from pcdag.graphs.memory import NodeMemory
from pcdag.graphs.node import In, Node, Out, SceneRef, SceneSource
from pcdag.graphs.ports import FEATURES, LOSS, MODEL, MULTI_VIEW_BATCH, POINT_CLOUD
from pcdag.testing import ContractError
from pcdag.testing import shape_examples as shapes
from pcdag.testing.device_contract import DeviceExample, check_device_node
from pcdag.testing.eval_contract import check_evaluator
from pcdag.testing.examples import features, views
from pcdag.testing.shape_contract import check_run_node, check_source

# ----------------------------------------------------------------------------------------------- device nodes


class Linear(DeviceNode):
    """A correct trainable head: Linear(4 -> 2) on the features."""

    inputs = {"features": In(FEATURES)}
    outputs = {"loss": Out(LOSS)}

    def build(self, inputs: Any) -> torch.nn.Module:
        return torch.nn.Linear(4, 2)

    def forward(self, ctx: StepContext, module: Any, **inputs: Any) -> dict[str, Any]:
        return {"loss": LossValue(module(inputs["features"].feat).square().mean(), 1.0)}


class NoisyLinear(Linear):
    def forward(self, ctx: StepContext, module: Any, **inputs: Any) -> dict[str, Any]:
        seeded = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
        noise = torch.rand((), generator=seeded)  # randomness that neither ctx nor the global RNG controls
        return {"loss": LossValue(module(inputs["features"].feat).square().mean() + noise, 1.0)}


class InPlace(Linear):
    def forward(self, ctx: StepContext, module: Any, **inputs: Any) -> dict[str, Any]:
        inputs["features"].coord.mul_(2.0)
        return super().forward(ctx, module, **inputs)


class PerPointLoss(Linear):
    def forward(self, ctx: StepContext, module: Any, **inputs: Any) -> dict[str, Any]:
        return {"loss": LossValue(module(inputs["features"].feat).square().mean(1), 1.0)}


class NaNLoss(Linear):
    def forward(self, ctx: StepContext, module: Any, **inputs: Any) -> dict[str, Any]:
        return {"loss": LossValue(module(inputs["features"].feat).mean() * float("nan"), 1.0)}


class NoLossPort(Linear):
    def forward(self, ctx: StepContext, module: Any, **inputs: Any) -> dict[str, Any]:
        return {}


class Detached(Linear):
    def forward(self, ctx: StepContext, module: Any, **inputs: Any) -> dict[str, Any]:
        return {"loss": LossValue(module(inputs["features"].feat).detach().square().mean(), 1.0)}


class UnsavedState(Linear):
    """Keeps a random scale in a plain attribute: not in the state_dict, so a checkpoint loses it."""

    def build(self, inputs: Any) -> torch.nn.Module:
        module = torch.nn.Linear(4, 2)
        module.scale = torch.rand(())
        return module

    def forward(self, ctx: StepContext, module: Any, **inputs: Any) -> dict[str, Any]:
        return {"loss": LossValue((module(inputs["features"].feat) * module.scale).square().mean(), 1.0)}


class NegativeMemory(Linear):
    def memory(self, module: Any, inputs: Any) -> NodeMemory:
        return NodeMemory(saved=-1.0)


class SharingTeacher(DeviceNode):
    """A 'teacher' that is its student: no copy, so freezing it freezes the student."""

    trainable = False
    inputs = {"model": In(MODEL)}
    outputs = {"model": Out(MODEL)}

    def build(self, inputs: Any) -> torch.nn.Module:
        return inputs["model"]

    def forward(self, ctx: StepContext, module: Any, **inputs: Any) -> dict[str, Any]:
        return {"model": module}


class ThawsTeacher(DeviceNode):
    """A loss that re-enables gradients of the frozen teacher head it is given."""

    trainable = False
    inputs = {"head": In(MODEL), "features": In(FEATURES)}
    outputs = {"loss": Out(LOSS)}

    def forward(self, ctx: StepContext, module: Any, **inputs: Any) -> dict[str, Any]:
        head = inputs["head"].requires_grad_(True)
        return {"loss": LossValue(head(inputs["features"].feat).square().mean(), 1.0)}


def _features_example() -> DeviceExample:
    return DeviceExample({"features": features(views(n_local=0).global_views, 4, 0)})


def test_device_contract_accepts_a_correct_node() -> None:
    check_device_node(Linear(), _features_example())


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (NoisyLinear(), "eval-mode forwards seeded alike differ"),
        (InPlace(), "changed its inputs in place"),
        (PerPointLoss(), "must be a scalar tensor"),
        (NaNLoss(), "is not finite"),
        (NoLossPort(), "must return every declared output"),
        (Detached(), "got no gradient"),
        (UnsavedState(), "fresh build loaded with the module's state_dict gives other outputs"),
        (NegativeMemory(), "memory\\(\\).saved = -1.0"),
    ],
)
def test_device_contract_catches_breaches(node: DeviceNode, message: str) -> None:
    with pytest.raises(ContractError, match=message) as info:
        check_device_node(node, _features_example())
    assert node.type_name() in str(info.value)


def test_device_contract_catches_shared_and_thawed_teachers() -> None:
    student = torch.nn.Linear(4, 4)
    probe = lambda out: out["model"](torch.ones(2, 4)).sum()  # noqa: E731
    with pytest.raises(ContractError, match="shares parameters with the module on port 'model'"):
        check_device_node(SharingTeacher(), DeviceExample({"model": student}, probe=probe))
    example = DeviceExample({"head": torch.nn.Linear(4, 3), "features": _features_example().inputs["features"]})
    example.frozen = frozenset({"head"})
    with pytest.raises(ContractError, match="gradients reach the non-trainable module on head"):
        check_device_node(ThawsTeacher(), example)


# ----------------------------------------------------------------------------------------------- sources


class ReadingSource(SceneSource):
    """Lists scenes by reading a file: what ``scenes()`` must never do."""

    @attrs.frozen
    class Params:
        root: str = "."
        splits: list = ["train"]  # noqa: RUF012

    def scenes(self) -> list[SceneRef]:
        n = len(Path(self.params.root, "list.txt").read_text().split())
        return [SceneRef(f"s{i}", "train", f"s{i}") for i in range(n)]


class DriftingSource(ReadingSource):
    """Lists without reading, but every load differs and it provides less than it says."""

    def scenes(self) -> list[SceneRef]:
        return [SceneRef("s0", "train", "s0")]

    def load(self, ref: SceneRef) -> Any:
        return shapes.rooms(1, 200)[0].select(np.random.default_rng().permutation(200))

    def provides(self) -> frozenset[str]:
        return frozenset({"coord", "color", "normal", "segment", "instance"})


def test_source_contract_catches_breaches(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("a b")
    with pytest.raises(ContractError, match="scenes\\(\\) opened .*list.txt for reading"):
        check_source(ReadingSource(root=str(tmp_path)))
    drifting = DriftingSource(root=str(tmp_path))
    with pytest.raises(ContractError, match="meta .* does not carry its ref"):
        check_source(drifting)
    drifting.load = lambda ref: _with_meta(shapes.rooms(1, 200)[0], ref)  # type: ignore[method-assign]
    check_source(drifting)
    with pytest.raises(ContractError, match="a root that does not exist"):
        check_source(drifting, missing_root=tmp_path / "nowhere")


def _with_meta(cloud: Any, ref: SceneRef) -> Any:
    cloud.meta.update(scene=ref.id, split=ref.split, room=ref.room)
    return cloud


# ----------------------------------------------------------------------------------------------- run nodes


class Shuffler(Node):
    inputs = {"cloud": In(POINT_CLOUD)}
    outputs = {"cloud": Out(POINT_CLOUD)}

    def run(self, rng: np.random.Generator, **inputs: Any) -> dict[str, Any]:
        cloud = inputs["cloud"]
        return {"cloud": cloud.select(np.random.default_rng().permutation(len(cloud)))}


class WrongType(Shuffler):
    outputs = {"views": Out(MULTI_VIEW_BATCH)}

    def run(self, rng: np.random.Generator, **inputs: Any) -> dict[str, Any]:
        return {"views": inputs["cloud"]}


@pytest.mark.parametrize(
    ("node", "message"),
    [(Shuffler(), "two runs with one seed differ"), (WrongType(), "ViewSample")],
)
def test_run_node_contract_catches_breaches(node: Node, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        check_run_node(node, {"cloud": shapes.rooms(1, 200)[0]})


# ----------------------------------------------------------------------------------------------- evaluators


class Counting(Evaluator):
    """Scores the share of scenes whose first predicted value is positive; ``how`` breaks it on purpose."""

    inputs = {"logits": In(FEATURES)}

    @attrs.frozen
    class Params:
        how: str = "right"

    def evaluate(self, ctx: EvalContext) -> EvalResult:
        good = [float(ctx.predict(ctx.make_sample(c))["logits"].feat[0, 0] > 0) for _, c in ctx.scenes()]
        score = sum(good) / len(good)
        if self.params.how == "outside":
            (ctx.out.parent / "stray.txt").write_text("x")
        if self.params.how == "nan":
            score = float("nan")
        return EvalResult({"score": score}, "| score |", ())


def test_evaluator_contract_catches_breaches(tmp_path: Path) -> None:
    from pcdag.testing.eval_contract import EvalExample
    from pcdag.testing.shape_examples import _encoded

    scenes = [(c.meta["scene"], c) for c in shapes.rooms(2, 200)]
    answer = lambda value: lambda sample: {"logits": _encoded(np.full((3, 1), value))}  # noqa: E731
    example = EvalExample(scenes, answer(1.0), answer(-1.0), "score", 1.0)
    for how, message in (("right", None), ("outside", "outside ctx.out"), ("nan", "not JSON without NaN")):
        root = tmp_path / how
        root.mkdir()
        if message is None:
            assert json.dumps(check_evaluator(Counting(how=how), example, root)) == '{"score": 1.0}'
            continue
        with pytest.raises(ContractError, match=message):
            check_evaluator(Counting(how=how), example, root)
    lenient = EvalExample(scenes, answer(-1.0), answer(-1.0), "score", 1.0)
    (tmp_path / "lenient").mkdir()
    with pytest.raises(ContractError, match="score = 0.0 for exact predictions"):
        check_evaluator(Counting(), lenient, tmp_path / "lenient")


# ----------------------------------------------------------------------------------------------- any backbone


class MLPBackbone(BackboneNode):
    """A minimal ``BackboneNode``: what the maker of any backbone (``SparseUNet`` too) relies on."""

    @attrs.frozen
    class Params:
        preset: str = "tiny"
        in_channels: int = 6
        weights: str | None = None
        frozen: bool = False

    def build_module(self) -> torch.nn.Module:
        return ToyMLPOn(self.params.in_channels)


class ToyMLPOn(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.net, self.out_channels = torch.nn.Linear(width, 5), 5

    def forward(self, points: Any) -> Any:
        from pcdag.graphs.batch import Encoded

        return Encoded(self.net(points.feat), points.coord, points.origin_coord, points.offset)


def test_any_backbone_node_gets_examples_trained_and_frozen() -> None:
    from pcdag.graphs import registry
    from pcdag.testing.examples import backbone_examples

    with registry.registered(MLPBackbone):
        examples = backbone_examples("MLPBackbone")
        assert [ex.label for _, ex in examples] == ["", "frozen"]
        for node, example in examples:
            check_device_node(node, example)
