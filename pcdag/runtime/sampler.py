"""Which scenes each micro-batch holds: an endless, seeded, rank-aware order that can start anywhere.

Epoch ``e`` visits the scenes in ``randperm(n, seed, e)``; rank ``r`` of ``w`` takes every ``w``-th scene from
``r``; consecutive runs of ``batch`` scenes form its micro-batches (a partial last one is dropped). When there are
fewer scenes than one micro-batch needs on every rank, the permutation repeats within the epoch. Items are
``(epoch, index)`` so loader workers draw each sample's randomness from its own epoch. Starting at micro-batch
``m`` gives exactly what an uninterrupted run yields from there: ``--resume`` continues the data order.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    def __init__(self, n: int, batch: int, rank: int = 0, world: int = 1, seed: int = 0, start: int = 0) -> None:
        if n < 1:
            raise ValueError("no scenes to sample from")
        if batch < 1 or world < 1 or not 0 <= rank < world or start < 0:
            raise ValueError(f"bad sampler arguments: batch {batch}, rank {rank} of {world}, start {start}")
        self.n, self.batch, self.rank, self.world, self.seed, self.start = n, batch, rank, world, seed, start
        repeats = -(-batch * world // n)  # so every rank gets at least one micro-batch per epoch
        self.per_rank = n * repeats // world
        self.micro_per_epoch = self.per_rank // batch

    def epoch_order(self, epoch: int) -> list[int]:
        """This rank's scene indices in epoch ``epoch`` (same on every call)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        repeats = -(-self.batch * self.world // self.n)
        perm = torch.cat([torch.randperm(self.n, generator=g) for _ in range(repeats)])
        return perm[self.rank :: self.world][: self.per_rank].tolist()

    def position(self, micro: int) -> tuple[int, int]:
        """(epoch, micro-batch within the epoch) of global micro-batch number ``micro``."""
        return divmod(micro, self.micro_per_epoch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, k = self.position(self.start)
        while True:
            order = self.epoch_order(epoch)
            for j in range(k, self.micro_per_epoch):
                yield [(epoch, i) for i in order[j * self.batch : (j + 1) * self.batch]]
            epoch, k = epoch + 1, 0
