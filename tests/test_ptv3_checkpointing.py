"""Activation checkpointing of the Point Transformer V3 blocks (``PTv3Config.checkpoint``): the same numbers as
the plain path, fewer bytes saved for backward, no recompute where nothing is trained, and the node parameter."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.utils.checkpoint

from pcdag.graphs import registry
from pcdag.graphs.batch import PointBatch
from pcdag.graphs.params import ParamError
from pcdag.nodes.backbones.ptv3.model import PointTransformerV3Module, PTv3Config
from pcdag.runtime import checkpoint as ckpt
from pcdag.testing.autograd import saved_bytes


def room_points(counts: list[int], seed: int, extent: float = 1.5) -> PointBatch:
    """Points on the walls of a box (surfaces, as scans are), one sample per entry of ``counts``."""
    g = torch.Generator().manual_seed(seed)
    coord = torch.rand(sum(counts), 3, generator=g) * extent  # [N, 3]
    wall = torch.randint(0, 3, (len(coord),), generator=g)  # [N] the axis each point is flattened on
    coord[torch.arange(len(coord)), wall] = torch.randint(0, 2, (len(coord),), generator=g).float() * extent
    feat = torch.randn(len(coord), 9, generator=g)  # [N, 9]
    return PointBatch(coord=coord, feat=feat, offset=torch.cumsum(torch.tensor(counts), 0))


def build(checkpoint: bool, **overrides) -> PointTransformerV3Module:
    torch.manual_seed(0)  # the same initial weights whatever ``checkpoint`` is
    return PointTransformerV3Module(PTv3Config.preset("tiny", checkpoint=checkpoint, **overrides))


def train_step(module: PointTransformerV3Module, points) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
    """Loss, saved bytes and the gradient of every parameter of one forward + backward in train mode."""
    module.train()
    torch.manual_seed(3)  # shuffled orders and drop path draw from here
    feat, n_bytes = saved_bytes(lambda: module(points).feat)
    loss = feat.square().mean()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}
    return loss.detach(), n_bytes, grads


@pytest.fixture(scope="module")
def points():
    return room_points([300, 200], seed=4)


@pytest.fixture(scope="module", params=["encoder", "encoder-decoder"])
def runs(request, points) -> dict[bool, tuple]:
    """One training step with checkpointing off and on, drop path high (its random rows must be replayed)."""
    return {on: train_step(build(on, mode=request.param, drop_path=0.5), points) for on in (False, True)}


# -------------------------------------------------------------------------------------------- same numbers


def test_checkpointing_keeps_loss_and_every_gradient(runs) -> None:
    (loss_off, _, grads_off), (loss_on, _, grads_on) = runs[False], runs[True]
    assert torch.allclose(loss_on, loss_off, rtol=1e-6, atol=0)
    assert grads_on.keys() == grads_off.keys() and len(grads_off) > 50
    for name, g in grads_off.items():
        assert torch.allclose(grads_on[name], g, rtol=1e-5, atol=1e-6), name
    assert any(bool(g.abs().sum() > 0) for g in grads_on.values())


def test_gradients_differ_when_the_recompute_draws_new_drop_path_rows(points, monkeypatch) -> None:
    """Guards the test above: it can fail. Recomputing without the saved RNG state (new drop path rows in
    backward) gives other gradients."""
    _, _, grads_off = train_step(build(False, drop_path=0.5), points)
    real = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", lambda *a, **kw: real(*a, **kw, preserve_rng_state=False))
    _, _, grads = train_step(build(True, drop_path=0.5), points)
    assert not all(torch.allclose(grads[name], g, rtol=1e-5, atol=1e-6) for name, g in grads_off.items())


# ------------------------------------------------------------------------------------------------ memory


def test_checkpointing_saves_far_fewer_bytes_for_backward(runs) -> None:
    off, on = runs[False][1], runs[True][1]
    # measured on the tiny preset: on / off = 0.13 (encoder), 0.15 (encoder-decoder); 1.0 when not applied
    assert on < 0.35 * off, (on, off)


def test_every_block_is_checkpointed_in_training(points, monkeypatch) -> None:
    calls = []
    real = torch.utils.checkpoint.checkpoint

    def counting(fn, *args, **kwargs):
        calls.append(fn)
        assert kwargs.get("use_reentrant") is False
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    module = build(True, mode="encoder-decoder").train()
    module(points).feat.sum().backward()
    blocks = [b for stage in [*module.stages, *module.decoder] for b in stage.blocks]
    assert len(calls) == len(blocks) and {id(f) for f in calls} == {id(b) for b in blocks}


# ----------------------------------------------------------------------------- plain where nothing is trained


@pytest.mark.parametrize("train", [True, False])
def test_no_recompute_under_no_grad_or_in_eval(points, monkeypatch, train: bool) -> None:
    """The EMA teacher's passes (no_grad) and evaluation (eval) run the blocks plainly: the same output, bit
    for bit, and ``torch.utils.checkpoint`` is never called."""
    plain, checkpointed = build(False, drop_path=0.5).train(train), build(True, drop_path=0.5).train(train)

    def refuse(*args, **kwargs):
        raise AssertionError("torch.utils.checkpoint.checkpoint called without grad or in eval mode")

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", refuse)
    outputs = []
    for module in (plain, checkpointed):
        torch.manual_seed(7)
        with torch.no_grad():
            outputs.append(module(points).feat)
    assert torch.equal(outputs[0], outputs[1])
    if not train:  # eval with grad enabled (a fine-tuning validation pass without no_grad): still plain
        torch.manual_seed(7)
        assert torch.equal(checkpointed(points).feat.detach(), outputs[0])


# ------------------------------------------------------------------------------------------- node and config


def test_node_parameter_is_validated_and_passed_to_the_config() -> None:
    cls = registry.get("PointTransformerV3")
    assert cls(preset="tiny").config.checkpoint is False
    node = cls(preset="tiny", checkpoint=True, enc_channels=[16, 32, 48, 64, 96])
    assert node.config.checkpoint is True and node.config.enc_channels == (16, 32, 48, 64, 96)
    module = node.build({})
    assert all(stage.checkpoint for stage in module.stages)
    assert any("checkpointing" in note for note in node.plan_notes())
    for bad in ("yes", 2, None):
        with pytest.raises(ParamError, match="checkpoint"):
            cls(preset="tiny", checkpoint=bad)


def test_checkpointing_is_not_part_of_the_architecture() -> None:
    """A checkpoint trained with it on loads with it off and back: the state dicts have the same keys and
    shapes, the configs compare equal, and the training-checkpoint signature leaves the parameter out."""
    on, off = build(True, mode="encoder-decoder"), build(False, mode="encoder-decoder")
    assert on.config == off.config and on.config.checkpoint != off.config.checkpoint
    off.load_state_dict(on.state_dict(), strict=True)
    on.load_state_dict(off.state_dict(), strict=True)
    cls = registry.get("PointTransformerV3")
    signatures = []
    for value in (True, False):
        node = cls(preset="tiny", checkpoint=value)
        plan = SimpleNamespace(
            bound={"student": SimpleNamespace(node=node, decl=SimpleNamespace(type="PointTransformerV3"))},
            train=None,
            seed=0,
        )
        signatures.append(ckpt.signature(plan))
    assert signatures[0] == signatures[1] and "checkpoint" not in signatures[0]["student"]["params"]
    assert "preset" in signatures[0]["student"]["params"]
