"""Each rank's share of the one seeded epoch order, by global position.

A global batch is the next batch_size * world_size samples of the epoch order; rank r trains
the r-th contiguous piece of it (sizes differ by at most one). A checkpoint holds the global
position only, so a job resumes exactly on any number of ranks, and across ranks every sample of
an epoch is trained once. The tail: the epoch's last global batch may be short; its pieces
shrink evenly, and a rank whose piece is empty (fewer samples left than ranks) runs one sample
at weight 0, so every rank still joins the step's gradient all-reduce.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Sampler

from ..sampling import epoch_order


def share_of(count: int, rank: int, world_size: int) -> tuple[int, int]:
    """(offset, length) of rank's piece of a global batch of `count` samples."""
    base, extra = divmod(count, world_size)
    return rank * base + min(rank, extra), base + (1 if rank < extra else 0)


class ShardedBatchSampler(Sampler[list[int]]):
    """Yields this rank's batches (lists of indices) from global `position` on. Owned by the
    engine thread, like ResumableSampler; batch_size is per rank and set before each loader."""

    def __init__(self, num_samples: int, seed: int, rank: int, world_size: int,
                 batch_size: int = 1) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.batch_size = batch_size
        self.epoch = 1
        self.position = 0  # global: samples of the epoch trained by all ranks together

    def set_epoch(self, epoch: int, position: int = 0) -> None:
        self.epoch = epoch
        self.position = position

    @property
    def samples_per_epoch(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[list[int]]:
        order = epoch_order(self.num_samples, self.seed, self.epoch)
        position, whole = self.position, self.batch_size * self.world_size
        while position < self.num_samples:
            count = min(whole, self.num_samples - position)
            offset, length = share_of(count, self.rank, self.world_size)
            start = position + offset
            # An empty piece still runs one sample (at weight 0): see the module's docstring.
            yield order[start:start + length] if length else [order[position]]
            position += count

    def __len__(self) -> int:
        whole = self.batch_size * self.world_size
        return -(-(self.num_samples - self.position) // whole)
