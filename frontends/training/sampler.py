"""Which samples each rank trains on: DistributedSampler semantics.

Every rank draws the same permutation of the training set for an epoch (seeded by
``(seed, epoch)``, the order single-process ``fit`` uses), and rank ``r`` of ``N`` takes the
positions ``r, r + N, r + 2N, ...`` of it, as PyTorch's ``DistributedSampler`` does. So the
ranks' k-th batches of size b together hold exactly the samples of the single-process batch k
of size N*b: the average of their gradients is the single-process gradient. The last batch is
either padded (``drop_last=False``: the remaining order is extended with its first samples until
every rank has as many, so the last step's per-rank batches are equal, maybe short) or dropped
(``drop_last=True``: samples that do not fill a whole global batch are left out).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lbdl_graph.errors import InputError

__all__ = ["DistributedSampler"]


@dataclass(frozen=True)
class DistributedSampler:
    """The per-rank shard of each epoch's order (see the module doc).

    ``start`` in :meth:`indices` and :meth:`batches` skips samples of the epoch's permutation
    already trained on (resuming mid-epoch, possibly at another world size).
    """

    num_samples: int
    rank: int = 0
    world_size: int = 1
    seed: int = 0
    shuffle: bool = True
    drop_last: bool = False

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise InputError(f"rank {self.rank} is not in a world of {self.world_size}")
        if self.num_samples < 1:
            raise InputError("there are no training samples")
        if self.num_samples < self.world_size:
            raise InputError(f"{self.num_samples} samples cannot be shared by "
                             f"{self.world_size} ranks (each needs at least one)")

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's permutation of every sample, the same on every rank."""
        if not self.shuffle:
            return np.arange(self.num_samples)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)

    def indices(self, epoch: int, batch_size: int, start: int = 0) -> np.ndarray:
        """This rank's samples of the epoch from global position ``start`` on."""
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= start <= self.num_samples:
            raise InputError(f"start {start} is outside the {self.num_samples} samples")
        rest = self.order(epoch)[start:]
        n, w = len(rest), self.world_size
        if self.drop_last:
            rest = rest[:n - n % (w * batch_size)]
        elif n % w:
            reps = -(-(w - n % w) // n)  # the padding may exceed n when n < w
            rest = np.concatenate([rest, np.tile(rest, reps)[:w - n % w]])
        return rest[self.rank::w]

    def batches(self, epoch: int, batch_size: int, start: int = 0) -> list[np.ndarray]:
        """This rank's batches (index arrays) of the epoch from global position ``start`` on."""
        idx = self.indices(epoch, batch_size, start)
        return [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]

    def steps_per_epoch(self, batch_size: int) -> int:
        """How many steps one full epoch takes (the same on every rank)."""
        return len(self.batches(0, batch_size))

    def consumed(self, steps: int, batch_size: int, start: int = 0) -> int:
        """The global position reached after ``steps`` full steps from ``start``."""
        return min(self.num_samples, start + steps * batch_size * self.world_size)
