"""Per-point features of a trained backbone for a new point cloud (``pcdag extract CHECKPOINT FILE``).

    read_points       a PLY, .npy, .npz or Pointcept scene folder -> PointCloud (``pcdag.datasets.points_file``)
    extract_features  grid-sample, (tile), forward the backbone at full resolution, blend, map back -> [N, C]
    write_outputs     features.npy, coord.npy, pca.png (and features-pca.ply), atomically

The backbone is rebuilt by its node with the node's ``feature_params`` (features for every input point; the
backbone protocol, ``pcdag.graphs.backbone``) and sees the un-augmented view it was trained on: the
``eval_sample`` of the loader node that fed the checkpoint graph's training step, as evaluation uses it
(``pcdag.runtime.evaluate``). A foreign file carries no graph: the registered view node type that makes
evaluation views (``eval_sample``; the one that sets ``eval_default`` when several do) makes them, with its
default parameters. The grid sampling keeps the point
nearest each voxel centre (``pcdag.ops.grid``); missing normals are estimated on the sampled points
(``pcdag.ops.normals``, k = 32, flipped toward the centroid). The backbone voxelises the sampled points at its own
grid size; ``grid_size`` here only picks the points (keep them equal).

Large scenes are cut into square x-y tiles of edge ``tile`` whose neighbours overlap by ``overlap``, run one at a
time (each centre-shifted on its own, as the training crops were). A point's features are the average of its
tiles' features weighted by ``tile_weight``: ``min(1, d / overlap)`` with ``d`` the x-y distance to the tile's
nearest border, so weights fall linearly to 0 at a border and two neighbours cross-fade across their overlap (their
weights sum to 1 there). Weights are normalised per point before blending, so a point in one tile gets exactly that
tile's features. The tile grid is centred on the scene and padded so every point lies strictly inside some tile.

Every tile's forward starts from ``torch.manual_seed(seed)`` (in a forked RNG: the caller's is left alone), because
a backbone may draw from torch's RNG even in eval mode (e.g. shuffled serialisation orders).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pcdag.atomic import atomic_save_npy
from pcdag.datasets.ply import write_ply
from pcdag.datasets.points_file import read_points
from pcdag.graphs import registry
from pcdag.graphs.batch import ViewSample, collate_points
from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.ops.grid import grid_eval_rows
from pcdag.ops.normals import estimate_normals, orient_toward
from pcdag.ops.pca import pca_fit, render_scene
from pcdag.runtime.devices import local_device

GREY = 0.5  # the colour written to pca.png for clouds without colour
MakeSample = Callable[[PointCloud], ViewSample]

NORMAL_NEIGHBOURS = 32


# -- tiles ------------------------------------------------------------------------------------------------------


def _check_tiling(tile: float, overlap: float) -> None:
    if not (tile > 0 and 0 <= overlap < tile):
        raise ValueError(f"tiles need tile > overlap >= 0 (metres), got tile={tile}, overlap={overlap}")


def plan_tiles(xy: np.ndarray, tile: float, overlap: float) -> np.ndarray:
    """``[T, 4]`` float64 boxes ``(x0, y0, x1, y1)`` of edge ``tile``, neighbours overlapping by ``overlap``,
    centred on the points ``xy`` ``[M, 2]`` and covering their bounding box padded by ``tile / 1000``."""
    _check_tiling(tile, overlap)
    xy = np.asarray(xy, dtype=np.float64)  # [M, 2]
    pad, stride = tile / 1000.0, tile - overlap
    low, high = xy.min(axis=0) - pad, xy.max(axis=0) + pad  # [2] each
    extent = high - low  # [2]
    counts = [max(1, math.ceil((e - tile) / stride) + 1) if e > tile else 1 for e in extent]
    starts = []
    for axis, n in enumerate(counts):
        span = (n - 1) * stride + tile
        starts.append(low[axis] - (span - extent[axis]) / 2 + stride * np.arange(n))  # [n]
    x0, y0 = (a.ravel() for a in np.meshgrid(starts[0], starts[1], indexing="ij"))  # [T] each
    return np.stack([x0, y0, x0 + tile, y0 + tile], axis=1)  # [T, 4]


def border_distance(xy: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``[n]`` signed x-y distance of each point to the nearest border of ``box``: >= 0 inside, < 0 outside."""
    xy = np.asarray(xy, dtype=np.float64)  # [n, 2]
    return np.minimum.reduce([xy[:, 0] - box[0], box[2] - xy[:, 0], xy[:, 1] - box[1], box[3] - xy[:, 1]])


