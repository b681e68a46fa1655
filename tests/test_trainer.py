"""The trainer on toy nodes (a point-wise MLP and a regression loss): resume, DDP, accumulation, checkpoints,
non-finite losses, schedules, EMA, the sampler and layer-wise learning-rate decay. No method logic involved."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pcdag.cli import main
from pcdag.compiler import compile_graph
from pcdag.compiler.training import TrainSettings
from pcdag.graphs import GraphError, loads_graph, registry
from pcdag.graphs.overrides import apply_overrides, apply_preset
from pcdag.graphs.params import ParamError
from pcdag.graphs.schedule import Schedule
from pcdag.graphs.yamlio import dumps_graph
from pcdag.nodes.teacher.ema import ema_update
from pcdag.runtime import checkpoint as ckpt
from pcdag.runtime.checkpoint import list_checkpoints
from pcdag.runtime.metrics import read_metrics
from pcdag.runtime.optim import param_groups
from pcdag.runtime.sampler import ResumableBatchSampler
from pcdag.runtime.trainer import train
from pcdag.testing.network import free_port
from pcdag.testing.toy import TOY_GRAPH, TOY_NODES, ToyMLP

PREP = """
pcdag: 1
name: toyprep
settings: {seed: 1}
nodes:
  rooms: {type: SyntheticSource, params: {n_scenes: 7, points: 1500, splits: [train]}}
  store: {type: Store, params: {path: STORE}, inputs: {cloud: rooms}}
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    (root / "prep.yaml").write_text(PREP.replace("STORE", str(root / "store")))
    assert main(["preprocess", str(root / "prep.yaml"), "--quiet", "--no-stats"]) == 0
    return root / "store"


@pytest.fixture(autouse=True)
def toy_nodes():
    with registry.registered(*TOY_NODES):
        yield


def toy_plan(store: Path, out: Path, **overrides):
    graph = loads_graph(TOY_GRAPH.replace("STORE", str(store)).replace("OUT", str(out)))
    return compile_graph(apply_overrides(graph, overrides))


def losses(run: Path) -> np.ndarray:
    return np.array([r["loss"] for r in read_metrics(run / "metrics.jsonl")])


def test_training_writes_log_checkpoints_and_picture_and_learns(store: Path, tmp_path: Path) -> None:
    result = train(toy_plan(store, tmp_path / "run"), quiet=True)
    run = tmp_path / "run"
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [8, 12]  # every 4 steps, newest 2 kept
    assert (run / "loss.png").stat().st_size > 0 and (run / "metrics.csv").read_text().startswith("step,loss")
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(12))
    assert {"lr", "weight_decay", "grad_norm", "time", "data_wait", "loss/fit", "teacher/momentum"} <= set(records[0])
    assert result.last_loss < 0.8 * result.first_loss
    assert "ToyBackbone" in (run / "graph.yaml").read_text() and "fit" in (run / "plan.txt").read_text()


def test_resume_continues_exactly_where_an_uninterrupted_run_would_be(store: Path, tmp_path: Path) -> None:
    train(toy_plan(store, tmp_path / "whole"), quiet=True)
    train(toy_plan(store, tmp_path / "split"), quiet=True, stop_after=5)
    assert [s for s, _ in list_checkpoints(tmp_path / "split" / "checkpoints")] == [4, 5]
    train(toy_plan(store, tmp_path / "split"), quiet=True, resume=True)
    whole = read_metrics(tmp_path / "whole" / "metrics.jsonl")
    split = read_metrics(tmp_path / "split" / "metrics.jsonl")
    for a, b in zip(whole, split, strict=True):
        for key in ("loss", "lr", "weight_decay", "beta1", "teacher/momentum", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), (a["step"], key)


