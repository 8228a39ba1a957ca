"""The order in which an epoch visits the training set, and where in it the run is.

The order depends only on (seed, epoch), so a resumed or re-batched epoch continues exactly where
it stopped: no sample skipped or seen twice. A data-parallel job's ranks share the same order by
global position instead (engine/distributed/sharding.py), so its checkpoints resume exactly on
any number of ranks.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def epoch_order(num_samples: int, seed: int, epoch: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_samples, generator=generator).tolist()


class ResumableSampler(Sampler[int]):
    """Yields this rank's share of the epoch order from `position` on.

    Owned and mutated by the engine thread only; DataLoader workers never see it (sampling
    happens in the main process), so persistent workers can keep serving across epochs.
    """

    def __init__(self, num_samples: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 1
        self.position = 0  # samples of this rank's share already trained in this epoch

    def set_epoch(self, epoch: int, position: int = 0) -> None:
        self.epoch = epoch
        self.position = position

    def share(self) -> list[int]:
        order = epoch_order(self.num_samples, self.seed, self.epoch)
        return order[self.rank::self.world_size]

    @property
    def samples_per_epoch(self) -> int:
        return len(range(self.rank, self.num_samples, self.world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.share()[self.position:])

    def __len__(self) -> int:
        return self.samples_per_epoch - self.position
