"""``Frames``: the runtime value of ``Frames`` ports (``Video`` and ``RGBDFrames`` are sub-types).

A sequence of RGB frames of one scene and whatever is known about its cameras: depth (RGB-D), poses and
intrinsics (known cameras), timestamps. Reconstruction nodes turn Frames into a ``PointCloud``.
Camera convention everywhere: OpenCV (x right, y down, z forward), poses camera-to-world.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np


@attrs.define(eq=False)
class Frames:
    colors: np.ndarray  # [F, H, W, 3] uint8
    frame_ids: list[str]
    timestamps: np.ndarray | None = None  # [F] float64 seconds
    depths: np.ndarray | None = None  # [F, H, W] float32 metres, 0 = no measurement
    poses: np.ndarray | None = None  # [F, 4, 4] float32 camera-to-world
    intrinsics: np.ndarray | None = None  # [3, 3] float32, one pinhole camera for all frames
    meta: dict[str, Any] = attrs.field(factory=dict)

    def __len__(self) -> int:
        return len(self.frame_ids)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return int(self.colors.shape[1]), int(self.colors.shape[2])

    def subset(self, index: np.ndarray | slice) -> Frames:
        """Frames ``index`` (views where numpy gives views); meta is copied (shallow)."""
        ids = np.asarray(self.frame_ids, dtype=object)[index].tolist()
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return attrs.evolve(  # keeps the class: RGBDFrames stays RGBDFrames
            self,
            colors=self.colors[index],
            frame_ids=ids,
            timestamps=pick(self.timestamps),
            depths=pick(self.depths),
            poses=pick(self.poses),
            meta=dict(self.meta),
        )

    def validate(self, where: str = "frames") -> Frames:
        """Check dtypes, matching shapes and finite values of whatever is present; raise ``ValueError``."""
        f = len(self.frame_ids)
        c = self.colors
        problems = []
        if f == 0:
            problems.append("no frames")
        if c.dtype != np.uint8 or c.ndim != 4 or c.shape[0] != f or c.shape[3] != 3:
            problems.append(f"colors are {c.dtype} {list(c.shape)}, expected uint8 [{f}, H, W, 3]")
        t, d, p, k = self.timestamps, self.depths, self.poses, self.intrinsics
        if t is not None and (t.shape != (f,) or not np.isfinite(t).all()):
            problems.append(f"timestamps must be {f} finite seconds, got shape {list(t.shape)}")
        if d is not None:
            if d.dtype != np.float32 or d.shape != c.shape[:3]:
                problems.append(f"depths are {d.dtype} {list(d.shape)}, expected float32 {list(c.shape[:3])}")
            elif not (np.isfinite(d).all() and (d >= 0).all()):
                problems.append("depths must be finite and non-negative")
        if p is not None:
            if p.dtype != np.float32 or p.shape != (f, 4, 4):
                problems.append(f"poses are {p.dtype} {list(p.shape)}, expected float32 [{f}, 4, 4]")
            elif not np.isfinite(p).all():
                bad = [self.frame_ids[i] for i in np.flatnonzero(~np.isfinite(p).all(axis=(1, 2)))]
                problems.append(f"poses of {', '.join(bad[:5])} are not finite")
        if k is not None and (
            k.dtype != np.float32 or k.shape != (3, 3) or not np.isfinite(k).all() or k[0, 0] <= 0 or k[1, 1] <= 0
        ):
            problems.append(f"intrinsics must be a finite float32 [3, 3] with positive focal lengths, got {k!r}")
        if problems:
            raise ValueError(f"{where}: " + "; ".join(problems))
        return self
