"""The cameras' mean image-up direction: a gravity prior that reconstruction writes and alignment reads.

Hand-held and RGB-D cameras are mostly upright, so the mean of their image-up directions (minus the camera y axis
in OpenCV axes) points roughly against gravity, off by the cameras' mean pitch and roll. A reconstruction stores it
in the cloud's ``meta`` under ``CAMERA_UP`` (unit ``[3]`` in the cloud's frame) with ``CAMERA_UP_AGREEMENT`` (the
length of the mean of the unit up vectors: 1 when every camera shares one up direction, near 0 when they cancel).
A node that rotates the cloud rotates ``meta[CAMERA_UP]`` with it.
"""

from __future__ import annotations

import numpy as np

CAMERA_UP = "camera_up"
CAMERA_UP_AGREEMENT = "camera_up_agreement"


def mean_camera_up(poses: np.ndarray) -> tuple[np.ndarray, float] | None:
    """(unit mean image-up direction [3], agreement 0..1) of the finite camera-to-world ``poses`` ``[F, 4, 4]``
    (OpenCV axes: image up is minus the camera y axis), or None without a finite pose or when the ups cancel."""
    poses = np.asarray(poses, np.float64)
    ok = np.isfinite(poses).all(axis=(1, 2))  # [F]
    if not ok.any():
        return None
    ups = -poses[ok, :3, 1]  # [R, 3] camera y axes in the world, negated
    length = np.linalg.norm(ups, axis=1, keepdims=True)
    ups = ups[length[:, 0] > 1e-12] / length[length[:, 0] > 1e-12]
    mean = ups.mean(axis=0) if len(ups) else np.zeros(3)
    agreement = float(np.linalg.norm(mean))
    if agreement < 1e-9:
        return None
    return mean / agreement, agreement
