"""`pcdag eval` end to end on real ScanNet scans: a LAM3C checkpoint into the linear-probe graph, the report with
its tables and pictures, a mismatched backbone refused, and the data-efficient protocols."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pcdag.cli import main
from pcdag.runtime.store import SceneStore

REPO = Path(__file__).resolve().parents[1]
LP = str(REPO / "graphs" / "eval" / "scannet-lp.yaml")
pytestmark = pytest.mark.slow
SMALL = ["--set", "settings.train.steps=2", "--set", "views.max_points=6000", "--set", "settings.train.workers=0"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, scannet_eval_store: Path) -> Path:
    """One step of LAM3C's tiny preset: a real training checkpoint."""
    run = tmp_path_factory.mktemp("lam3c") / "run"
    args = ["train", str(REPO / "graphs" / "lam3c.yaml"), "--preset", "tiny", "--quiet", "--out", str(run)]
    args += ["--set", f"store.path={scannet_eval_store}", "--set", "settings.train.steps=1"]
    args += ["--set", "settings.train.workers=0"]
    assert main(args) == 0
    return run


def test_linear_probe_of_a_checkpoint_writes_the_report(
    pretrained: Path, scannet_eval_store: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "lp"
    args = ["eval", LP, "--preset", "tiny", "--checkpoint", str(pretrained), "--out", str(out), "--quiet"]
    args += ["--set", f"store.path={scannet_eval_store}", "--set", "evaluate.pictures=1", *SMALL]
    assert main(args) == 0
    assert "evaluate: miou" in capsys.readouterr().out
    report = (out / "report.md").read_text()
    assert "| class | IoU % | Acc % | GT points |" in report and "pre-trained backbone" in report
    assert "absent" in report  # two val scans do not hold all 20 classes: absent, not 0
    assert "![confusion matrix](eval/evaluate/confusion.png)" in report and "![training curve](loss.png)" in report
    for picture in ("eval/evaluate/confusion.png", "loss.png"):
        assert (out / picture).stat().st_size > 5_000
    assert len(list((out / "eval" / "evaluate").glob("scene-*.png"))) == 1
    metrics = json.loads((out / "metrics.json").read_text())
    scores = metrics["evaluators"]["evaluate"]
    assert 0.0 <= scores["miou"] <= 1.0 and scores["scenes"] == 2 and metrics["run"]["checkpoint"]
    absent = [c for c, v in scores["classes"].items() if v["absent"]]
    assert absent and all(scores["classes"][c]["iou"] is None for c in absent)
    store = SceneStore(scannet_eval_store)
    for entry in store.entries(["val"]):  # predictions at every original point
        pred = np.load(out / "eval" / "evaluate" / "predictions" / f"{entry.id}.npy")
        assert pred.shape == (len(store.read(entry.id, ["coord"])),) and pred.min() >= 0 and pred.max() < 20

    # a finished run goes straight to evaluation, and evaluates the same
    assert main(args) == 0
    again = json.loads((out / "metrics.json").read_text())["evaluators"]["evaluate"]
    assert again["miou"] == pytest.approx(scores["miou"])
    assert metrics["training"] == json.loads((out / "metrics.json").read_text())["training"]


def test_a_backbone_of_another_size_is_refused_naming_the_difference(
    pretrained: Path, scannet_eval_store: Path, tmp_path: Path, capsys
) -> None:
    args = ["eval", LP, "--preset", "base", "--checkpoint", str(pretrained), "--out", str(tmp_path / "x"), "--quiet"]
    assert main(args + ["--set", f"store.path={scannet_eval_store}"]) == 1
    err = capsys.readouterr().err
    assert "does not match node 'backbone'" in err
    assert "enc_channels: checkpoint [16, 32, 48, 64, 96] vs graph [48, 96, 192, 384, 512]" in err


def test_data_efficient_protocols_train_on_the_chosen_scenes_and_points(
    scannet_eval_store: Path, tmp_path: Path, capsys
) -> None:
    splits = tmp_path / "splits"
    assert main(["splits", str(scannet_eval_store), "--out", str(splits), "--scenes", "50", "--points", "20"]) == 0
    scenes = json.loads((splits / "scenes-50pct-seed0.json").read_text())["scenes"]
    assert len(scenes) == 1  # one of the two training rooms
    out = tmp_path / "lp"
    args = ["eval", LP, "--preset", "tiny", "--out", str(out), "--quiet", "--set", f"store.path={scannet_eval_store}"]
    args += ["--set", f"store.scenes={splits / 'scenes-50pct-seed0.json'}"]
    args += ["--set", f"limit.file={splits / 'points-20-seed0.npz'}", "--set", "evaluate.pictures=0", *SMALL]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run"]["checkpoint"] is None  # random initialisation: the baseline
    assert "randomly initialised" in (out / "report.md").read_text()


def test_extract_from_a_training_checkpoint_uses_its_graphs_view_node(pretrained: Path, tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "scan.npy", rng.uniform(0, 2, (800, 3)).astype(np.float32))
    out = tmp_path / "features"
    args = ["extract", str(pretrained), str(tmp_path / "scan.npy"), "--out", str(out), "--grid-size", "0.05"]
    assert main([*args, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "views of node 'views' of the checkpoint's graph" in printed and "of PointTransformerV3" in printed
    assert np.load(out / "features.npy").shape == (800, 256)  # tiny encoder up-cast to level 0: 16 + ... + 96
