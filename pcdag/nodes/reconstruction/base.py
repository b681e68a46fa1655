"""What every reconstruction backend returns, and how ``Reconstruct`` finds a backend.

A backend is a module ``pcdag.nodes.reconstruction.<backend>`` with a function

    reconstruct(frames: Frames, params: Reconstruct.Params, rng: np.random.Generator) -> Reconstruction

It uses ``frames.intrinsics`` / ``frames.poses`` when present and ``params.use_known_cameras`` is true, and
estimates what is missing otherwise. Long sequences are cut into overlapping chunks by ``chunks.py`` and the
chunk results stitched by a similarity transform estimated on the overlap; a backend sees one chunk at a time.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import attrs
import numpy as np

from pcdag.graphs.cloud import PointCloud

BACKENDS = ("rgbd", "sfm", "feedforward")


@attrs.define(eq=False)
class Reconstruction:
    """A backend's result for one chunk (or a whole sequence)."""

    cloud: PointCloud  # coord [N, 3] float32 metres (world frame of ``poses``), color [N, 3] uint8
    poses: np.ndarray  # [F, 4, 4] float64 camera-to-world of every input frame; NaN where not registered
    intrinsics: np.ndarray  # [3, 3] float64 the camera used (known or estimated)
    report: dict = attrs.field(factory=dict)  # backend facts for the scene report (frames registered, ...)


def backend(name: str) -> Callable:
    """The ``reconstruct`` function of backend ``name`` (imported on first use: optional dependencies)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown reconstruction backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return importlib.import_module(f"pcdag.nodes.reconstruction.{name}").reconstruct
