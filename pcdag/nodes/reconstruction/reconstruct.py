"""``Reconstruct``: frames of one scene → a coloured point cloud, by one of three backends.

Parameters of all backends live here (flat, with the backend they belong to in their doc); the math lives in
``parts/rgbd.py`` (depth back-projection + voxel fusion), ``parts/sfm.py`` (pycolmap structure from motion) and
``parts/feedforward.py`` (π³ / VGGT-style point-map networks), with chunking and stitching in ``parts/chunks.py``.
``dense: mvs`` then replaces the sparse cloud of ``sfm`` by a dense one from plane-sweep stereo on the posed colour
frames (``parts/mvs.py``, kernels in ``parts/mvs_sweep.py``).

When any frame has a pose (known, or estimated by the backend), the cloud's ``meta["camera_up"]`` is the registered
cameras' mean image-up direction in the cloud's frame and ``meta["camera_up_agreement"]`` how well they agree
(``pcdag/ops/camera_up.py``): ``AlignZUp`` uses it as its gravity prior.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from pcdag.graphs.frames import Frames
from pcdag.graphs.node import FieldEffect, In, Node, Out, effect
from pcdag.graphs.params import in_range, integer, of_type, one_of, param
from pcdag.graphs.ports import FRAMES, POINT_CLOUD, RGBD_FRAMES, Placement, PortType
from pcdag.graphs.registry import register
from pcdag.nodes.reconstruction.parts.base import BACKENDS, backend
from pcdag.ops.camera_up import CAMERA_UP, CAMERA_UP_AGREEMENT, mean_camera_up

OPTIONAL_STR = of_type(str, type(None), allowed="a string or null")


@register
class Reconstruct(Node):
    """Reconstruct a coloured point cloud from the frames of one scene (rgbd | sfm | feedforward backend)."""

    role = "reconstruction"
    placements = (Placement.OFFLINE,)
    version = 2
    per_item = True
    inputs = {"frames": In(FRAMES, doc="video or RGB-D frames of one scene")}
    outputs = {"cloud": Out(POINT_CLOUD, doc="coord + color in the frames' world (or an arbitrary) frame")}

    @attrs.frozen
    class Params:
        backend: str = param("rgbd", one_of(*BACKENDS), doc="rgbd: depth fusion; sfm: pycolmap; feedforward: π³")
        use_known_cameras: bool = param(True, of_type(bool), doc="use intrinsics/poses the frames carry")
        voxel_size: float = param(0.02, in_range(0.0, 1.0), unit="m", doc="fusion grid (0 = keep every point)")
        min_depth: float = param(0.1, in_range(0.0, None), unit="m", doc="rgbd/feedforward: nearer is dropped")
        max_depth: float = param(8.0, in_range(0.0, None, lo_open=True), unit="m", doc="farther is dropped")
        edge_threshold: float = param(
            0.05, in_range(0.0, None), doc="drop pixels whose depth jumps by more than this fraction (0 = off)"
        )
        conf_threshold: float = param(0.1, in_range(0.0, 1.0), doc="feedforward: keep sigmoid(confidence) above")
        max_frames: int = param(400, integer(2, None), doc="sfm/feedforward: evenly spaced frames at most")
        pixel_budget: int = param(255_000, integer(1024, None), unit="px", doc="feedforward: pixels per frame")
        patch_multiple: int = param(14, integer(1, 256), unit="px", doc="feedforward: sides a multiple of this")
        model: str | None = param(None, OPTIONAL_STR, doc="feedforward: 'module:factory' building the network")
        weights: str | None = param(
            None, OPTIONAL_STR, doc="feedforward: local weights file (state dict)", path="in-file"
        )
        device: str = param("auto", one_of("auto", "cpu", "cuda"), doc="feedforward / mvs: where torch runs")
        chunk_frames: int = param(0, integer(0, None), doc="frames per chunk (0 = from memory_budget)")
        chunk_overlap: int = param(8, integer(2, None), doc="frames shared by consecutive chunks")
        memory_budget: float = param(8.0, in_range(0.1, None), unit="GiB", doc="per-chunk working memory")
        sfm_max_image_size: int = param(640, integer(64, None), unit="px", doc="sfm: longest image side")
        sfm_overlap: int = param(10, integer(1, None), doc="sfm: sequential matching window (plus i + 2^k jumps)")
        sfm_matching: str = param(
            "auto", one_of("auto", "sequential", "exhaustive"), doc="sfm: image pairs (auto: by frame count)"
        )
        sfm_exhaustive_frames: int = param(
            40, integer(2, None), doc="sfm: auto matches every pair up to this many frames, sequentially above"
        )
        sfm_mapper: str = param("incremental", one_of("incremental", "global"), doc="sfm: COLMAP or GLOMAP mapping")
        sfm_models: str = param(
            "merged", one_of("merged", "largest"), doc="sfm: cloud of the largest model, or of all merged into it"
        )
        sfm_blur_drop: float = param(
            0.0, in_range(0.0, 1.0), doc="sfm: drop frames less sharp than this x their neighbours' median (0 = off)"
        )
        sfm_focal_prior: float = param(
            1.2, in_range(0.1, 10.0), doc="sfm: initial focal length / longest side for an unknown camera"
        )
        dense: str = param(
            "none", one_of("none", "mvs"), doc="none: the backend's cloud; mvs: plane-sweep stereo on the posed frames"
        )
        mvs_reference_stride: int = param(2, integer(1, None), doc="mvs: a depth map for every n-th posed frame")
        mvs_sources: int = param(4, integer(1, 16), doc="mvs: source views per reference (and consistency views)")
        mvs_planes: int = param(64, integer(3, 1024), doc="mvs: depth planes, even in inverse depth")
        mvs_max_image_size: int = param(320, integer(16, None), unit="px", doc="mvs: longest image side")
        mvs_window: int = param(7, integer(3, 31), unit="px", doc="mvs: ZNCC window side (odd)")
        mvs_min_zncc: float = param(0.5, in_range(-1.0, 1.0), doc="mvs: keep pixels whose aggregated ZNCC is above")
        mvs_consistent_views: int = param(2, integer(0, 16), doc="mvs: neighbour depth maps that must agree")
        mvs_consistency_tolerance: float = param(
            0.04, in_range(0.0, 1.0, lo_open=True), doc="mvs: agreement as a fraction of depth"
        )

    def __post_init__(self) -> None:
        p = self.params
        if p.chunk_frames and p.chunk_overlap >= p.chunk_frames:
            raise ValueError(f"chunk_overlap = {p.chunk_overlap} must be smaller than chunk_frames = {p.chunk_frames}")
        if p.dense == "mvs" and p.backend != "sfm":
            raise ValueError(
                f"dense 'mvs' runs on the posed colour frames after backend 'sfm'; backend {p.backend!r} already "
                "gives a dense cloud (use dense: none)"
            )
        if p.mvs_window % 2 == 0:
            raise ValueError(f"mvs_window = {p.mvs_window} must be odd")
        if p.mvs_consistent_views > p.mvs_sources:
            raise ValueError(
                f"mvs_consistent_views = {p.mvs_consistent_views} cannot exceed mvs_sources = {p.mvs_sources} "
                "(the neighbours checked)"
            )
        if p.backend == "feedforward" and not p.model:
            raise ValueError("backend 'feedforward' needs model = 'package.module:factory' (and local weights)")

    def check_inputs(self, types: Mapping[str, PortType]) -> list[str]:
        got = types.get("frames")
        if self.params.backend == "rgbd" and got is not None and not RGBD_FRAMES.accepts(got):
            return [
                f"backend 'rgbd' needs depth and poses (RGBDFrames) but the input is {got}; use backend "
                "'sfm' or 'feedforward' for plain video"
            ]
        return []

    def fields(self) -> FieldEffect:
        return effect(writes=["coord", "color"])

    def run(self, rng: np.random.Generator, frames: Frames) -> dict[str, Any]:
        from pcdag.nodes.reconstruction.parts.chunks import reconstruct_in_chunks

        result = reconstruct_in_chunks(frames, backend(self.params.backend), self.params, rng)
        if self.params.dense == "mvs":
            from pcdag.nodes.reconstruction.parts.mvs import after_backend

            result = after_backend(frames, result, self.params)
        cloud = result.cloud
        carried = {k: v for k, v in frames.meta.items() if k != "report"}  # scene, split, room, segment, ...
        cloud.meta.update(carried)
        report = cloud.meta.setdefault("report", {})
        report.update(frames.meta.get("report", {}))  # e.g. what SplitScenes found
        report["Reconstruct"] = {"backend": self.params.backend, **result.report}
        cloud.meta["scale"] = report["Reconstruct"]["scale"] = scale_provenance(self.params, frames)
        up = mean_camera_up(result.poses)  # gravity prior for AlignZUp: the registered cameras' mean image up
        if up is not None:
            cloud.meta[CAMERA_UP] = [round(float(v), 6) for v in up[0]]
            cloud.meta[CAMERA_UP_AGREEMENT] = round(up[1], 6)
            report["Reconstruct"] |= {
                CAMERA_UP: cloud.meta[CAMERA_UP],
                CAMERA_UP_AGREEMENT: cloud.meta[CAMERA_UP_AGREEMENT],
            }
        return {"cloud": cloud}


def scale_provenance(params: Any, frames: Frames) -> dict[str, str]:
    """``meta["scale"]`` of a reconstruction: ``metric`` when depth (rgbd) or known camera poses (sfm moves its
    model onto them by a similarity) fix metres, else ``arbitrary`` (scale-free SfM, a network's own units)."""
    if params.backend == "rgbd":
        return {"units": "metric", "from": "depth"}
    if params.backend == "sfm" and params.use_known_cameras and frames.poses is not None:
        return {"units": "metric", "from": "known camera poses"}
    return {"units": "arbitrary", "from": f"{params.backend} without metric depth or poses"}
