"""Serialisation of voxel coordinates into space-filling-curve codes (z-order, Hilbert, transposed variants).

Point Transformer V3 orders the points of a batch along a space-filling curve and cuts the order into patches.
A code packs the sample and the curve position into one int64:

    code = (batch << 3 * depth) | curve(grid)        # curve over `depth` bits per axis, 3 * depth bits in all

so sorting by code groups points by sample first (the batch is the most significant part) and then along the curve.

Orders (``ORDERS``):
  * ``"z"`` — Morton order: bit i of x, y, z becomes bits 3i+2, 3i+1, 3i of the curve (x most significant in
    each bit triple).
  * ``"hilbert"`` — Hilbert order by Skilling's transpose algorithm ("Programming the Hilbert curve", 2004): the
    coordinates are turned into the Hilbert index in transposed form, whose bits are then interleaved like
    Morton's (x first). Consecutive positions on a full 2^depth cube are face-adjacent voxels.
  * ``"z-trans"``, ``"hilbert-trans"`` — the same curves with x and y swapped first.

Everything is vectorised over points with torch integer ops and works on CPU and CUDA int64 tensors. On a GPU every
op is a kernel launch, and the host time of launching them was what the training step waited on (issue 6), so
``encode_orders`` computes all orders of a level in one pass over stacked ``[R, N]`` rows: the Morton interleave by
five shift-and-mask steps per axis (not a loop over bits), the Hilbert rows through Skilling's loop together, and
its final Gray-code prefix by log-step shifts. ``decode`` is the exact inverse of ``encode`` (used by the tests).

API (the PTv3 model relies on exactly these signatures):

    ORDERS = ("z", "z-trans", "hilbert", "hilbert-trans")
    encode(grid_coord: LongTensor [N, 3] >= 0, batch: LongTensor [N], order: str, depth: int) -> LongTensor [N]
    encode_orders(grid_coord, batch, orders: sequence of str, depth) -> LongTensor [R, N]   # = stacked encode
    decode(code: LongTensor [N], order: str, depth: int) -> (grid_coord [N, 3], batch [N])
    depth_for(grid_coord: LongTensor [N, 3]) -> int     # bit length of (max grid + 1), at most 16
    grid_max(grid_coord) -> int;  depth_of(grid_max: int) -> int   # the same in two steps (one host read)
"""

from __future__ import annotations

import torch

from pcdag.nodes.backbones.ptv3.config import ORDERS

MAX_DEPTH = 16


def depth_for(grid_coord: torch.Tensor) -> int:
    """Bits per axis needed for these grid coords: bit length of (max grid + 1), as the reference does (≤ 16).
    Also checks them (>= 0): the one host read a level's serialisation needs."""
    return depth_of(grid_max(grid_coord))


def grid_max(grid_coord: torch.Tensor) -> int:
    """The largest value of these grid coords, checked (integers >= 0): one host read. A pooled level's is this
    value shifted right once per halving of the grid, with no read."""
    return _check_grid(grid_coord)


def depth_of(top: int) -> int:
    """``depth_for`` of grid coords whose largest value is ``top``."""
    depth = (int(top) + 1).bit_length()
    if depth > MAX_DEPTH:
        raise ValueError(
            f"grid coords reach {top}, which needs depth {depth} > {MAX_DEPTH} bits per axis; use a coarser grid size"
        )
    return depth


def encode(grid_coord: torch.Tensor, batch: torch.Tensor, order: str, depth: int, check: bool = True) -> torch.Tensor:
    """Codes [N] int64 = (batch << 3*depth) | curve position of grid_coord [N, 3] for `order`.

    ``check=False`` skips the range checks of the grid and batch values, each a device-to-host read (a sync on
    a GPU): for callers whose values are valid by construction (the backbone checks a level once, in
    ``depth_for``). Shapes and types are always checked."""
    return encode_orders(grid_coord, batch, (order,), depth, check=check)[0]


