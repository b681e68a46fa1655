"""The training step's memory estimate (issue 6, item 3): static part exact, activations linear in the scenes,
checkpointing modelled, unmodelled nodes named, the encoder model close to what autograd actually keeps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pcdag.cli import _load
from pcdag.compiler import compile_graph
from pcdag.graphs.batch import PointBatch
from pcdag.nodes.backbones.ptv3.memory import encoder_memory
from pcdag.nodes.backbones.ptv3.model import PointTransformerV3Module, PTv3Config
from pcdag.runtime.memory import CALIBRATION, estimate_memory, memory_warning
from pcdag.runtime.step import StepModule
from pcdag.testing.autograd import saved_bytes

ROOT = Path(__file__).resolve().parents[1]


def lam3c(preset: str = "base", *sets: str):
    plan = compile_graph(_load(ROOT / "graphs" / "lam3c.yaml", list(sets), preset))
    return plan, plan.node(plan.device.entry[0])


def test_activations_grow_linearly_with_scenes_and_static_part_does_not() -> None:
    plan, entry = lam3c()
    two, four = (estimate_memory(plan.device, entry, s, 45_000) for s in (2, 4))
    assert four.static == two.static
    assert four.activations == pytest.approx(2 * two.activations, rel=1e-9)
    assert four.view_points == pytest.approx(2 * two.view_points)
    assert two.peak == pytest.approx(two.static + CALIBRATION * two.activations)
    assert not two.unmodelled
    # the teacher's forwards keep only their outputs; the student's keep far more
    assert two.saved["student_masked"] > 10 * two.saved["teacher_global"]


def test_static_part_counts_weights_gradients_and_adamw_exactly() -> None:
    plan, entry = lam3c("tiny")
    estimate = estimate_memory(plan.device, entry, 2, 10_000)
    module = StepModule(plan.device)  # real weights on the CPU
    expected = 0
    for name, sub in module.nodes.items():
        n = sum(p.numel() for p in sub.parameters())
        expected += n * (16 if name in plan.device.trainable else 4)
    assert estimate.static == expected


@pytest.mark.parametrize(
    ("sets", "state", "name"),
    [
        ((), 8, "AdamW"),
        (("settings.train.optimizer=sgd", "settings.train.momentum=0.8"), 4, "SGD momentum"),
        (("settings.train.optimizer=sgd", "settings.train.momentum=0"), 0, "SGD"),
    ],
)
def test_static_part_counts_the_chosen_optimisers_state(sets: tuple[str, ...], state: int, name: str) -> None:
    plan, entry = lam3c("tiny", *sets)
    estimate = estimate_memory(plan.device, entry, 2, 10_000, plan.train)
    module = StepModule(plan.device)
    expected = 0
    for node, sub in module.nodes.items():
        n = sum(p.numel() for p in sub.parameters())
        expected += n * (8 + state if node in plan.device.trainable else 4)
    assert estimate.static == expected
    assert f"(weights, gradients, {name})" in estimate.lines()[0]


def test_checkpointing_cuts_the_students_activations_only() -> None:
    plan, entry = lam3c()
    plain = estimate_memory(plan.device, entry, 2, 45_000)
    plan_cp, entry_cp = lam3c("base", "student.checkpoint=true")
    cp = estimate_memory(plan_cp.device, entry_cp, 2, 45_000)
    assert cp.saved["student_masked"] < plain.saved["student_masked"] / 3
    assert cp.saved["teacher_global"] == plain.saved["teacher_global"]
    assert cp.saved["mask"] == plain.saved["mask"]
    assert cp.max_scenes(78 * 2**30) > plain.max_scenes(78 * 2**30)


def test_checkpointed_heads_keep_less_per_pair() -> None:
    plan, entry = lam3c()
    plain = estimate_memory(plan.device, entry, 2, 45_000)
    sets = ("mask_head.checkpoint=true", "unmask_head.checkpoint=true")
    plan_cp, entry_cp = lam3c("base", *sets)
    cp = estimate_memory(plan_cp.device, entry_cp, 2, 45_000)
    for loss in ("mask", "roll", "unmask"):
        assert cp.saved[loss] < 0.8 * plain.saved[loss]
    assert cp.saved["student_masked"] == plain.saved["student_masked"]


def test_most_scenes_that_fit_is_the_boundary() -> None:
    plan, entry = lam3c()
    estimate = estimate_memory(plan.device, entry, 2, 45_000)
    capacity = 40 * 2**30
    k = estimate.max_scenes(capacity)
    at = (estimate_memory(plan.device, entry, s, 45_000).peak for s in (k, k + 1))
    assert next(at) <= capacity < next(at)
    assert estimate.max_scenes(estimate.static) == 0


def test_training_warns_when_the_batch_will_not_fit() -> None:
    plan, _ = lam3c("base", "store.path=/nonexistent")  # no store: 100,000-point scenes assumed
    assert memory_warning(plan, 200 * 2**30) is None
    text = memory_warning(plan, 30 * 2**30)
    assert text is not None and "more than this GPU's 30.0 GiB" in text
    assert "settings.train.batch_per_device=1 is estimated to fit" in text
    assert "no batch is estimated to fit" in memory_warning(plan, 3 * 2**30)


def test_nodes_without_a_model_are_named_not_counted(tmp_path: Path) -> None:
    plan = compile_graph(_load(ROOT / "graphs" / "eval" / "scannet-lp.yaml", [], "tiny"))
    estimate = estimate_memory(plan.device, plan.node(plan.device.entry[0]), 1, 20_000)
    assert estimate.unmodelled  # the segmentation head and loss have no memory model
    assert all(estimate.saved[name] == 0 for name in estimate.unmodelled)
    text = "\n".join(estimate.lines())
    assert "not modelled (not counted)" in text and estimate.unmodelled[0] in text
    assert "at most, as the nodes above are not counted" in text


def _level_ratios(grid: np.ndarray) -> list[float]:
    counts = [len(np.unique(grid // 2**s, axis=0)) for s in range(5)]
    return [c / counts[0] for c in counts]


def _surface_cloud(n: int = 6000) -> tuple[PointBatch, np.ndarray]:
    """Points on the walls of a 3 m box, one per 0.02 m voxel, and their voxel grid."""
    rng = np.random.default_rng(0)
    xyz = rng.random((n, 3)) * 3.0
    xyz[np.arange(n), rng.integers(0, 3, n)] = rng.integers(0, 2, n) * 3.0
    grid = np.unique(np.floor(xyz / 0.02).astype(np.int64), axis=0)  # [M, 3]
    coord = torch.from_numpy(grid * 0.02 + 0.01).float()
    return PointBatch(coord, torch.randn(len(coord), 9), torch.tensor([len(coord)])), grid


def _kept_by_autograd(checkpoint: bool) -> tuple[int, float]:
    """(bytes of saved tensors beyond the bf16 weight copies, modelled bytes) of one tiny-preset forward."""
    batch, grid = _surface_cloud()
    config = PTv3Config.preset("tiny", backend="torch", drop_path=0.0, checkpoint=checkpoint)
    module = PointTransformerV3Module(config).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, measured = saved_bytes(lambda: module(batch))
    weights = sum(p.numel() * 2 for p in module.parameters())  # bf16 copies autocast saves
    modelled, _, _ = encoder_memory(config, len(grid), True, _level_ratios(grid))
    return measured - weights, modelled.saved


def test_encoder_model_is_close_to_what_autograd_keeps() -> None:
    """On a surface-like cloud under bf16 autocast the modelled bytes kept for the backward are within 20 % of
    what autograd's saved tensors hold (the torch sparse-conv backend, as on the CPU)."""
    measured, modelled = _kept_by_autograd(checkpoint=False)
    assert measured == pytest.approx(modelled, rel=0.2)


def test_checkpointing_keeps_much_less_and_the_model_says_so() -> None:
    """The hooks cannot see the block inputs the checkpoint frames hold (4·C bytes a point per block), so only
    the drop is compared: both the measured and the modelled bytes fall by more than 3×."""
    plain, plain_model = _kept_by_autograd(checkpoint=False)
    cp, cp_model = _kept_by_autograd(checkpoint=True)
    assert cp < plain / 3 and cp_model < plain_model / 3


def test_plan_prints_the_estimate() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pcdag.cli",
            "plan",
            str(ROOT / "graphs" / "lam3c.yaml"),
            "--preset",
            "tiny",
            "--no-picture",
            "--scenes",
            "3",
            "--scene-points",
            "20000",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    assert "memory (estimate, bf16):" in out and "3 scene(s) per GPU" in out
    assert "fits an H100 (78 GiB): up to" in out
