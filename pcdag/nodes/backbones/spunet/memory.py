"""Memory model of a SparseUNet forward (the ``BackboneModule.memory`` hook), counted value by value.

What autograd keeps for the backward, per voxel of a level (``C`` its width, values of ``VALUE_BYTES``: fp16
under the mixed precision spconv trains with; float32 without autocast):

    stem            its input (in_channels), BN input and ReLU output (2 · base)
    down-sampling   BN input and ReLU output at the coarser level (2 · C)
    block           BN inputs and ReLU outputs (4 · C); a decoder level's first block also keeps the skip
                    concatenation (C_up + C_skip) and its projection's BN input (C)
    up-sampling     BN input and ReLU output at the finer level (2 · C)

spconv keeps each convolution's input, which is already counted as the previous ReLU's output. The torch
backend also keeps the rows it gathers and, for its ``index_add`` (autograd keeps the source, for its shape), the
products: per submanifold convolution ``(neighbours - 1) · (C_in + C_out)`` (``NEIGHBOURS``: present neighbours of
a surface voxel, 9 of 27 and 25 of 125 on a plane), per down-sampling ``C_in + C_out`` and per up-sampling
``C_in`` per finer voxel. ``tests/test_sparse_unet.py`` checks the count against
``torch.autograd.graph.saved_tensors_hooks`` on a planar cloud (within 4 % for tiny and 14A).
Voxels per level: ``points · LEVEL_RATIOS[s]``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pcdag.graphs.memory import NodeMemory

NEIGHBOURS = {3: 9, 5: 25}


def unet_memory(
    config, points: float, grad: bool, ratios: Sequence[float], value_bytes: float = 2.0
) -> tuple[NodeMemory, float, int]:
    """``(memory, output rows, output channels)`` of one forward over ``points`` input points (``config``: a
    ``SparseUNetConfig``); ``value_bytes`` 2 under fp16 autocast, 4 in float32."""
    from pcdag.nodes.backbones.spunet.config import N_LEVELS

    if len(ratios) < N_LEVELS + 1:
        raise ValueError(f"need {N_LEVELS + 1} level ratios, got {list(ratios)}")
    n = [points * r for r in ratios[: N_LEVELS + 1]]
    enc, dec = config.level_channels()
    torch_rows = 1.0 if config.backend == "torch" else 0.0  # the auto backend is spconv on the GPU
    k3 = (NEIGHBOURS[3] - 1) * torch_rows

    def blocks(level: int, width_in: int, width: int, count: int) -> float:
        first = (width_in + width if width_in != width else 0.0) + k3 * (width_in + 3 * width)  # conv1, conv2
        return n[level] * (first + count * 4.0 * width + (count - 1) * k3 * 4 * width)

    values = n[0] * (config.in_channels + 2.0 * config.base_channels)  # stem
    values += n[0] * (NEIGHBOURS[5] - 1) * torch_rows * (config.in_channels + config.base_channels)
    for s in range(N_LEVELS):
        values += n[s + 1] * 2.0 * enc[s + 1] + torch_rows * n[s] * (enc[s] + enc[s + 1])  # down-sampling
        values += blocks(s + 1, enc[s + 1], enc[s + 1], config.layers[s])
        above = enc[N_LEVELS] if s == N_LEVELS - 1 else dec[s + 1]
        values += n[s] * 2.0 * dec[s] + torch_rows * n[s] * above  # up-sampling
        values += blocks(s, dec[s] + enc[s], dec[s], config.layers[2 * N_LEVELS - 1 - s])
    out_rows, out_channels = n[0], config.out_channels
    output = out_rows * out_channels * 4.0
    busiest = max(n[s] * max(enc[s], dec[s] + enc[s] if s < N_LEVELS else 0) for s in range(N_LEVELS + 1))
    if not grad:  # nothing kept; one convolution's input, output and gathered rows at a time
        return NodeMemory(saved=output, transient=busiest * value_bytes * (3 + k3)), out_rows, out_channels
    return NodeMemory(saved=values * value_bytes + output, transient=busiest * 4.0 * 2), out_rows, out_channels
