"""Patch attention of Point Transformer V3: points in a serialised order cut into patches of ``K`` points.

Padding (spec C, as the reference's variable-length attention does it):
  * a sample of ``n > K`` points is padded to ``ceil(n / K) * K`` slots; the padding slots of its last patch
    repeat the points at the same positions of the previous patch (slot ``j >= n`` holds position ``j - K``),
    so every patch is full and the last one also sees copies of its neighbours' points as keys;
  * a sample of ``n <= K`` points forms one shorter sequence of ``n`` points (plain full attention).

All sequences go through ONE dense ``scaled_dot_product_attention`` call per block, as a ``[S, H, L, D]``
batch of ``S`` sequences of ``L`` slots. ``L = K`` when some sample has more than ``K`` points, otherwise the
largest sample. Sequences shorter than ``L`` (short samples among long ones) are padded with masked key slots:
a boolean key mask ``[S, 1, 1, L]``, passed only when such a sequence exists. We chose the key mask over one
call per distinct length because short samples are rare and few (deep stages of small local views): the mask
costs at most one padded patch per short sample, keeps one kernel launch per block, and the common case (every
sample longer than ``K``) runs unmasked, so CUDA picks the flash kernel. Queries in masked slots are computed
and thrown away; every real slot has at least one real key, so nothing is NaN.

Packed sequences on a GPU. A masked call cannot use the flash kernel: memory-efficient attention takes it, about
twice as slow in the backward (issue 6's LAM3C profile: 1.9 ms against 1.0 ms per call), and every sequence pays
for the padded length. So where a plan needs the mask and the inputs are CUDA bf16/fp16, the sequences are packed
end to end instead (``PackedLayout``: sequence ``s`` holds its real slots only, ``cu_seqlens`` their bounds) and
go through flash attention's variable-length kernel (``torch.nn.attention.varlen.varlen_attn``) in one call.
The attention computed is the same: a masked key slot contributes nothing, an absent one neither.

The ``PatchPlan`` depends only on the sample sizes and ``K``: it is built once per pooling level and reused by
every block (and every serialisation order) of that level.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend

try:  # torch >= 2.10, CUDA only
    from torch.nn.attention.varlen import varlen_attn
except ImportError:  # pragma: no cover - older torch: masked plans stay on the dense path
    varlen_attn = None

# Every backend but cuDNN's: cuDNN builds an execution plan per shape, and the number of sequences S changes with
# every batch and level, which cost ~1 ms of host time per call on an H200 (issue 6's profile; the training step
# waited on the host). Flash attention takes the calls without a mask, memory-efficient attention the others.
# The backbone selects them once around its whole forward (``sdpa_kernel`` costs ~30 µs of host time per entry).
SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@attrs.frozen(eq=False)
class PackedLayout:
    """The real slots of a masked plan end to end: sequence ``s`` is ``cu_seqlens[s] .. cu_seqlens[s + 1] - 1``."""

    gather: torch.Tensor  # [T] int64, serialised position whose point fills each packed slot
    scatter: torch.Tensor  # [N] int64, packed slot holding the output of serialised position p
    cu_seqlens: torch.Tensor  # [S + 1] int32, sequence bounds
    max_len: int  # longest sequence (L)


@attrs.frozen(eq=False)
class PatchPlan:
    """Where every point goes in the dense ``[S, L]`` layout, in positions of a serialised order."""

    gather: torch.Tensor  # [S, L] int64, serialised position whose point fills each slot
    key_mask: torch.Tensor | None  # [S, 1, 1, L] bool, True = real key; None when every slot is real
    scatter: torch.Tensor  # [N] int64, flat slot (s * L + j) holding the output of serialised position p
    length: int  # L, slots per sequence
    packed: PackedLayout | None = None  # with key_mask: the same sequences without their masked slots


def patch_plan(offset: torch.Tensor, counts: list[int], patch_size: int) -> PatchPlan:
    """Plan for samples of ``counts`` points (``offset`` their cumulative sum on the device) and patch ``K``.

    Within every serialised order sample ``b`` occupies positions ``offset[b] - counts[b] .. offset[b] - 1``
    (codes start with the sample index), so one plan serves every order of a level.
    """
    k = int(patch_size)
    if k < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    if not counts or min(counts) < 1:
        raise ValueError(f"every sample needs at least one point, got counts {counts}")
    longest = max(counts)
    length = k if longest > k else longest  # L
    seqs_list = [-(-n // k) if n > k else 1 for n in counts]  # sequences per sample
    n_seq = sum(seqs_list)  # S
    device = offset.device
    # the counts again, on the device: made from ``offset`` there (a host list copied over would be a GPU sync)
    n = torch.diff(offset.to(torch.int64), prepend=offset.new_zeros(1, dtype=torch.int64))  # [B]
    seqs = torch.where(n > k, (n + k - 1) // k, 1)  # [B] sequences per sample, as seqs_list
    first_seq = torch.cumsum(seqs, 0) - seqs  # [B] index of each sample's first sequence
    start = offset.to(torch.int64) - n  # [B] first serialised position of each sample
    seq_sample = torch.repeat_interleave(torch.arange(len(counts), device=device), seqs, output_size=n_seq)  # [S]
    slot = (torch.arange(n_seq, device=device) - first_seq[seq_sample])[:, None] * length  # [S, 1]
    slot = slot + torch.arange(length, device=device)  # [S, L] slot position within its sample
    n_seq_sample = n[seq_sample][:, None]  # [S, 1]
    # Past the end: long samples repeat the previous patch (j - K >= 0); short samples get j - K < 0 = no point.
    source = torch.where(slot < n_seq_sample, slot, slot - k)  # [S, L]
    real = source >= 0  # [S, L]
    gather = start[seq_sample][:, None] + source.clamp(min=0)  # [S, L]
    needs_mask = any(c < length for c in counts if c <= k)
    key_mask = real[:, None, None, :] if needs_mask else None  # [S, 1, 1, L]
    sample_of_position = torch.repeat_interleave(torch.arange(len(counts), device=device), n, output_size=sum(counts))
    shift = first_seq * length - start  # [B] flat slot of position p = p + shift[sample]
    scatter = torch.arange(sum(counts), device=device) + shift[sample_of_position]  # [N]
    packed = None
    if needs_mask:  # real slots are a prefix of every sequence: sample length n if n <= K, else K per sequence
        total = sum(s * length if c > k else c for s, c in zip(seqs_list, counts, strict=True))  # T
        packed = _packed(gather, real.sum(1), scatter, total)
    return PatchPlan(gather=gather, key_mask=key_mask, scatter=scatter, length=length, packed=packed)


def _packed(gather: torch.Tensor, lens: torch.Tensor, scatter: torch.Tensor, total: int) -> PackedLayout:
    """Drop the masked slots of the dense ``gather`` [S, L]: ``lens`` [S] real slots per sequence, T in all."""
    n_seq, length = gather.shape
    cu = F.pad(torch.cumsum(lens, 0), (1, 0))  # [S + 1]
    seq = torch.repeat_interleave(torch.arange(n_seq, device=gather.device), lens, output_size=total)  # [T]
    slot = torch.arange(total, device=gather.device) - cu[seq]  # [T] slot within its sequence
    packed_gather = gather.flatten()[seq * length + slot]  # [T]
    packed_scatter = cu[scatter // length] + scatter % length  # [N] dense slot (s, j) -> cu[s] + j
    return PackedLayout(packed_gather, packed_scatter, cu.to(torch.int32), length)


class PatchAttention(nn.Module):
    """Multi-head self-attention within serialised patches: qkv ``Linear(C, 3C)`` (bias), scale
    ``head_dim**-0.5``, output ``Linear(C, C)``."""

    def __init__(self, channels: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"{channels} channels do not split into {num_heads} attention heads")
        self.channels, self.num_heads = channels, num_heads
        self.scale = (channels // num_heads) ** -0.5
        self.qkv = nn.Linear(channels, 3 * channels, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels)

    def forward(
        self, feat: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor, plan: PatchPlan, rows=None
    ) -> torch.Tensor:
        """``feat`` [N, C] in point order; ``order`` [N] point at each serialised position, ``inverse`` [N] its
        inverse (position of each point). Returns [N, C] in point order. ``rows``: a function ``packed ->
        patch_rows(plan, order, inverse, packed)`` when the caller keeps them (the blocks of a level on the same
        order share them)."""
        heads, dim = self.num_heads, self.channels // self.num_heads
        qkv = self.qkv(feat)  # [N, 3C]
        packed = uses_packed(plan, qkv)
        slot_rows, point_slots = patch_rows(plan, order, inverse, packed) if rows is None else rows(packed)
        qkv = qkv.index_select(0, slot_rows)  # [S * L, 3C] (packed: [T, 3C])
        if packed:
            lay = plan.packed
            q, k, v = qkv.view(-1, 3, heads, dim).unbind(1)  # 3 x [T, H, D]
            out = varlen_attn(q, k, v, lay.cu_seqlens, lay.cu_seqlens, lay.max_len, lay.max_len, scale=self.scale)
            out = out.reshape(-1, self.channels)  # [T, C]
        else:
            n_seq, length = plan.gather.shape
            q, k, v = qkv.view(n_seq, length, 3, heads, dim).permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [S, H, L, D]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=plan.key_mask, scale=self.scale)  # [S, H, L, D]
            out = out.transpose(1, 2).reshape(n_seq * length, self.channels)  # [S * L, C]
        return self.proj(out.index_select(0, point_slots))  # [N, C]


def uses_packed(plan: PatchPlan, qkv: torch.Tensor) -> bool:
    """Packed variable-length flash attention: for masked plans on CUDA in half precision (flash's inputs)."""
    return (
        plan.packed is not None
        and varlen_attn is not None
        and qkv.is_cuda
        and qkv.dtype in (torch.float16, torch.bfloat16)
    )


def patch_rows(
    plan: PatchPlan, order: torch.Tensor, inverse: torch.Tensor, packed: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(point row of every slot [S * L] or packed slot [T], slot of every point [N]) for one serialisation order."""
    if packed:
        return order[plan.packed.gather], plan.packed.scatter[inverse]
    return order[plan.gather].flatten(), plan.scatter[inverse]