def encode_orders(
    grid_coord: torch.Tensor, batch: torch.Tensor, orders: tuple[str, ...], depth: int, check: bool = True
) -> torch.Tensor:
    """``torch.stack([encode(grid_coord, batch, o, depth) for o in orders])`` [R, N], in one stacked pass."""
    for order in orders:
        _check_order(order)
    _check_depth(depth)
    _check_grid(grid_coord, depth, values=check)
    batch = _check_batch(batch, grid_coord.shape[0], depth, values=check)
    x, y, z = grid_coord.to(torch.int64).unbind(1)  # [N] each
    axes = [[y, x, z] if o.endswith("-trans") else [x, y, z] for o in orders]  # per order: its x, y, z [N]
    hilbert = [i for i, o in enumerate(orders) if o.startswith("hilbert")]
    if hilbert:  # every Hilbert order through Skilling's loop together, as [H, N] rows
        stacked = [torch.stack([axes[i][a] for i in hilbert]) for a in range(3)]  # 3 x [H, N]
        done = _hilbert_transpose(*stacked, depth)  # 3 x [H, N]
        for j, i in enumerate(hilbert):
            axes[i] = [done[a][j] for a in range(3)]
    spread = _spread_bits(torch.stack([torch.stack(order_axes) for order_axes in axes], dim=1))  # [3, R, N]
    return (batch << (3 * depth)) | (spread[0] << 2) | (spread[1] << 1) | spread[2]  # [R, N]


# Four shift-and-mask steps move bit i of a value < 2**16 to bit 3i: each splits the bits into twice as many
# groups (of 8, 4, 2, then 1 bit) spaced three times their width apart, the mask keeping every group in its place.
# The Morton code is then x << 2 | y << 1 | z: x most significant in each bit triple.
_SPREAD_STEPS = (
    (16, 0x001F_0000_FF00_00FF),
    (8, 0x100F_00F0_0F00_F00F),
    (4, 0x10C3_0C30_C30C_30C3),
    (2, 0x1249_2492_4924_9249),
)


def _spread_bits(v: torch.Tensor) -> torch.Tensor:
    """Bit i of every value (< 2**16) moved to bit 3i; elementwise, any shape."""
    v = v & 0xFFFF
    for shift, mask in _SPREAD_STEPS:
        v = (v | (v << shift)) & mask
    return v


