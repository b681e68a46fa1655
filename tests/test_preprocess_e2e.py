"""`pcdag preprocess` end to end on real ScanNet scans: skip on re-run, resume after a kill, quarantine."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pcdag.cli import main
from pcdag.runtime.store import SceneStore

REPO = Path(__file__).resolve().parents[1]
GRAPH = REPO / "graphs" / "scannet.yaml"
pytestmark = pytest.mark.slow


def _counts(text: str) -> tuple[int, int, int]:
    m = re.search(r"(\d+) done, (\d+) skipped, (\d+) failed", text)
    assert m, text
    return tuple(int(x) for x in m.groups())


def _committed(store: Path) -> list[str]:
    scenes = store / "scenes"
    return sorted(p.name for p in scenes.iterdir() if not p.name.startswith(".")) if scenes.is_dir() else []


def test_killed_run_resumes_and_skips_what_was_done(tmp_path: Path, shared_data: Path) -> None:
    store = tmp_path / "store"
    args = [
        sys.executable,
        "-m",
        "pcdag.cli",
        "preprocess",
        str(GRAPH),
        "--quiet",
        "--partition-size",
        "1",
        "--set",
        f"store.path={store}",
        "--set",
        f"scans.root={shared_data / 'scannet-mini'}",
    ]
    proc = subprocess.Popen(
        args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.time() + 120
    while len(_committed(store)) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # a crash: no clean-up code runs
    proc.wait()
    done_before = _committed(store)
    assert 3 <= len(done_before) < 17, "the run was not interrupted mid-way"

    rerun = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    done, skipped, failed = _counts(rerun.stdout)
    assert skipped >= len(done_before) and done + skipped == 17 and failed == 0
    assert len(_committed(store)) == 17
    assert not [p for p in (store / "scenes").iterdir() if p.name.startswith(".tmp")]
    manifest = json.loads((store / "manifest.json").read_text())
    assert len(manifest["scenes"]) == 17

    s = SceneStore(store)
    cloud = s.read("scene0000_00")
    assert len(cloud) == 50000 and cloud["normal"].dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(cloud["normal"], axis=1), 1.0, atol=1e-4)
    assert {e.split for e in s.entries()} == {"train", "val"}


def _mini_copy(shared_data: Path, root: Path) -> None:
    for split, scan in (("train", "scene0000_00"), ("train", "scene0001_00"), ("val", "scene0006_00")):
        shutil.copytree(shared_data / "scannet-mini" / split / scan, root / split / scan)


def test_corrupted_scan_is_quarantined_and_the_others_complete(tmp_path: Path, shared_data: Path, capsys) -> None:
    root, store = tmp_path / "scannet", tmp_path / "store"
    _mini_copy(shared_data, root)
    bad = root / "train" / "scene0001_00" / "coord.npy"
    good_bytes = bad.read_bytes()
    bad.write_bytes(good_bytes[: len(good_bytes) // 2])  # truncated file
    argv = ["preprocess", str(GRAPH), "--quiet", "--set", f"scans.root={root}", "--set", f"store.path={store}"]

    assert main(argv) == 3
    out = capsys.readouterr()
    assert _counts(out.out) == (2, 0, 1)
    assert "scene0001_00" in out.out and "coord.npy" in out.out
    assert _committed(store) == ["scene0000_00", "scene0006_00"]
    (record,) = SceneStore(store).quarantined()
    assert record["id"] == "scene0001_00" and record["split"] == "train"
    assert str(bad) in record["error"] and "Traceback" in record["traceback"]

    bad.write_bytes(good_bytes)  # the user fixes the file: only that scene is recomputed
    assert main(argv) == 0
    assert _counts(capsys.readouterr().out) == (1, 2, 0)
    assert SceneStore(store).quarantined() == []


def test_changing_a_parameter_recomputes_every_scene(tmp_path: Path, shared_data: Path, capsys) -> None:
    root, store = tmp_path / "scannet", tmp_path / "store"
    _mini_copy(shared_data, root)
    argv = ["preprocess", str(GRAPH), "--quiet", "--set", f"scans.root={root}", "--set", f"store.path={store}"]
    assert main(argv) == 0
    assert _counts(capsys.readouterr().out) == (3, 0, 0)
    assert main([*argv, "--set", "normals.k=16"]) == 0
    assert _counts(capsys.readouterr().out) == (3, 0, 0)
    assert main([*argv, "--set", "normals.k=16"]) == 0
    assert _counts(capsys.readouterr().out) == (0, 3, 0)


def test_runs_on_an_existing_dask_cluster(tmp_path: Path, capsys) -> None:
    from distributed import LocalCluster

    store = tmp_path / "store"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        argv = [
            "preprocess",
            str(REPO / "graphs" / "synthetic.yaml"),
            "--quiet",
            "--scheduler",
            cluster.scheduler_address,
            "--set",
            f"store.path={store}",
            "--set",
            "rooms.points=2000",
        ]
        assert main(argv) == 0
        assert any(p.startswith("pcdag-offline") for p in cluster.scheduler.task_prefixes)  # ran there
    assert _counts(capsys.readouterr().out) == (8, 0, 0)
    assert len(SceneStore(store).entries()) == 8
