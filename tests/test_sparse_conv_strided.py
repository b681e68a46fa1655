"""Strided (kernel 2, stride 2) sparse convolution and its inverse: against dense conv3d / conv_transpose3d, by
gradcheck, and the torch backend against spconv's CPU build (forward only)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from pcdag.ops.sparse_conv import _one_thread_on_cpu
from pcdag.ops.sparse_conv_strided import SparseConv3d, SparseInverseConv3d, coarsen


@st.composite
def sites(draw, max_n: int = 40, extent: int = 7, max_batch: int = 3):
    """Unique voxel sites (grid [N, 3], batch [N]) in random order, coords in 0..extent-1 (odd extents too)."""
    seed = draw(st.integers(0, 2**31))
    n = draw(st.integers(1, max_n))
    samples = draw(st.integers(1, max_batch))
    gen = torch.Generator().manual_seed(seed)
    which = torch.randint(0, samples, (n, 1), generator=gen)
    rows = torch.cat([which, torch.randint(0, extent, (n, 3), generator=gen)], 1)
    rows = torch.unique(rows, dim=0)
    rows = rows[torch.randperm(len(rows), generator=gen)]
    return rows[:, 1:].contiguous(), rows[:, 0].contiguous()


def densify(feat: torch.Tensor, grid: torch.Tensor, batch: torch.Tensor, side: int) -> torch.Tensor:
    """[B, C, side, side, side] with ``feat`` at the sites, zeros elsewhere."""
    dense = feat.new_zeros(int(batch.max()) + 1, feat.shape[1], side, side, side)
    dense[batch, :, grid[:, 0], grid[:, 1], grid[:, 2]] = feat
    return dense


def read(dense: torch.Tensor, grid: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    return dense[batch, :, grid[:, 0], grid[:, 1], grid[:, 2]]  # [M, C]


@settings(max_examples=40, deadline=None)
@given(sites(), st.integers(1, 4), st.integers(1, 4), st.booleans(), st.booleans())
def test_down_and_inverse_match_dense_convolutions(cloud, c_in, c_out, bias, known_bounds):
    grid, batch = cloud
    torch.manual_seed(0)
    down = SparseConv3d(c_in, c_out, bias=bias, backend="torch").double()
    up = SparseInverseConv3d(c_out, c_in, bias=bias, backend="torch").double()
    feat = torch.randn(len(grid), c_in, dtype=torch.float64)
    bounds = (int(batch.max()) + 1, int(grid.max())) if known_bounds else None
    coarse, c = down(feat, grid, batch, bounds)

    # the coarse sites are exactly the occupied cells, each once, sorted by (sample, x, y, z)
    cells = sorted({(b, *(g // 2 for g in row)) for b, row in zip(batch.tolist(), grid.tolist(), strict=True)})
    assert [(b, *g) for b, g in zip(c.batch.tolist(), c.grid.tolist(), strict=True)] == cells
    assert c.bounds[1] >= int(c.grid.max())

    side = 2 * (int(grid.max()) // 2 + 1)
    w = down.weight.detach().permute(0, 4, 1, 2, 3)  # [out, in, 2, 2, 2]
    dense = F.conv3d(densify(feat, grid, batch, side), w, down.bias, stride=2)
    torch.testing.assert_close(coarse, read(dense, c.grid, c.batch))

    wt = up.weight.detach().permute(4, 0, 1, 2, 3)  # [in, out, 2, 2, 2]
    dense_up = F.conv_transpose3d(densify(coarse.detach(), c.grid, c.batch, side // 2), wt, up.bias, stride=2)
    torch.testing.assert_close(up(coarse, c), read(dense_up, grid, batch))


def test_negative_and_offset_coordinates_keep_their_cells():
    grid = torch.tensor([[-3, 0, 5], [-4, 1, 4], [7, -1, -2], [6, -2, -1]])
    batch = torch.tensor([2, 2, 3, 3])
    c = coarsen(grid, batch)
    cells = sorted(zip(c.batch.tolist(), map(tuple, c.grid.tolist()), strict=True))
    assert cells == [(2, (-2, 0, 2)), (3, (3, -1, -1))]
    assert c.counts == [0, 1, 1, 0, 0, 1, 1, 0]  # offsets (x%2, y%2, z%2) = 101, 010, 110, 001 -> 5, 2, 6, 1
    assert torch.equal(c.sorted_cell[c.restore], torch.tensor([0, 0, 1, 1]))


def test_gradcheck_down_and_inverse():
    torch.manual_seed(0)
    grid = torch.tensor([[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 1, 1], [0, 0, 0], [3, 3, 3], [2, 3, 2]])
    batch = torch.tensor([0, 0, 0, 0, 1, 0, 0])
    down = SparseConv3d(2, 3, bias=True, backend="torch").double()
    up = SparseInverseConv3d(3, 2, bias=True, backend="torch").double()
    feat = torch.randn(len(grid), 2, dtype=torch.float64, requires_grad=True)
    params = [t.detach().clone().requires_grad_() for t in (down.weight, down.bias, up.weight, up.bias)]

    def run(f, wd, bd, wu, bu):
        coarse, c = torch.func.functional_call(down, {"weight": wd, "bias": bd}, (f, grid, batch))
        return torch.func.functional_call(up, {"weight": wu, "bias": bu}, (torch.tanh(coarse), c))

    assert torch.autograd.gradcheck(run, (feat, *params))


def test_bad_input_is_refused():
    down = SparseConv3d(2, 3, backend="torch")
    with pytest.raises(ValueError, match=r"feat must be \[2, 2\]"):
        down(torch.randn(2, 5), torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="no sites"):
        coarsen(torch.zeros(0, 3, dtype=torch.int64), torch.zeros(0, dtype=torch.int64))
    _, c = down(torch.randn(2, 2), torch.tensor([[0, 0, 0], [5, 5, 5]]), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"feat must be \[2, 3\]"):
        SparseInverseConv3d(3, 2, backend="torch")(torch.randn(1, 3), c)


def test_autocast_keeps_float32_accumulation():
    torch.manual_seed(0)
    grid = torch.unique(torch.randint(0, 6, (60, 3)), dim=0)
    batch = torch.zeros(len(grid), dtype=torch.int64)
    down, up = SparseConv3d(8, 8, backend="torch"), SparseInverseConv3d(8, 8, backend="torch")
    feat = torch.randn(len(grid), 8)
    ref, c = down(feat, grid, batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, c_low = down(feat, grid, batch)
        back = up(low, c_low)
    assert low.dtype == back.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, atol=5e-2, rtol=5e-2)
    torch.testing.assert_close(back.float(), up(ref, c), atol=5e-2, rtol=5e-2)


# ---- spconv agreement (its CPU build: forward only) ------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(sites(max_n=60, extent=9), st.integers(1, 5), st.integers(1, 5))
def test_spconv_forward_agrees_with_torch(cloud, c_in, c_out):
    pytest.importorskip("spconv.pytorch")
    grid, batch = cloud
    torch.manual_seed(0)
    down = SparseConv3d(c_in, c_out, backend="torch")
    up = SparseInverseConv3d(c_out, c_in, backend="torch")
    down_sp = SparseConv3d(c_in, c_out, backend="spconv")
    up_sp = SparseInverseConv3d(c_out, c_in, backend="spconv")
    down_sp.load_state_dict(down.state_dict())  # one weight layout: state dicts interchange
    up_sp.load_state_dict(up.state_dict())
    feat = torch.randn(len(grid), c_in)
    bounds = (int(batch.max()) + 1, int(grid.max()))
    with torch.no_grad(), _one_thread_on_cpu(torch.device("cpu")):
        coarse, c = down(feat, grid, batch, bounds)
        coarse_sp, c_sp = down_sp(feat, grid, batch, bounds)
        fine, fine_sp = up(coarse, c), up_sp(coarse_sp, c_sp)
    assert c_sp.backend == "spconv" and len(c_sp) == len(c)
    key = c.batch * 10_000 + (c.grid * torch.tensor([100, 10, 1])).sum(1)  # rows in spconv's order -> ours
    key_sp = c_sp.batch * 10_000 + (c_sp.grid * torch.tensor([100, 10, 1])).sum(1)
    ours = torch.searchsorted(key, key_sp)
    assert torch.equal(key[ours], key_sp)
    torch.testing.assert_close(coarse_sp, coarse[ours], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fine_sp, fine, atol=1e-5, rtol=1e-5)  # the finer sites keep their order
    with pytest.raises(ValueError, match="one backend"):
        up(coarse_sp, c_sp)
