"""Hostile input and interrupted writes, each asserting nothing is lost: ``kill -9`` while a checkpoint is written
(the previous one loads and ``--resume`` continues), NaN/inf coordinates in every reader's layout (the scene is
quarantined naming the file; the others are stored)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from plyfile import PlyData, PlyElement

from pcdag.cli import main
from pcdag.compiler import compile_graph
from pcdag.graphs import loads_graph, registry
from pcdag.graphs.cloud import PointCloud
from pcdag.nodes.sources.ply import PLYSource
from pcdag.nodes.sources.rgbd_sequence import RGBDSequenceSource
from pcdag.nodes.sources.s3dis import S3DISSource
from pcdag.nodes.sources.scannet import ScanNetSource
from pcdag.runtime import checkpoint as ckpt
from pcdag.runtime.metrics import read_metrics
from pcdag.runtime.offline import run_offline
from pcdag.runtime.store import SceneStore
from pcdag.runtime.trainer import train
from pcdag.testing.toy import TOY_GRAPH, TOY_NODES

REPO = Path(__file__).resolve().parents[1]
PREP = """
pcdag: 1
name: toyprep
nodes:
  rooms: {type: SyntheticSource, params: {n_scenes: 4, points: 300, splits: [train]}}
  store: {type: Store, params: {path: STORE}, inputs: {cloud: rooms}}
"""
# In a child process: resume the run and hang inside the first checkpoint write, half a file written.
HANG_IN_SAVE = """
import sys, time
import torch
from pcdag.compiler import compile_graph
from pcdag.graphs import loads_graph, registry
from pcdag.runtime.trainer import train
from pcdag.testing.toy import TOY_GRAPH, TOY_NODES

def half_then_hang(state, f, *a, **k):
    f.write(b"PK\\x03\\x04 half a checkpoint")
    f.flush()
    print("writing", flush=True)
    time.sleep(600)

torch.save = half_then_hang
with registry.registered(*TOY_NODES):
    plan = compile_graph(loads_graph(TOY_GRAPH.replace("STORE", sys.argv[1]).replace("OUT", sys.argv[2])))
    train(plan, quiet=True, resume=True)