def decode(code: torch.Tensor, order: str, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of `encode`: codes [N] -> (grid_coord [N, 3], batch [N])."""
    _check_order(order)
    _check_depth(depth)
    if code.dtype != torch.int64 or code.dim() != 1:
        raise ValueError(f"codes must be a 1-D int64 tensor, got {code.dtype} of shape {tuple(code.shape)}")
    if code.numel() and int(code.min()) < 0:
        raise ValueError("codes must be >= 0 (negative codes were never produced by encode)")
    batch = code >> (3 * depth)  # [N]
    x, y, z = _deinterleave(code & ((1 << (3 * depth)) - 1), depth)
    if order.startswith("hilbert"):
        x, y, z = _hilbert_untranspose(x, y, z, depth)
    if order.endswith("-trans"):
        x, y = y, x
    return torch.stack([x, y, z], dim=1), batch


def _deinterleave(code: torch.Tensor, depth: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y, z = (torch.zeros_like(code) for _ in range(3))
    for i in range(depth):
        x |= ((code >> (3 * i + 2)) & 1) << i
        y |= ((code >> (3 * i + 1)) & 1) << i
        z |= ((code >> (3 * i)) & 1) << i
    return x, y, z


def _hilbert_transpose(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, depth: int) -> list[torch.Tensor]:
    """Skilling's AxesToTranspose: axes -> Hilbert index in transposed form (its bits interleave x-first)."""
    axes = [x, y, z]  # every step below makes new tensors: the inputs are not changed
    q = 1 << (depth - 1)
    while q > 1:  # inverse undo of the excess work
        for i in range(3):
            _invert_or_exchange(axes, i, q)
        q >>= 1
    for i in range(1, 3):  # Gray encode
        axes[i] = axes[i] ^ axes[i - 1]
    # Skilling's last loop XORs q - 1 into t for every set bit q >= 2 of the last axis, so bit j of t is the parity
    # of that axis's bits above j: a prefix XOR from the top, made in log steps (< 2**16: shifts 1, 2, 4, 8).
    t = axes[2] >> 1
    for shift in (1, 2, 4, 8):
        t = t ^ (t >> shift)
    return [a ^ t for a in axes]


def _invert_or_exchange(axes: list[torch.Tensor], i: int, q: int) -> None:
    """One step of Skilling's excess-work loop, in place: where bit ``q`` of axis ``i`` is set, invert the low bits
    of axis 0; elsewhere exchange the low bits of axes 0 and ``i``. The step is its own inverse."""
    p = q - 1
    set_ = (axes[i] & q) != 0  # [N] bool
    if i == 0:
        axes[0] = torch.where(set_, axes[0] ^ p, axes[0])
        return
    t = (axes[0] ^ axes[i]) & p
    axes[0] = torch.where(set_, axes[0] ^ p, axes[0] ^ t)
    axes[i] = torch.where(set_, axes[i], axes[i] ^ t)


def _hilbert_untranspose(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, depth: int) -> list[torch.Tensor]:
    """Skilling's TransposeToAxes: the exact inverse of `_hilbert_transpose`."""
    axes = [x.clone(), y.clone(), z.clone()]
    t = axes[2] >> 1  # Gray decode
    for i in (2, 1):
        axes[i] = axes[i] ^ axes[i - 1]
    axes[0] = axes[0] ^ t
    q = 2
    while q != (1 << depth):  # undo the excess work
        for i in (2, 1, 0):
            _invert_or_exchange(axes, i, q)
        q <<= 1
    return axes


def _check_order(order: str) -> None:
    if order not in ORDERS:
        raise ValueError(f"unknown serialisation order {order!r}; choose one of {ORDERS}")


def _check_depth(depth: int) -> None:
    if not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"depth must be an int in 1..{MAX_DEPTH} bits per axis, got {depth!r}")


def _check_grid(grid_coord: torch.Tensor, depth: int | None = None, values: bool = True) -> int:
    """Check shape and type, and (``values``) the range; returns the largest grid value (0 if unread)."""
    if grid_coord.dim() != 2 or grid_coord.shape[1] != 3:
        raise ValueError(f"grid_coord must have shape [N, 3], got {tuple(grid_coord.shape)}")
    if grid_coord.dtype.is_floating_point or grid_coord.dtype == torch.bool:
        raise TypeError(f"grid_coord must be an integer tensor, got {grid_coord.dtype}")
    if not grid_coord.numel() or not values:
        return 0
    lo, hi = torch.stack(torch.aminmax(grid_coord)).tolist()  # one host read
    if lo < 0:
        raise ValueError(f"grid_coord must be >= 0, found {lo}; subtract the per-sample minimum first")
    if depth is not None and hi >= 1 << depth:
        raise ValueError(f"grid_coord reaches {hi}, which does not fit in depth={depth} bits (max {(1 << depth) - 1})")
    return hi


def _check_batch(batch: torch.Tensor, n: int, depth: int, values: bool = True) -> torch.Tensor:
    if batch.shape != (n,):
        raise ValueError(f"batch must have shape [{n}] like grid_coord, got {tuple(batch.shape)}")
    if batch.dtype.is_floating_point or batch.dtype == torch.bool:
        raise TypeError(f"batch must be an integer tensor, got {batch.dtype}")
    batch = batch.to(torch.int64)
    if n and values:
        lo, hi = torch.stack(torch.aminmax(batch)).tolist()  # one host read
        if lo < 0:
            raise ValueError(f"batch indices must be >= 0, found {lo}")
        if hi >= 1 << (63 - 3 * depth):
            raise ValueError(f"batch index {hi} does not fit beside {3 * depth} curve bits in an int64 code")
    return batch
