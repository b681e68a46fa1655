"""Shared test fixtures: where the real data lives (``<repo>/../shared/data``), small hypothesis profiles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

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