def test_an_existing_run_needs_resume_and_a_different_graph_is_refused(store: Path, tmp_path: Path) -> None:
    train(toy_plan(store, tmp_path / "run"), quiet=True, stop_after=4)
    with pytest.raises(ValueError, match="already holds checkpoints: pass --resume"):
        train(toy_plan(store, tmp_path / "run"), quiet=True)
    other = toy_plan(store, tmp_path / "run", **{"net.width": 32, "settings.train.lr": 0.02})
    with pytest.raises(ValueError, match=r"net\.width: 16 → 32.*settings\.train\.lr: 0\.01 → 0\.02"):
        train(other, quiet=True, resume=True)


def test_gradient_accumulation_equals_a_larger_micro_batch(store: Path, tmp_path: Path) -> None:
    train(toy_plan(store, tmp_path / "a", **{"fit.noise": 0.0}), quiet=True, stop_after=6)
    train(toy_plan(store, tmp_path / "b", **{"fit.noise": 0.0, "settings.train.batch_per_device": 4}), quiet=True,
          stop_after=6)  # fmt: skip
    np.testing.assert_allclose(losses(tmp_path / "a"), losses(tmp_path / "b"), rtol=1e-5)


def test_a_non_finite_loss_stops_naming_the_step_and_the_term(store: Path, tmp_path: Path) -> None:
    with pytest.raises(FloatingPointError, match=r"step 3: .*non-finite term\(s\): fit = nan"):
        train(toy_plan(store, tmp_path / "run", **{"fit.nan_at_step": 3}), quiet=True)
    assert [s for s, _ in list_checkpoints(tmp_path / "run" / "checkpoints")] == []


def test_a_store_whose_every_scene_is_refused_stops_the_run(store: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no usable scene; the last refusal: scene .* a view needs 5000"):
        # every scene is refused (a view needs 5000 points, scenes have 1500): no batch can be made
        train(toy_plan(store, tmp_path / "run", **{"views.points": 5000}), quiet=True, stop_after=1)


DDP_SCRIPT = """
import sys
from pcdag.graphs import registry, loads_graph
from pcdag.graphs.overrides import apply_overrides
from pcdag.compiler import compile_graph
from pcdag.runtime.trainer import train
from pcdag.testing.network import free_port
from pcdag.testing.toy import TOY_GRAPH, TOY_NODES
if __name__ == "__main__":
    with registry.registered(*TOY_NODES):
        g = loads_graph(TOY_GRAPH.replace("STORE", sys.argv[1]).replace("OUT", sys.argv[2]))
        train(compile_graph(apply_overrides(g, {"fit.noise": 0.0})), quiet=True, stop_after=6, device="cpu")
"""


@pytest.mark.slow
def test_ddp_on_two_processes_follows_the_single_process_trajectory(store: Path, tmp_path: Path) -> None:
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for world, out in ((1, "one"), (2, "two")):
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={world}", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", str(script), str(store), str(tmp_path / out)]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    # the same 4 scenes per step: 1 GPU accumulates 2 micro-batches, 2 GPUs average their gradients
    np.testing.assert_allclose(losses(tmp_path / "one"), losses(tmp_path / "two"), rtol=1e-4)
    state = torch.load(list_checkpoints(tmp_path / "two" / "checkpoints")[-1][1], weights_only=True)
    assert state["world_size"] == 2


# ------------------------------------------------------------------ pieces


@given(
    st.lists(st.tuples(st.floats(0, 1), st.floats(-10, 10)), min_size=1, max_size=5, unique_by=lambda k: k[0]).map(
        sorted
    ),
    st.floats(0, 1),
    st.sampled_from(["linear", "cos"]),
)
def test_schedule_stays_between_its_knots(knots, p, shape) -> None:
    s = Schedule.parse([[t, v, shape] for t, v in knots])
    value = s(p)
    lo = max((k for k in knots if k[0] <= p), default=knots[0])
    hi = min((k for k in knots if k[0] >= p), default=knots[-1])
    assert min(lo[1], hi[1]) - 1e-9 <= value <= max(lo[1], hi[1]) + 1e-9
    assert s(0.0) == knots[0][1] and s(1.0) == knots[-1][1]


