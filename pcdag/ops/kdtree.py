"""kd-tree helpers shared by neighbour queries: how many threads a query may use."""

from __future__ import annotations

import os

THREADS_ENV = "PCDAG_THREADS"


def tree_workers() -> int:
    """Threads for kd-tree queries: ``PCDAG_THREADS`` (a positive whole number) when set, else all cores (-1)."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return -1
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"environment variable {THREADS_ENV}={raw!r} must be a positive whole number of threads")
    return int(raw)
