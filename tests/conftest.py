"""Shared test fixtures: where the real data lives (``<repo>/../shared/data``), small hypothesis profiles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# MKL's dynamic threading (on by default) may run a matrix product on fewer threads than asked when the machine
# is busy, which changes the last bits of a sum and, through AdamW, ~1e-5 of a loss two steps later: tests that
# compare two training runs would then depend on the load (docs/training.md). Set before torch is imported; the
# training subprocesses of the tests inherit it.
os.environ.setdefault("MKL_DYNAMIC", "FALSE")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

settings.register_profile(
    "pcdag", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.register_profile("ci", parent=settings.get_profile("pcdag"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "pcdag")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real data not found at {SHARED_DATA}: clone the repo with shared/ beside it")
    return SHARED_DATA


@pytest.fixture(scope="session")
def scannet_eval_store(tmp_path_factory, shared_data: Path) -> Path:
    """Two train and two val scans of real ScanNet (different rooms) with normals, by the shipped scannet graph."""
    from pcdag.cli import main

    root = tmp_path_factory.mktemp("eval-scans")
    for split, scenes in (("train", ("scene0000_00", "scene0001_00")), ("val", ("scene0006_00", "scene0007_00"))):
        (root / split).mkdir()
        for scene in scenes:
            (root / split / scene).symlink_to(shared_data / "scannet-mini" / split / scene)
    out = root / "store"
    args = ["preprocess", str(REPO / "graphs" / "scannet.yaml"), "--quiet", "--no-stats"]
    args += ["--set", f"scans.root={root}", "--set", f"store.path={out}"]
    if main(args) != 0:
        pytest.fail("preprocessing the evaluation store failed")
    return out