def test_schedules_of_the_spec() -> None:
    lam = Schedule.parse([[0, 2e-4], [0.1, 3e-3], [1, 1.5e-3, "cos"]])
    assert lam(0) == 2e-4 and lam(0.05) == pytest.approx(1.6e-3) and lam(0.1) == 3e-3 and lam(1) == 1.5e-3
    momentum = Schedule.parse([[0, 0.994], [1, 1.0, "cos"]])
    for t in (0, 0.3, 0.5, 0.9, 1):
        assert momentum(t) == pytest.approx(1 - 0.003 * (1 + np.cos(np.pi * t)))
    assert Schedule.parse(0.25)(0.7) == 0.25
    for bad, msg in (([[0.5, 1], [0.2, 2]], "comes before"), ([[0, 1, "exp"]], "shape"), ("x", "must be a number")):
        with pytest.raises(ParamError, match=msg):
            Schedule.parse(bad, "lam")


def test_ema_with_momentum_one_leaves_the_teacher_unchanged_and_zero_copies() -> None:
    torch.manual_seed(0)
    student, teacher = ToyMLP(8), ToyMLP(8)
    before = [p.clone() for p in teacher.parameters()]
    ema_update(teacher, student, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters(), strict=True))
    ema_update(teacher, student, 0.25)
    for b, t, s in zip(before, teacher.parameters(), student.parameters(), strict=True):
        torch.testing.assert_close(t, 0.25 * b + 0.75 * s)
    ema_update(teacher, student, 0.0)
    assert all(torch.equal(t, s) for t, s in zip(teacher.parameters(), student.parameters(), strict=True))


@given(st.integers(1, 30), st.integers(1, 4), st.integers(1, 3), st.integers(0, 40))
def test_sampler_resumes_anywhere_and_ranks_share_out_the_scenes(n, batch, world, start) -> None:
    whole = ResumableBatchSampler(n, batch, 0, world, seed=3)
    it = iter(whole)
    prefix = [next(it) for _ in range(start + 5)]
    resumed = iter(ResumableBatchSampler(n, batch, 0, world, seed=3, start=start))
    assert [next(resumed) for _ in range(5)] == prefix[start:]
    firsts = [next(iter(ResumableBatchSampler(n, batch, r, world, seed=3))) for r in range(world)]
    assert all(len(b) == batch for b in firsts)
    if n >= batch * world:  # enough scenes: ranks see different scenes in one step
        seen = [i for b in firsts for _, i in b]
        assert len(set(seen)) == len(seen)


def test_layer_decay_gives_the_last_layer_the_base_rate() -> None:
    groups = param_groups({"net": ToyMLP(4)}, TrainSettings(layer_decay=0.5))
    assert [g["lr_scale"] for g in groups] == [0.5, 1.0]
    assert groups[0]["names"] == ["net.net.0.weight", "net.net.0.bias"]


def test_global_batch_must_split_over_gpus() -> None:
    t = TrainSettings(global_batch=16, batch_per_device=2)
    assert [t.accumulation(w) for w in (1, 2, 4, 8)] == [8, 4, 2, 1]
    with pytest.raises(ValueError, match="not a multiple of 3 GPU"):
        t.accumulation(3)


def test_bad_training_settings_are_all_reported(store: Path, tmp_path: Path) -> None:
    graph = loads_graph(TOY_GRAPH.replace("STORE", str(store)).replace("OUT", str(tmp_path)))
    bad = apply_overrides(graph, {"settings.train.lr": 5, "settings.train.stepz": 3})
    with pytest.raises(GraphError) as err:
        compile_graph(bad)
    text = str(err.value)
    assert "settings.train: lr = 5 is out of range" in text and "'stepz'; did you mean 'steps'" in text
    one_step_warmup = apply_overrides(graph, {"settings.train.steps": 10, "settings.train.pct_start": 0.1})
    with pytest.raises(GraphError, match="steps = 10 with pct_start = 0.1 gives a warm-up of exactly one step"):
        compile_graph(one_step_warmup)  # torch's OneCycleLR would divide by zero inside the first step
    compile_graph(apply_overrides(graph, {"settings.train.steps": 11, "settings.train.pct_start": 0.1}))


