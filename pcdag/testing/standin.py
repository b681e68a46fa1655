"""A tiny stand-in for π³ / VGGT-style point-map networks, for testing the ``feedforward`` backend's plumbing.

THIS IS NOT A RECONSTRUCTION MODEL. It is a plumbing check only: a few randomly initialised convolutions that
obey the network contract of ``pcdag.nodes.reconstruction.parts.feedforward`` (input, output names, shapes, frames), so
that frame selection, resizing, confidence and edge filtering, weights loading, chunking and stitching can be
tested without real weights. Its "geometry" has nothing to do with the images' content.

What it computes, deterministically for a given ``seed`` (and state dict):
- a per-pixel depth ``1 + softplus(conv(rgb, pixel coordinates))`` and a confidence logit from the same convs;
- a fixed pinhole (focal ``focal`` x image width) turning depth into camera-frame ``local_points``;
- a camera trajectory that turns by ``turn`` radians about y and moves by ``step`` per frame, frame 0 = world,
  so the poses of any run of consecutive frames agree with those of the whole sequence up to a rigid motion;
- like π³, outputs normalised by one scale per call (mean depth 1), so separate chunks differ by a similarity.

Factories usable as ``Reconstruct(backend="feedforward", model=...)``:
``pcdag.testing.standin:make_standin`` (returns poses) and ``pcdag.testing.standin:make_standin_without_poses``.
"""

from __future__ import annotations

import torch
from torch import nn


class StandInPointMapNet(nn.Module):
    """Plumbing-check network obeying the feedforward contract; NOT a real reconstruction model."""

    def __init__(self, seed: int = 0, return_poses: bool = True) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.features = nn.Conv2d(5, 8, 3, padding=1)  # rgb + 2 pixel-coordinate channels
        self.head = nn.Conv2d(8, 2, 3, padding=1)  # depth, confidence logit
        with torch.no_grad():
            for p in (*self.features.parameters(), *self.head.parameters()):
                p.copy_(0.3 * torch.randn(p.shape, generator=generator))
        self.focal = nn.Parameter(torch.tensor(0.8))  # in image widths
        self.step = nn.Parameter(torch.tensor([0.04, 0.0, 0.03]))  # camera motion per frame, camera axes
        self.turn = nn.Parameter(torch.tensor(0.05))  # yaw per frame, radians
        self.return_poses = return_poses

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.ndim != 5 or images.shape[0] != 1 or images.shape[2] != 3 or images.dtype != torch.float32:
            raise ValueError(f"stand-in expects float32 [1, F, 3, H, W], got {images.dtype} {list(images.shape)}")
        if images.min() < 0 or images.max() > 1:
            raise ValueError("stand-in expects images in [0, 1]")
        _, f, _, h, w = images.shape
        on = {"dtype": torch.float32, "device": images.device}
        v, u = torch.meshgrid(torch.arange(h, **on), torch.arange(w, **on), indexing="ij")
        x_over_z = (u - (w - 1) / 2) / (self.focal * w)  # [H, W]
        y_over_z = (v - (h - 1) / 2) / (self.focal * w)
        grid = torch.stack([x_over_z, y_over_z]).expand(f, 2, h, w)  # [F, 2, H, W]
        raw = self.head(torch.relu(self.features(torch.cat([images[0], grid], 1))))  # [F, 2, H, W]
        depth = 1.0 + nn.functional.softplus(raw[:, 0])  # [F, H, W]
        local = torch.stack([x_over_z * depth, y_over_z * depth, depth], -1)  # [F, H, W, 3]
        poses = self._trajectory(f, images.device)  # [F, 4, 4]
        scale = depth.mean()  # one normalisation per call, like a scale-free network
        local = local / scale
        poses = torch.cat([poses[:, :3, :3], poses[:, :3, 3:] / scale], 2)
        poses = torch.cat([poses, torch.tensor([[[0.0, 0.0, 0.0, 1.0]]], **on).expand(f, 1, 4)], 1)
        points = torch.einsum("fij,fhwj->fhwi", poses[:, :3, :3], local) + poses[:, None, None, :3, 3]
        out = {"points": points[None], "local_points": local[None], "conf": raw[None, :, 1]}
        if self.return_poses:
            out["camera_poses"] = poses[None]
        return out

    def _trajectory(self, f: int, device: torch.device) -> torch.Tensor:
        """Camera-to-world poses ``[F, 4, 4]``: frame i turned by i·turn about y, moved by the previous steps."""
        on = {"dtype": torch.float32, "device": device}
        angle = self.turn * torch.arange(f, **on)  # [F]
        c, s, zero, one = torch.cos(angle), torch.sin(angle), torch.zeros(f, **on), torch.ones(f, **on)
        rotation = torch.stack([c, zero, s, zero, one, zero, -s, zero, c], -1).reshape(f, 3, 3)  # [F, 3, 3]
        moves = rotation @ self.step  # [F, 3] each frame's step in world axes
        centres = torch.cumsum(moves, 0) - moves  # [F, 3] centre i = sum of the steps before it
        top = torch.cat([rotation, centres[:, :, None]], 2)  # [F, 3, 4]
        return torch.cat([top, torch.tensor([[[0.0, 0.0, 0.0, 1.0]]], **on).expand(f, 1, 4)], 1)


def make_standin() -> StandInPointMapNet:
    """The plumbing-check stand-in (seed 0) returning points, local points, confidence and camera poses."""
    return StandInPointMapNet(seed=0, return_poses=True)


def make_standin_without_poses() -> StandInPointMapNet:
    """The same stand-in without ``camera_poses`` (chunks are then stitched on per-pixel points)."""
    return StandInPointMapNet(seed=0, return_poses=False)