"""


@pytest.mark.slow  # a child process that imports torch and trains, plus a preprocess: ~28 s on 2 shared cores
def test_kill_9_during_a_checkpoint_write_keeps_the_previous_one_and_resume_continues(tmp_path: Path) -> None:
    (tmp_path / "prep.yaml").write_text(PREP.replace("STORE", str(tmp_path / "store")))
    assert main(["preprocess", str(tmp_path / "prep.yaml"), "--quiet", "--no-stats"]) == 0
    run = tmp_path / "run"
    with registry.registered(*TOY_NODES):
        plan = compile_graph(loads_graph(TOY_GRAPH.replace("STORE", str(tmp_path / "store")).replace("OUT", str(run))))
        train(plan, quiet=True, stop_after=4)  # checkpoint at step 4
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        child = subprocess.Popen(
            [sys.executable, "-c", HANG_IN_SAVE, str(tmp_path / "store"), str(run)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=(tmp_path / "child.err").open("w"),  # a file: a full stderr pipe would block the child
            text=True,
        )
        try:
            lines = iter(child.stdout.readline, "")  # until the child is inside the write of step 8, or exits
            assert "writing" in (x.strip() for x in lines), (tmp_path / "child.err").read_text()
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        assert [s for s, _ in ckpt.list_checkpoints(run / "checkpoints")] == [4]
        state = ckpt.load(ckpt.checkpoint_path(run / "checkpoints", 4))  # weights_only=True
        assert state["step"] == 4
        result = train(plan, quiet=True, resume=True)
    assert result.steps_done == 12
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == list(range(12))  # continued from step 4
    assert [s for s, _ in ckpt.list_checkpoints(run / "checkpoints")] == [8, 12]
    assert not [p.name for p in (run / "checkpoints").iterdir() if ".tmp-" in p.name]  # the half file is gone


# ------------------------------------------------------------------------------------------ non-finite input


def identity(cloud, rng):
    return cloud


def offline(source, store: Path):
    return run_offline(source, source.scenes(), identity, SceneStore(store), stage_key="k", progress=False)


def assert_only_bad_quarantined(report, bad: dict[str, str]) -> None:
    """Scenes of ``bad`` fail naming their file; every other scene is stored."""
    failed = {o.scene: o.error for o in report.failed}
    assert set(failed) == set(bad), failed
    for scene, file in bad.items():
        assert file in failed[scene] and ("NaN" in failed[scene] or "finite" in failed[scene]), failed[scene]
    assert len(report.done) == len(report.outcomes) - len(bad)


def test_non_finite_coordinates_in_scannet_npy(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name, row in (("scene0000_00", None), ("scene0001_00", 3), ("scene0002_00", slice(None))):
        scan = tmp_path / "scans" / "train" / name
        scan.mkdir(parents=True)
        coord = rng.normal(size=(30, 3))
        if row is not None:
            coord[row] = np.nan  # one NaN row; a whole-NaN file
        np.save(scan / "coord.npy", coord.astype(np.float32))
    report = offline(ScanNetSource(root=str(tmp_path / "scans"), fields=[]), tmp_path / "store")
    bad = {s: f"{s}/coord.npy" for s in ("scene0001_00", "scene0002_00")}
    assert_only_bad_quarantined(report, bad)


def write_ply(path: Path, coord: np.ndarray) -> None:
    vertex = np.empty(
        len(coord), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    )
    for i, axis in enumerate("xyz"):
        vertex[axis] = coord[:, i]
    for c in ("red", "green", "blue"):
        vertex[c] = 7
    PlyData([PlyElement.describe(vertex, "vertex")], text=False).write(str(path))


def test_non_finite_coordinates_in_ply(tmp_path: Path) -> None:
    (tmp_path / "ply").mkdir()
    coord = np.random.default_rng(1).normal(size=(30, 3)).astype(np.float32)
    write_ply(tmp_path / "ply" / "good.ply", coord)
    coord[5, 1] = np.inf
    write_ply(tmp_path / "ply" / "inf.ply", coord)
    write_ply(tmp_path / "ply" / "allnan.ply", np.full((30, 3), np.nan, np.float32))
    report = offline(PLYSource(root=str(tmp_path / "ply")), tmp_path / "store")
    assert_only_bad_quarantined(report, {"inf": "inf.ply", "allnan": "allnan.ply"})


def test_non_finite_coordinates_in_s3dis_txt(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for room, bad_line in (("office_1", None), ("office_2", "nan 1.0 2.0 10 20 30"), ("office_3", "1 inf 2 0 0 0")):
        ann = tmp_path / "s3dis" / "Area_1" / room / "Annotations"
        ann.mkdir(parents=True)
        lines = [" ".join(f"{v:.3f}" for v in rng.normal(size=3)) + " 10 20 30" for _ in range(20)]
        (ann / "chair_1.txt").write_text("\n".join(lines + ([bad_line] if bad_line else [])) + "\n")
    source = S3DISSource(root=str(tmp_path / "s3dis"))  # Area_1: train
    report = offline(source, tmp_path / "store")
    bad = {f"Area_1/{r}": f"Area_1/{r}/Annotations/chair_1.txt" for r in ("office_2", "office_3")}
    assert_only_bad_quarantined(report, bad)


def depth_cloud(frames, rng) -> PointCloud:
    """Stand-in for reconstruction: one point (u, v, depth) per measured depth pixel."""
    f, v, u = np.nonzero(frames.depths > 0)
    coord = np.stack([u, v, frames.depths[f, v, u]], axis=1).astype(np.float32)  # [P, 3]
    return PointCloud({"coord": coord}, {"scene": frames.meta["scene"]})


def write_sequence(seq: Path, pose_text: str) -> None:
    seq.mkdir(parents=True)
    depth = np.full((6, 8), 1500, np.uint16)  # [H, W] millimetres
    depth[0, :3] = 65535  # no measurement
    depth[1, 0] = 0
    for i in range(2):
        Image.fromarray(np.full((6, 8, 3), 90, np.uint8)).save(seq / f"frame-{i:06d}.color.png")
        Image.fromarray(depth).save(seq / f"frame-{i:06d}.depth.png")
        (seq / f"frame-{i:06d}.pose.txt").write_text(pose_text if i == 1 else "1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")


def test_rgbd_invalid_depth_is_dropped_and_a_non_finite_pose_refuses_the_sequence(tmp_path: Path) -> None:
    write_sequence(tmp_path / "rgbd" / "seq-good", "1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    write_sequence(tmp_path / "rgbd" / "seq-nan", "1 0 0 nan\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    write_sequence(tmp_path / "rgbd" / "seq-inf", "1 0 0 0\n0 1 0 -inf\n0 0 1 0\n0 0 0 1\n")
    source = RGBDSequenceSource(root=str(tmp_path / "rgbd"))
    report = run_offline(
        source, source.scenes(), depth_cloud, SceneStore(tmp_path / "s"), stage_key="k", progress=False
    )
    bad = {s: f"{s}/frame-000001.pose.txt" for s in ("seq-nan", "seq-inf")}
    assert_only_bad_quarantined(report, bad)
    cloud = SceneStore(tmp_path / "s").read("seq-good")
    assert len(cloud) == 2 * (6 * 8 - 4)  # 65535 and 0 are no measurement: those pixels make no point
    assert np.isfinite(cloud["coord"]).all() and (cloud["coord"][:, 2] == np.float32(1.5)).all()
