"""What every reconstruction backend returns, and how ``Reconstruct`` finds a backend.

A backend is a module ``pcdag.nodes.reconstruction.parts.<backend>`` with a function

    reconstruct(frames: Frames, params: Reconstruct.Params, rng: np.random.Generator) -> Reconstruction

It uses ``frames.intrinsics`` / ``frames.poses`` when present and ``params.use_known_cameras`` is true, and
estimates what is missing otherwise. Long sequences are cut into overlapping chunks by ``chunks.py`` and the
chunk results stitched by a similarity transform estimated on the overlap; a backend sees one chunk at a time.

Optional module-level hooks a backend may define, used by ``chunks.py`` to size chunks under
``params.memory_budget``: ``BYTES_PER_PIXEL`` (working memory per input pixel), ``frame_pixels(h, w, params)``
(pixels the backend actually processes per frame) and ``select_frames(count, params)`` (the frame indices it
uses, e.g. at most ``max_frames`` evenly spaced).

Units: ``rgbd``, ``sfm`` with known poses, and known cameras give metres. ``sfm`` without known poses and
``feedforward`` networks give their own (scale-free) units; ``min_depth``, ``max_depth`` and ``voxel_size`` then
apply in those units, and ``AlignScale`` downstream sets the metric scale.
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
    # [F, P, 3] float32 sampled per-pixel world points of every frame (NaN = none), for stitching chunks by
    # points when poses are unknown or nearly collinear; None when the backend has no per-pixel points (sfm)
    anchors: np.ndarray | None = None


def backend(name: str) -> Callable:
    """The ``reconstruct`` function of backend ``name`` (imported on first use: optional dependencies)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown reconstruction backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return importlib.import_module(f"pcdag.nodes.reconstruction.parts.{name}").reconstruct


def torch_device(name: str) -> str:
    """The ``device`` parameter of the torch backends and steps (feedforward, mvs): ``auto`` → ``cuda`` when torch
    sees one, else ``cpu``; ``cuda`` without one is an error."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no CUDA device; use device: auto or cpu")
    return name
