"""Strided sparse 3-D convolution (kernel 2, stride 2: down-sampling) and its inverse (up-sampling), two backends.

A site ``g`` of the finer level belongs to the coarser site ``g // 2`` (floor, per axis) of the same sample, at the
kernel offset ``g mod 2`` (x slowest, z fastest: offset index ``4·(x mod 2) + 2·(y mod 2) + (z mod 2)``, the
order of ``weight[:, a, b, c, :]``). So, with one weight tensor [out, 2, 2, 2, in] (spconv 2.3's layout):

    down:     coarse[o] = bias + sum over fine sites i with g_i // 2 = o of  W[:, g_i mod 2, :] @ fine[i]
    inverse:  fine[i]   = bias + W[:, g_i mod 2, :] @ coarse[g_i // 2]      (onto exactly the finer level's sites)

``down`` is ``conv3d(kernel 2, stride 2)`` of the densified grid read at the occupied coarse cells and ``inverse``
is ``conv_transpose3d(kernel 2, stride 2)`` read at the finer level's sites: the same as spconv's ``SparseConv3d``
and ``SparseInverseConv3d`` sharing one indice key (the down convolution's ``Coarsening`` plays the key's part).

Backends (as ``sparse_conv.SubMConv3d``):
  * ``"torch"`` — ``coarsen`` hashes (batch, g // 2) into one int64 key, ``torch.unique`` numbers the coarse cells
    (sorted by sample, then x, y, z) and the fine sites are grouped by kernel offset once; each convolution is then
    one gather, eight matmuls and one ``index_add_`` (down) or one gather back (inverse). Differentiable through
    autograd on CPU and CUDA; products of the down convolution accumulate in float32.
  * ``"spconv"`` — spconv's ``SparseConv3d`` / ``SparseInverseConv3d`` called with this module's own Parameters;
    the coarse sites are spconv's output indices (in spconv's order). On CPU forward only, one torch thread, its
    Native algorithm (see ``sparse_conv``).
  * ``"auto"`` — spconv on CUDA when it imports, else torch.

The two backends order the coarse sites differently; a ``Coarsening`` remembers which made it, and its inverse
convolution must run on the same backend.

API:
    coarsen(grid [N, 3], batch [N], bounds=None) -> Coarsening          (torch's coarse sites)
    class SparseConv3d(in, out, bias=False, backend="auto")
        forward(feat [N, C_in], grid [N, 3], batch [N], bounds=None) -> (coarse feat [M, C_out], Coarsening)
    class SparseInverseConv3d(in, out, bias=False, backend="auto")
        forward(feat [M, C_in], coarsening) -> fine feat [N, C_out]
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import torch

from pcdag.ops.sparse_conv import BACKENDS, _check_points, _one_thread_on_cpu, spconv_available

N_OFFSETS = 8  # 2 x 2 x 2


@attrs.define(eq=False)
class Coarsening:
    """The sites of the coarser level and how the finer level's sites map onto them."""

    grid: torch.Tensor  # [M, 3] int64 coarse sites
    batch: torch.Tensor  # [M] int64 sample of every coarse site
    bounds: tuple[int, int]  # (samples, an upper bound of the largest coarse grid value)
    fine_rows: int  # N, the finer level's sites
    backend: str  # "torch" | "spconv": which backend made it (its inverse runs on the same)
    sorted_cell: torch.Tensor | None = None  # torch: [N] coarse row of each fine site, fine sites sorted by offset
    order: torch.Tensor | None = None  # torch: [N] fine rows sorted by kernel offset (stable)
    counts: list[int] | None = None  # torch: [8] fine sites per kernel offset
    restore: torch.Tensor | None = None  # torch: [N] position in ``order`` of every fine row
    sparse: Any = None  # spconv: the coarse SparseConvTensor, its indice_dict holding the pairs under ``key``
    key: str = "down"

    def __len__(self) -> int:
        return int(self.grid.shape[0])