def tile_members(xy: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``[n]`` bool: the points of the closed box ``box`` (those the tile's forward sees)."""
    return border_distance(xy, box) >= 0


def tile_weight(xy: np.ndarray, box: np.ndarray, overlap: float) -> np.ndarray:
    """``[n]`` float64 blending weight: ``min(1, d / overlap)`` inside (d = distance to the nearest border), 0
    outside; with ``overlap = 0`` 1 inside."""
    d = border_distance(xy, box)  # [n]
    if overlap <= 0:
        w = np.ones_like(d)
    else:
        with np.errstate(over="ignore"):  # an overlap near 0: d / overlap overflows to inf, clipped to 1
            w = np.clip(d / overlap, 0.0, 1.0)
    return np.where(d >= 0, w, 0.0)


def blend_plan(
    xy: np.ndarray, max_points: int, tile: float, overlap: float, where: str = ""
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per tile to run, ``(members [m] int64, share [m] float32)``: its points of ``xy`` ``[M, 2]`` and their
    normalised blending weights (summing to 1 over a point's tiles; exactly 1 for a point in one tile). One tile of
    all points when ``M <= max_points``; empty tiles are left out."""
    _check_tiling(tile, overlap)
    if len(xy) <= max_points:
        return [(np.arange(len(xy)), np.ones(len(xy), dtype=np.float32))]
    tiles = []
    for box in plan_tiles(xy, tile, overlap):
        members = np.flatnonzero(tile_members(xy, box))  # [m]
        if len(members):
            tiles.append((members, tile_weight(xy[members], box, overlap)))
    total = np.zeros(len(xy), dtype=np.float64)  # [M]
    for members, weight in tiles:
        total[members] += weight
    if not (total > 0).all():
        raise RuntimeError(f"{where}: the tiling left {int((total <= 0).sum())} points with no weight (a bug)")
    shares = [(members, (weight / total[members]).astype(np.float32)) for members, weight in tiles]
    return [(members, share) for members, share in shares if share.any()]  # a tile of border points only adds 0


# -- features ---------------------------------------------------------------------------------------------------


def fill_normals(cloud: PointCloud, where: str) -> PointCloud:
    """Estimate ``normal`` (k = 32 nearest neighbours, flipped toward the centroid) where the cloud has none."""
    if "normal" in cloud:
        return cloud
    coord = cloud["coord"]  # [M, 3]
    if len(coord) < 3:
        raise CloudError(f"{where}: {len(coord)} point(s) after grid sampling; estimating normals needs at least 3")
    normal = estimate_normals(coord, min(NORMAL_NEIGHBOURS, len(coord)))  # [M, 3]
    cloud["normal"] = orient_toward(normal, coord, coord.astype(np.float64).mean(axis=0))
    return cloud


def _forward(
    module: torch.nn.Module, cloud: PointCloud, device: torch.device, seed: int, where: str, make_sample: MakeSample
) -> np.ndarray:
    """``[m, C]`` float32 features of every point of ``cloud`` (its evaluation view: one sample)."""
    sample = make_sample(cloud)
    batch = collate_points(list(sample.global_views), f" ({where})").to(device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    with torch.random.fork_rng(devices=[]), amp:
        torch.manual_seed(seed)
        encoded = module(batch)
    return encoded.at_points().float().cpu().numpy()  # [m, C]


def default_view_maker() -> tuple[MakeSample, str]:
    """``(eval_sample, what)`` of the registered view node type that makes evaluation views (the one that sets
    ``eval_default`` when several have ``eval_sample``), built with its default parameters: the views for a
    backbone out of a file that carries no graph."""
    found = []
    for name in registry.names():
        if registry.role(name) != "views":
            continue
        cls = registry.get(name)
        if cls is not None and callable(getattr(cls, "eval_sample", None)):
            found.append(cls)
    if len(found) > 1:
        found = [c for c in found if getattr(c, "eval_default", False)] or found
    if len(found) != 1:
        names = ", ".join(c.type_name() for c in found) or "none"
        raise ValueError(
            f"cannot tell which node makes evaluation views for weights without a graph (view nodes with "
            f"eval_sample: {names}; exactly one should set eval_default = True)"
        )
    return found[0]().eval_sample, f"{found[0].type_name()} with default parameters"


def view_maker(plan: Any) -> tuple[MakeSample, str]:
    """``(eval_sample, what)``: that of the loader node feeding ``plan``'s training step, as evaluation uses it;
    without a plan (a foreign file) ``default_view_maker``."""
    if plan is None:
        return default_view_maker()
    from pcdag.runtime.evaluate import sample_maker

    entry = plan.device.entry[0] if plan.device is not None and plan.device.entry else "-"
    return sample_maker(plan), f"node {entry!r} of the checkpoint's graph"


def _subset(cloud: PointCloud, index: np.ndarray) -> PointCloud:
    return PointCloud({k: cloud[k][index] for k in ("coord", "color", "normal") if k in cloud}, cloud.meta)


def extract_with_tiles(
    module: torch.nn.Module,
    cloud: PointCloud,
    grid_size: float = 0.02,
    max_points: int = 200_000,
    tile: float = 6.0,
    overlap: float = 1.0,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
    make_sample: MakeSample | None = None,
) -> tuple[np.ndarray, int]:
    """``extract_features`` and the number of tiles it ran."""
    from tqdm.auto import tqdm

    if make_sample is None:
        make_sample = default_view_maker()[0]
    where = str(cloud.meta.get("path", cloud.meta.get("scene", "?")))
    if max_points < 1 or grid_size <= 0:
        raise ValueError(f"{where}: max_points must be >= 1 and grid_size > 0, got {max_points}, {grid_size}")
    device = torch.device(device)
    rows, inverse = grid_eval_rows(cloud["coord"], grid_size, where)  # [M], [N]
    sampled = fill_normals(_subset(cloud, rows), where)  # M points
    tiles = blend_plan(sampled["coord"][:, :2], max_points, tile, overlap, where)
    module.to(device).eval()
    out: np.ndarray | None = None
    bar = tqdm(tiles, desc="tiles", unit="tile", disable=not progress or len(tiles) < 2)
    with torch.no_grad():
        for members, share in bar:
            feat = _forward(module, _subset(sampled, members), device, seed, where, make_sample)  # [m, C]
            if out is None:
                out = np.zeros((len(sampled), feat.shape[1]), dtype=np.float32)  # [M, C]
            out[members] += feat * share[:, None]
    return out[inverse], len(tiles)  # [N, C]


def extract_features(
    module: torch.nn.Module,
    cloud: PointCloud,
    grid_size: float = 0.02,
    max_points: int = 200_000,
    tile: float = 6.0,
    overlap: float = 1.0,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
    make_sample: MakeSample | None = None,
) -> np.ndarray:
    """``[N, C]`` float32 features of every point of ``cloud`` from ``module`` (a backbone at full resolution, e.g.
    ``load_backbone(..., features=True)``) on the views of ``make_sample`` (default: ``default_view_maker``); tiled
    when the grid-sampled scene has more than ``max_points`` points (see the module docstring). Moves ``module`` to
    ``device`` and into eval mode."""
    return extract_with_tiles(module, cloud, grid_size, max_points, tile, overlap, device, seed, progress, make_sample)[
        0
    ]


# -- outputs ----------------------------------------------------------------------------------------------------


def write_outputs(
    out_dir: str | Path, features: np.ndarray, cloud: PointCloud, pca_ply: bool, dtype: str = "float16"
) -> list[Path]:
    """Write ``features.npy`` ([N, C] in ``dtype``), ``coord.npy`` ([N, 3] float32), ``pca.png`` (input colours
    beside the PCA colours) and, with ``pca_ply``, ``features-pca.ply`` (xyz + PCA colours); returns the paths."""
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be float16 or float32, got {dtype!r}")
    n = len(cloud)
    if features.ndim != 2 or len(features) != n:
        raise ValueError(f"features have shape {list(features.shape)}, expected [{n}, C] (one row per point)")
    limit = float(np.finfo(np.float16).max)  # 65504
    if dtype == "float16" and features.size and max(-float(features.min()), float(features.max())) > limit:
        raise ValueError(f"features exceed float16's range (|value| > {limit:g}); write them with dtype float32")
    stored = features.astype(dtype, copy=False)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    coord = cloud["coord"]  # [N, 3]
    atomic_save_npy(out / "features.npy", stored)
    atomic_save_npy(out / "coord.npy", coord)
    written = [out / "features.npy", out / "coord.npy"]
    rgb = pca_fit(features).colours(features)  # [N, 3] uint8
    if pca_ply:
        write_ply(out / "features-pca.ply", {"coord": coord, "color": rgb})
        written.append(out / "features-pca.ply")
    colour = cloud["color"] if "color" in cloud else np.full((n, 3), round(GREY * 255), dtype=np.uint8)
    title = f"{cloud.meta.get('scene', '')}: {n:,} points, {features.shape[1]} channels"
    written.append(render_scene(coord, [("input colours", colour), ("PCA of features", rgb)], out / "pca.png", title))
    return written


# -- command line -----------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``pcdag extract``."""
    parser.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="a run directory, checkpoint or export")
    parser.add_argument("file", type=Path, metavar="FILE", help=".ply, .npy, .npz or a Pointcept scene folder")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default features/<FILE's stem>)")
    parser.add_argument("--node", default=None, help="the backbone node of a training checkpoint (default: the one)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: CUDA when present")
    parser.add_argument("--grid-size", type=float, default=0.02, help="grid sampling voxel edge, m (default 0.02)")
    parser.add_argument("--max-points", type=int, default=200_000, help="tile scenes with more sampled points")
    parser.add_argument("--tile", type=float, default=6.0, help="tile edge in x-y, m (default 6)")
    parser.add_argument("--overlap", type=float, default=1.0, help="overlap of neighbouring tiles, m (default 1)")
    parser.add_argument("--pca-ply", action="store_true", help="also write features-pca.ply (xyz + PCA colours)")
    parser.add_argument("--dtype", default="float16", choices=("float16", "float32"), help="of features.npy")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """``pcdag extract``: load, read, extract, write; print what was written. Exit status 1 on bad input."""
    from pcdag.graphs.problems import GraphError
    from pcdag.runtime.backbone import open_backbone

    start = time.perf_counter()
    file = Path(args.file)
    out = args.out if args.out is not None else Path("features") / (file.stem if file.suffix else file.name)
    try:
        device = local_device(args.device)
        loaded = open_backbone(args.checkpoint, node=args.node, features=True)
        make_sample, views = view_maker(loaded.plan)
        cloud = read_points(file)
        features, tiles = extract_with_tiles(
            loaded.module.to(device), cloud, args.grid_size, args.max_points, args.tile, args.overlap, device,
            progress=not args.quiet, make_sample=make_sample,
        )  # fmt: skip
        written = write_outputs(out, features, cloud, args.pca_ply, args.dtype)
    except (OSError, ValueError, KeyError, GraphError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start
    print(
        f"{file}: {len(cloud):,} points, {features.shape[1]} channels of {loaded.node.type_name()}, views of {views}, "
        f"{tiles} tile(s), {seconds:.1f} s on {device}; "
        f"wrote {', '.join(str(p) for p in written)}"
    )
    return 0
