"""The un-augmented view of a whole scene that evaluation and feature extraction feed a backbone.

It is the training view without the randomness: the points of a grid-sampled scene (``GridSample`` in test mode
keeps the point nearest each voxel centre and the inverse map back to every original point), centre-shifted as
``view_transform.centre_shift`` does (x, y middle and z minimum of the bounding box at the origin), colour / 255
and the normals, as the 9 features (coord, colour, normal) the multi-view generator makes.

A scene without colour gets mid-grey (0.5) and says so in ``meta``; one without normals must have them estimated
first (``EstimateNormals``), because a backbone pre-trained on normals sees garbage without them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pcdag.graphs.batch import ViewSample
from pcdag.graphs.cloud import CloudError, PointCloud
from pcdag.nodes.views.parts.view_transform import centre_shift
from pcdag.ops.grid import grid_eval_rows

GREY = 0.5  # colour feature of scenes without colour


def grid_eval_cloud(
    fields: dict[str, np.ndarray], grid_size: float, meta: dict, where: str
) -> tuple[PointCloud, np.ndarray]:
    """The scene of ``fields`` grid-sampled (``grid_eval_rows``) as a cloud, and ``inverse`` [N]: every original
    point's row of it (to give each point its voxel's prediction)."""
    rows, inverse = grid_eval_rows(fields["coord"], grid_size, where)
    return PointCloud({k: v[rows] for k, v in fields.items()}, meta), inverse


def eval_view(cloud: PointCloud, labels: Sequence[str] = (), where: str = "") -> dict[str, np.ndarray]:
    """One view dict (``coord``, ``origin_coord``, ``feat`` [n, 9], and each of ``labels`` as int64) of ``cloud``."""
    if "normal" not in cloud:
        raise CloudError(f"{where}: the scene has no normals; estimate them first (EstimateNormals)")
    coord = cloud["coord"].astype(np.float32, copy=False)  # [n, 3]
    shifted = (coord - centre_shift(coord.T).astype(np.float32)).astype(np.float32)  # [n, 3]
    if "color" in cloud:
        rgb = cloud["color"].astype(np.float32) / (255.0 if cloud["color"].dtype == np.uint8 else 1.0)  # [n, 3]
    else:
        rgb = np.full_like(coord, GREY)
    view = {
        "coord": shifted,
        "origin_coord": coord,
        "feat": np.concatenate([shifted, rgb, cloud["normal"].astype(np.float32)], axis=1),  # [n, 9]
    }
    for name in labels:
        if name not in cloud:
            raise CloudError(f"{where}: the scene has no {name!r} labels (it has {', '.join(sorted(cloud))})")
        view[name] = cloud[name].astype(np.int64)
    return view


def eval_sample(cloud: PointCloud, labels: Sequence[str] = ()) -> ViewSample:
    """``eval_view`` of ``cloud`` as a one-view ``ViewSample`` (collate it with ``collate_views``)."""
    scene = str(cloud.meta.get("scene", "?"))
    view = eval_view(cloud, labels, f"scene {scene!r}")
    return ViewSample(scene, [view], [], {"n_points": len(cloud), "grey": "color" not in cloud})