def coarsen(grid: torch.Tensor, batch: torch.Tensor, bounds: tuple[int, int] | None = None) -> Coarsening:
    """The coarse sites ``(batch, grid // 2)`` of a level and the grouping of its sites by kernel offset.

    ``bounds``: (number of samples, largest grid value) for grid values >= 0, known to the caller (no host reads).
    """
    grid, batch = _check_points(grid, batch)
    n = grid.shape[0]
    if n == 0:
        raise ValueError("coarsen: a level with no sites cannot be down-sampled")
    half = grid >> 1  # [N, 3]: floor(g / 2), also for negative values
    first = 0
    if bounds is None:
        low, first = half.amin(0), int(batch.min())
        batch = batch - first
        n_samples, side = int(batch.max()) + 1, int((half - low).max()) + 1
    else:
        low = None
        n_samples, side = bounds[0], (bounds[1] >> 1) + 1
    h = half if low is None else half - low
    if n_samples * side**3 >= 2**63:
        raise ValueError(f"grid extent {side} per axis is too large to hash (batch, x, y, z) into one int64")
    key = ((batch * side + h[:, 0]) * side + h[:, 1]) * side + h[:, 2]  # [N]
    cell_key, cell = torch.unique(key, sorted=True, return_inverse=True)  # [M], [N]
    xyz = torch.stack([cell_key // side**2 % side, cell_key // side % side, cell_key % side], 1)  # [M, 3]
    coarse = xyz if low is None else xyz + low
    parity = grid & 1  # [N, 3]
    offset = parity[:, 0] * 4 + parity[:, 1] * 2 + parity[:, 2]  # [N] kernel offset index
    order = torch.sort(offset, stable=True).indices  # [N]
    counts = torch.bincount(offset, minlength=N_OFFSETS).tolist()
    restore = torch.empty_like(order).scatter_(0, order, torch.arange(n, device=order.device))  # [N]
    top = side - 1 if low is None else int(coarse.max())
    return Coarsening(
        coarse, cell_key // side**3 + first, (n_samples, top), n, "torch", cell[order], order, counts, restore
    )


class _StridedBase(torch.nn.Module):
    """Weight [out, 2, 2, 2, in] and optional bias shared by the two backends."""

    kind = ""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = False, backend: str = "auto") -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"{type(self).__name__} backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "spconv" and not spconv_available():
            raise ImportError(f"{type(self).__name__}(backend='spconv') needs spconv: `import spconv.pytorch` failed")
        self.in_channels, self.out_channels, self.backend = in_channels, out_channels, backend
        self.weight = torch.nn.Parameter(torch.empty(out_channels, 2, 2, 2, in_channels))
        self.bias = torch.nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(±1/sqrt(in_channels * 8)) as spconv and nn.Conv3d."""
        bound = 1.0 / math.sqrt(self.in_channels * N_OFFSETS)
        torch.nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            torch.nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size=2, stride=2, bias={self.bias is not None}"

    def resolved_backend(self, device: torch.device) -> str:
        if self.backend == "auto":
            return "spconv" if device.type == "cuda" and spconv_available() else "torch"
        return self.backend

    def _check_feat(self, feat: torch.Tensor, rows: int) -> None:
        if feat.dim() != 2 or feat.shape[1] != self.in_channels or feat.shape[0] != rows:
            raise ValueError(
                f"{type(self).__name__}({self.extra_repr()}): feat must be [{rows}, {self.in_channels}], "
                f"got {tuple(feat.shape)}"
            )

    def _offset_weights(self) -> torch.Tensor:
        return self.weight.flatten(1, 3).permute(1, 2, 0)  # [8, C_in, C_out]

    def _spconv_call(self, feat: torch.Tensor, sparse: Any, make) -> Any:
        if feat.device.type != "cuda" and torch.is_grad_enabled() and (feat.requires_grad or self.weight.requires_grad):
            raise RuntimeError(
                f"{type(self).__name__}(backend='spconv'): spconv has no CPU backward; "
                "run it under torch.no_grad() or use backend='torch'"
            )
        convs = self.__dict__.setdefault("_spconv_convs", {})  # kept out of the module tree
        if feat.device.type not in convs:
            convs[feat.device.type] = make(feat.device)
        conv = convs[feat.device.type]
        conv.weight, conv.bias = self.weight, self.bias
        conv.train(True)  # spconv's training path on both devices (see sparse_conv.SubMConv3d._forward_spconv)
        with _one_thread_on_cpu(feat.device):
            return conv(sparse.replace_feature(feat.contiguous()))

    def _autocast(self, result: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(result.device.type):
            return result.to(torch.get_autocast_dtype(result.device.type))
        return result


class SparseConv3d(_StridedBase):
    """Down-sampling: kernel 2, stride 2, onto the occupied coarse cells; returns them as a ``Coarsening``."""

    def forward(
        self, feat: torch.Tensor, grid: torch.Tensor, batch: torch.Tensor, bounds: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, Coarsening]:
        self._check_feat(feat, grid.shape[0])
        if self.resolved_backend(feat.device) == "spconv":
            return self._forward_spconv(feat, grid, batch, bounds)
        c = coarsen(grid, batch, bounds)
        w = self._offset_weights()
        parts = feat[c.order].split(c.counts)  # 8 x [P_k, C_in]
        y = torch.cat([x @ w[k] for k, x in enumerate(parts)])  # [N, C_out], fine sites sorted by offset
        out_dtype = y.dtype  # feat's dtype, or the autocast dtype
        acc = y.new_zeros(len(c), self.out_channels, dtype=torch.promote_types(out_dtype, torch.float32))
        acc = acc.index_add(0, c.sorted_cell, y.to(acc.dtype))  # [M, C_out]
        if self.bias is not None:
            acc = acc + self.bias.to(acc.dtype)
        return acc.to(out_dtype), c

    def _forward_spconv(
        self, feat: torch.Tensor, grid: torch.Tensor, batch: torch.Tensor, bounds: tuple[int, int] | None
    ) -> tuple[torch.Tensor, Coarsening]:
        import spconv.pytorch as spconv

        grid, batch = _check_points(grid, batch)
        if grid.shape[0] == 0:
            raise ValueError("SparseConv3d: a level with no sites cannot be down-sampled")
        low, first = None, 0
        if bounds is None:
            low, first = (grid.amin(0) >> 1) << 1, int(batch.min())  # an even shift keeps cells and offsets
            grid, batch = grid - low, batch - first
            bounds = (int(batch.max()) + 1, int(grid.max()))
        side = bounds[1] + 1 + (bounds[1] + 1) % 2  # even: spconv's output shape side / 2 keeps every cell
        indices = torch.cat([batch[:, None], grid], dim=1).to(torch.int32)  # [N, 4] (batch, x, y, z)
        sparse = spconv.SparseConvTensor(feat.new_empty(grid.shape[0], 0), indices, [side] * 3, bounds[0])

        def make(device: torch.device) -> Any:
            algo = spconv.ConvAlgo.Native if device.type == "cpu" else None
            bias = self.bias is not None
            return spconv.SparseConv3d(
                self.in_channels, self.out_channels, 2, stride=2, bias=bias, indice_key="down", algo=algo
            )

        out = self._spconv_call(feat, sparse, make)
        coarse = out.indices[:, 1:].to(torch.int64)
        coarse = coarse if low is None else coarse + (low >> 1)
        cb = out.indices[:, 0].to(torch.int64) + first
        c = Coarsening(coarse, cb, (bounds[0], side // 2 - 1), grid.shape[0], "spconv")
        c.sparse = out
        return self._autocast(out.features), c


class SparseInverseConv3d(_StridedBase):
    """Up-sampling: kernel 2, onto exactly the finer level's sites that ``coarsening`` came from."""

    def forward(self, feat: torch.Tensor, coarsening: Coarsening) -> torch.Tensor:
        c = coarsening
        self._check_feat(feat, len(c))
        backend = self.resolved_backend(feat.device)
        if backend != c.backend:
            raise ValueError(
                f"SparseInverseConv3d runs on {backend!r} but its coarsening was made by {c.backend!r}: "
                "use one backend for the down and the up convolution"
            )
        if backend == "spconv":
            import spconv.pytorch as spconv

            def make(device: torch.device) -> Any:
                algo = spconv.ConvAlgo.Native if device.type == "cpu" else None
                return spconv.SparseInverseConv3d(
                    self.in_channels, self.out_channels, 2, bias=self.bias is not None, indice_key=c.key, algo=algo
                )

            return self._autocast(self._spconv_call(feat, c.sparse, make).features)
        w = self._offset_weights()
        parts = feat[c.sorted_cell].split(c.counts)  # 8 x [P_k, C_in]: each fine site's coarse row
        y = torch.cat([x @ w[k] for k, x in enumerate(parts)])[c.restore]  # [N, C_out] in fine order
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y
