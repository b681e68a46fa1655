"""Memory model of a Point Transformer V3 forward on the GPU (issue 6, item 3): the module's ``memory``.

Bytes kept for the backward pass, per point of a level with ``C`` channels, under bf16 autocast; counted with
``torch.autograd.graph.saved_tensors_hooks`` (unique storages) on one block and one pooling layer:

    block (xCPE + attention + MLP, spconv)   47·C   LayerNorm inputs and the residual stream in fp32, matmul
                                                    inputs, q/k/v/output of the attention, the MLP hidden (2 × 4C)
    + torch sparse-conv backend              16·C   its gathered neighbour rows (~8 neighbours on surfaces, bf16)
    pooling (per point of the finer level)   16·C
    with ``checkpoint``: each block keeps only its fp32 input (4·C); the backward recomputes one block at a time

With ``n_s = N · ratio_s`` points at level s (``LEVEL_RATIOS``), the encoder keeps
``Σ_s n_s · depth_s · block(C_s) + Σ_s≥1 n_(s-1) · 16 · C_(s-1)``. A forward without grad (a teacher) keeps
nothing but its output; its transient peak is one block's working set at the busiest level (~26·C per point).
The output of the encoder (``[n_u, Σ C_s≥u]``, float32) is kept in both cases: the losses read it.
"""

from __future__ import annotations

from collections.abc import Sequence

from pcdag.graphs.memory import NodeMemory

BLOCK_BYTES_PER_CHANNEL = 47.0
TORCH_CONV_BYTES_PER_CHANNEL = 16.0
POOL_BYTES_PER_CHANNEL = 16.0
CHECKPOINT_BYTES_PER_CHANNEL = 4.0
NO_GRAD_BYTES_PER_CHANNEL = 26.0


def level_points(points: float, ratios: Sequence[float], levels: int) -> list[float]:
    """Expected points at levels 0..levels-1 for ``points`` input points."""
    if len(ratios) < levels:
        raise ValueError(f"need {levels} level ratios, got {list(ratios)}")
    return [points * r for r in ratios[:levels]]


def encoder_memory(config, points: float, grad: bool, ratios: Sequence[float]) -> tuple[NodeMemory, float, int]:
    """``(memory, output rows, output channels)`` of one forward over ``points`` input points.

    ``config`` is a ``PTv3Config``; the decoder of ``mode: encoder-decoder`` is counted like the encoder.
    """
    depths, channels = list(config.enc_depths), list(config.enc_channels)
    n = level_points(points, ratios, len(depths))
    block = BLOCK_BYTES_PER_CHANNEL + (TORCH_CONV_BYTES_PER_CHANNEL if config.backend == "torch" else 0.0)
    per_level = [n[s] * depths[s] * channels[s] for s in range(len(depths))]  # point-channels × blocks
    if config.mode == "encoder-decoder":
        for s, (d, c) in enumerate(zip(config.dec_depths, config.dec_channels, strict=True)):
            per_level[s] += n[s] * d * c
    pooling = sum(n[s - 1] * channels[s - 1] for s in range(1, len(depths))) * POOL_BYTES_PER_CHANNEL
    busiest = max(n[s] * channels[s] for s in range(len(depths)))
    if config.mode == "encoder-decoder":
        out_rows, out_channels = n[0], config.dec_channels[0]
    else:
        out_rows, out_channels = n[config.upcast_level], sum(channels[config.upcast_level :])
    output = out_rows * out_channels * 4.0
    if not grad:
        return NodeMemory(saved=output, transient=busiest * NO_GRAD_BYTES_PER_CHANNEL), out_rows, out_channels
    if config.checkpoint:  # blocks keep their fp32 input; the backward recomputes one block at a time
        saved, transient = sum(per_level) * CHECKPOINT_BYTES_PER_CHANNEL, busiest * block
    else:  # every block keeps its activations; the backward holds about the fp32 MLP gradient
        saved, transient = sum(per_level) * block, busiest * 4.0 * 4
    saved += pooling + output
    return NodeMemory(saved=saved, transient=transient), out_rows, out_channels
