"""Where an offline run's seconds went: per-stage sums over scenes, and the one-line summary ``pcdag preprocess``
prints.

A scene's stages are its loading (named after the source node: decoding a video, reading a scan), every node of
its chain, validation and the write into the store. Stages an expanded item's parts share (the loading and the
nodes before the expansion) ran once for the item, so they are counted once per item, not once per part. The run
adds its own stages: hashing input files for the cache keys (``fingerprints``), starting and stopping Dask
(``cluster``) and writing the manifest. With several workers the scenes' stages add up to more than the wall time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def sum_stage_seconds(outcomes: Iterable[Any]) -> dict[str, float]:
    """Seconds per stage over ``outcomes`` (objects with ``scene``, ``item``, ``stages`` and ``shared``), in
    first-seen order; a shared stage is counted once per item."""
    totals: dict[str, float] = {}
    seen: set[tuple[str, str]] = set()
    for o in outcomes:
        item = o.item or o.scene
        for stage, seconds in o.stages.items():
            if stage in o.shared:
                if (item, stage) in seen:
                    continue
                seen.add((item, stage))
            totals[stage] = totals.get(stage, 0.0) + float(seconds)
    return {k: round(v, 3) for k, v in totals.items()}


def format_stage_seconds(stages: dict[str, float], wall: float) -> str:
    """``time: videos 3.1 s (40 %), split 0.2 s (3 %), ...; other 0.1 s`` against the wall time ``wall``."""
    shares = ", ".join(f"{k} {v:.1f} s ({100 * v / wall:.0f} %)" if wall > 0 else f"{k} {v:.1f} s"
                       for k, v in stages.items())  # fmt: skip
    other = wall - sum(stages.values())
    tail = f"; other {other:.1f} s" if other >= 0 else "; stages overlap (several workers)"
    return f"time: {shares}{tail}"
