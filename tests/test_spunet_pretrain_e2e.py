"""A second backbone end to end, through commands that name no backbone: the tiny SparseUNet clustering graph of
``tests/graphs/spunet-pretrain.yaml`` pre-trains on real ScanNet scans (CPU, pure-torch sparse convolution), then
``pcdag eval`` probes it with the shipped linear-probe graph (whose backbone node is a PointTransformerV3: the
checkpoint's type replaces it), ``pcdag export`` writes a Pointcept SpUNet-v1m1 file that loads back, and ``pcdag
extract`` gives every point of a new scan the backbone's features."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pcdag.cli import main
from pcdag.nodes.backbones.sparse_unet import SparseUNet
from pcdag.runtime.checkpoint import list_checkpoints
from pcdag.runtime.metrics import read_metrics

REPO = Path(__file__).resolve().parents[1]
GRAPH = str(REPO / "tests" / "graphs" / "spunet-pretrain.yaml")
LP = str(REPO / "graphs" / "eval" / "scannet-lp.yaml")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory, scannet_eval_store: Path) -> Path:
    """Two steps of the tiny SparseUNet graph: a real training checkpoint."""
    out = tmp_path_factory.mktemp("spunet") / "run"
    args = ["train", GRAPH, "--quiet", "--out", str(out), "--set", f"store.path={scannet_eval_store}"]
    assert main([*args, "--set", "settings.train.steps=2", "--set", "settings.train.workers=0"]) == 0
    return out


def test_sparse_unet_pretrains_on_cpu(run: Path) -> None:
    records = read_metrics(run / "metrics.jsonl")
    assert len(records) == 2 and all(math.isfinite(r["loss"]) for r in records)
    assert {"loss/other", "loss/local"} <= set(records[0])


def test_the_linear_probe_takes_the_checkpoints_backbone(
    run: Path, scannet_eval_store: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "lp"
    args = ["eval", LP, "--preset", "tiny", "--checkpoint", str(run), "--out", str(out)]  # not quiet: the note
    args += ["--set", f"store.path={scannet_eval_store}", "--set", "settings.train.steps=2"]
    args += ["--set", "views.max_points=6000", "--set", "settings.train.workers=0", "--set", "evaluate.pictures=0"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "node 'backbone' of graph 'scannet-lp' becomes a SparseUNet (was PointTransformerV3)" in printed
    kept = printed.split("kept from the graph: ")[1].splitlines()[0].split(", ")
    assert "frozen" in kept and "evaluate: miou" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["evaluators"]["evaluate"]["miou"] <= 1.0 and metrics["run"]["checkpoint"]
    # the probe trained on the frozen pre-trained backbone: its weights in the probe's checkpoint are the run's
    probe = torch.load(list_checkpoints(out / "checkpoints")[-1][1], weights_only=True)["modules"]
    trained = torch.load(list_checkpoints(run / "checkpoints")[-1][1], weights_only=True)["modules"]
    name = "conv_input.0.weight"
    assert torch.equal(probe[f"backbone.{name}"], trained[f"student.{name}"])


def test_export_writes_a_pointcept_file_that_loads_back(run: Path, tmp_path: Path) -> None:
    path = tmp_path / "spunet.pth"
    assert main(["export", str(run), str(path)]) == 0
    saved = torch.load(path, weights_only=True)
    assert saved["config"]["type"] == "SpUNet-v1m1" and "conv_input.0.weight" in saved["state_dict"]
    loaded = SparseUNet(preset="tiny", weights=str(path)).build({})
    trained = torch.load(list_checkpoints(run / "checkpoints")[-1][1], weights_only=True)["modules"]
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, trained[f"student.{name}"]), name


def test_extract_gives_every_point_the_backbones_features(run: Path, tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "scan.npy", rng.uniform(0, 2, (900, 3)).astype(np.float32))
    out = tmp_path / "features"
    args = ["extract", str(run), str(tmp_path / "scan.npy"), "--out", str(out), "--grid-size", "0.05", "--quiet"]
    assert main(args) == 0
    assert "of SparseUNet" in capsys.readouterr().out
    features = np.load(out / "features.npy")
    assert features.shape == (900, SparseUNet(preset="tiny").build_module().out_channels)
    assert np.isfinite(features).all() and features.std() > 0
