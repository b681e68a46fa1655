"""GroupContrast end to end on real ScanNet scans (CPU): superpoints preprocessed by the shipped graph, the tiny
preset of ``graphs/groupcontrast.yaml`` trained a few steps with SGD, stopped and resumed, then probed by the
shipped linear-probe graph (its backbone node becomes the checkpoint's SparseUNet)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pcdag.cli import main
from pcdag.compiler import compile_graph
from pcdag.graphs.yamlio import load_graph
from pcdag.runtime.metrics import read_metrics

REPO = Path(__file__).resolve().parents[1]
GRAPH = str(REPO / "graphs" / "groupcontrast.yaml")
LP = str(REPO / "graphs" / "eval" / "scannet-lp.yaml")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def superpoint_store(tmp_path_factory, shared_data: Path) -> Path:
    """Two train and two val scans with normals and Felzenszwalb superpoints, by graphs/scannet-superpoints.yaml."""
    root = tmp_path_factory.mktemp("gc-scans")
    for split, scenes in (("train", ("scene0000_00", "scene0001_00")), ("val", ("scene0006_00", "scene0007_00"))):
        (root / split).mkdir()
        for scene in scenes:
            (root / split / scene).symlink_to(shared_data / "scannet-mini" / split / scene)
    out = root / "store"
    args = ["preprocess", str(REPO / "graphs" / "scannet-superpoints.yaml"), "--quiet", "--no-stats"]
    assert main([*args, "--set", f"scans.root={root}", "--set", f"store.path={out}"]) == 0
    return out


def train_args(store: Path, out: Path) -> list[str]:
    args = ["train", GRAPH, "--preset", "tiny", "--quiet", "--out", str(out), "--set", f"store.path={store}"]
    return [*args, "--set", "settings.train.steps=4", "--set", "settings.train.workers=0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, superpoint_store: Path) -> Path:
    """Four SGD steps of the tiny preset, as 2 + 2 with a resume in between."""
    out = tmp_path_factory.mktemp("gc") / "run"
    args = train_args(superpoint_store, out) + ["--set", "settings.train.checkpoint_every=2"]
    assert main([*args, "--stop-after", "2"]) == 0
    assert main([*args, "--resume"]) == 0
    return out


def test_groupcontrast_trains_and_resumes(run: Path) -> None:
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    for r in records:
        assert math.isfinite(r["loss"]) and r["loss/segments"] > 0
        assert r["loss/positives"] + r["loss/no_negative"] > 0  # sampled pairs reached the contrast
        assert {"loss/loss", "loss/group", "loss/contrast", "loss/center_norm", "momentum"} <= set(r)
        assert r["momentum"] == pytest.approx(0.8)  # SGD's momentum, fixed
    # the teacher normalises with batch statistics: its groups differ from the first step (with the student's
    # near-initial running statistics every segment of every scene fell into one group and the contrast was empty)
    assert max(r["loss/groups"] for r in records) > 1


def test_the_plan_shows_the_chain_and_sgd() -> None:
    plan = compile_graph(load_graph(GRAPH))
    text = plan.render(scene_counts=False)
    for name in ("TwoViewGenerator", "SparseUNet", "GroupContrastHead", "GroupContrastLoss", "SGD momentum 0.8"):
        assert name in text, name


def test_a_bad_optimizer_is_refused_naming_the_setting(superpoint_store: Path, tmp_path: Path, capsys) -> None:
    assert main([*train_args(superpoint_store, tmp_path / "x"), "--set", "settings.train.optimizer=adam"]) != 0
    printed = capsys.readouterr()
    assert "optimizer" in printed.out + printed.err and "sgd" in printed.out + printed.err


def test_the_linear_probe_takes_the_groupcontrast_backbone(run: Path, superpoint_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "lp"
    args = ["eval", LP, "--preset", "tiny", "--checkpoint", str(run), "--out", str(out), "--quiet"]
    args += ["--set", f"store.path={superpoint_store}", "--set", "settings.train.steps=2"]
    args += ["--set", "views.max_points=6000", "--set", "settings.train.workers=0", "--set", "evaluate.pictures=0"]
    args += ["--set", "store.fields=[color, normal, segment]"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["evaluators"]["evaluate"]["miou"] <= 1.0


@pytest.mark.parametrize("fields", [["color", "normal", "superpoint"], None])
def test_a_store_without_superpoints_is_refused_at_compile_time(tmp_path: Path, fields) -> None:
    """The graph asks for ``superpoint``; a written store that lacks it is refused before anything runs, naming
    the node that reads it and the node type that would add it (whether or not ``fields`` lists it)."""
    from pcdag.graphs import GraphError
    from pcdag.graphs.overrides import apply_overrides

    store = tmp_path / "store"
    store.mkdir()
    scene = {"scene": "s0", "split": "train", "n_points": 10, "fields": ["coord", "color", "normal", "segment"]}
    (store / "manifest.json").write_text(json.dumps({"scenes": [scene]}))
    graph = apply_overrides(load_graph(GRAPH), {"store.path": str(store), "store.fields": fields})
    with pytest.raises(GraphError) as caught:
        compile_graph(graph)
    text = str(caught.value)
    assert "missing-field" in text and "'superpoint'" in text and "'views'" in text and "Oversegment" in text