def test_presets_apply_named_overrides_and_round_trip(store: Path, tmp_path: Path) -> None:
    text = TOY_GRAPH.replace("STORE", str(store)).replace("OUT", str(tmp_path))
    text += "presets:\n  wide: {net.width: 64, settings.train.steps: 3}\n"
    graph = loads_graph(text)
    assert loads_graph(dumps_graph(graph)) == graph
    wide = apply_preset(graph, "wide")
    assert wide.nodes["net"].params == {"width": 64} and wide.settings["train"]["steps"] == 3
    assert wide.settings["preset"] == "wide" and graph.nodes["net"].params == {}  # the original is untouched
    with pytest.raises(GraphError, match="(?s)no preset 'narrow'.*presets: wide"):
        apply_preset(graph, "narrow")
    with pytest.raises(GraphError, match="(?s)no node 'nett'.*did you mean 'net'"):
        apply_overrides(graph, {"nett.width": 3})


def test_cli_train_help_settings_lists_every_key(capsys) -> None:
    assert main(["train", "x.yaml", "--help-settings"]) == 0
    out = capsys.readouterr().out
    assert all(key in out for key in ("global_batch", "layer_decay", "checkpoint_every", "precision"))


PROBE_GRAPH = """
pcdag: 1
name: toyprobe
settings:
  seed: 5
  train: {steps: 4, global_batch: 2, batch_per_device: 2, lr: 0.01, checkpoint_every: 2, workers: 0, out: OUT}
nodes:
  store: {type: Store, params: {path: STORE, splits: [train]}}
  views: {type: ToyViews, params: {points: 64}, inputs: {cloud: store}}
  frozen: {type: ToyBackbone, params: {batch_norm: true, frozen: true}}
  head: {type: ToyBackbone}
  encode: {type: Encode, inputs: {model: frozen, views: views}}
  encode_head: {type: Encode, inputs: {model: head, views: views}}
  fit: {type: ToyLoss, inputs: {features: encode}}
  fit_head: {type: ToyLoss, inputs: {features: encode_head}}
"""


def frozen_norm(run: Path) -> dict[str, torch.Tensor]:
    state = ckpt.load(list_checkpoints(run / "checkpoints")[-1][1])
    return {k.split(".", 3)[-1]: v for k, v in state["modules"].items() if k.startswith("frozen.net.1.")}


@pytest.mark.parametrize("batches", [0, 3])
def test_recalibrate_bn_re_estimates_the_frozen_modules_statistics_once(store: Path, tmp_path: Path, batches: int):
    run = tmp_path / "run"
    graph = PROBE_GRAPH.replace("STORE", str(store)).replace("OUT", str(run))
    path = tmp_path / "probe.yaml"
    path.write_text(graph)
    args = ["train", str(path), "--quiet", "--set", f"settings.train.recalibrate_bn={batches}"]
    assert main([*args, "--stop-after", "2"]) == 0
    first = frozen_norm(run)
    assert main([*args, "--resume"]) == 0
    norm = frozen_norm(run)
    assert int(norm["num_batches_tracked"]) == batches  # the frozen module's BatchNorm never ran in train mode
    if batches == 0:
        assert torch.equal(norm["running_mean"], torch.zeros(16)) and torch.equal(norm["running_var"], torch.ones(16))
        return
    # the statistics of the hidden layer on the data: the toy views are centred scenes of a few metres, so the
    # first linear layer's outputs have a spread of the order of its weights times metres, far from the initial 1
    assert not torch.allclose(norm["running_var"], torch.ones(16), atol=0.05)
    assert (norm["running_var"] > 0).all() and torch.isfinite(norm["running_mean"]).all()
    for k in first:  # kept by the checkpoint; the resumed run did not recalibrate again
        assert torch.equal(first[k], norm[k])
