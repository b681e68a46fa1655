"""SparseUNet pre-trains: the tiny clustering graph of ``tests/graphs/spunet-pretrain.yaml`` on real ScanNet scans,
a few CPU steps with a finite loss, then its checkpoint's weights exported as a Pointcept SpUNet-v1m1 file."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from pcdag.cli import main
from pcdag.nodes.backbones.sparse_unet import SparseUNet
from pcdag.runtime.checkpoint import list_checkpoints
from pcdag.runtime.metrics import read_metrics

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory, shared_data: Path) -> Path:
    root = tmp_path_factory.mktemp("scans")
    (root / "train").mkdir()
    for scene in ("scene0000_00", "scene0001_00"):
        (root / "train" / scene).symlink_to(shared_data / "scannet-mini" / "train" / scene)
    out = root / "store"
    args = ["preprocess", str(REPO / "graphs" / "scannet.yaml"), "--quiet", "--no-stats"]
    args += ["--set", f"scans.root={root}", "--set", "scans.splits=[train]", "--set", f"store.path={out}"]
    assert main(args) == 0
    return out


def test_sparse_unet_pretrains_on_cpu_and_its_weights_load_back(store: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    graph = str(REPO / "tests" / "graphs" / "spunet-pretrain.yaml")
    args = ["train", graph, "--quiet", "--set", f"store.path={store}", "--set", "settings.train.steps=2"]
    assert main([*args, "--out", str(run)]) == 0
    records = read_metrics(run / "metrics.jsonl")
    assert len(records) == 2 and all(math.isfinite(r["loss"]) for r in records)
    assert {"loss/other", "loss/local"} <= set(records[0])

    state = torch.load(list_checkpoints(run / "checkpoints")[-1][1], weights_only=True)["modules"]
    node = SparseUNet(preset="tiny")
    module = node.build_module()
    node.load_trained(module, {k[len("student.") :]: v for k, v in state.items() if k.startswith("student.")}, "run")
    node.export_weights(module, tmp_path / "spunet.pth")
    loaded = SparseUNet(preset="tiny", weights=str(tmp_path / "spunet.pth")).build({})
    for name, value in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
