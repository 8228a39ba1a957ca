"""A tiny deterministic task for the data-parallel tests: no dropout, so a 2-rank job and one
rank at twice the batch must train the very same weights. Feature 0 of every sample is its
index: with CTUI_TEST_RECORD_DIR set, the model appends the indices it trains to a file per
rank. CTUI_TEST_STEP_SLEEP slows each training forward (seconds), to act on a job mid-run.
CTUI_TEST_RANK_OOM=RANK:ABOVE[:AFTER]: that rank alone runs out of memory (torch.OutOfMemoryError)
in a training forward of more than ABOVE samples (after its first AFTER forwards in the process),
as a GPU with less memory than its peers would."""

from __future__ import annotations

import os
import time

import torch
from torch import nn
from torch.utils.data import Dataset

from ctui.engine.tasks import Task

TRAIN_SIZE = int(os.environ.get("CTUI_TEST_TRAIN_SIZE", "97"))  # 97: a 1-sample tail
FEATURES = 8


class Numbers(Dataset):
    def __init__(self, size: int, offset: int = 0) -> None:
        self.size, self.offset = size, offset

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        generator = torch.Generator().manual_seed(self.offset + index)
        features = torch.randn(FEATURES, generator=generator)
        return torch.cat([torch.tensor([float(index)]), features]), index % 3


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Linear(16, 3))
        folder = os.environ.get("CTUI_TEST_RECORD_DIR")
        self.record = os.path.join(folder, f"rank{os.environ.get('RANK', '0')}-"
                                           f"{os.getpid()}.txt") if folder else None
        self.sleep = float(os.environ.get("CTUI_TEST_STEP_SLEEP", "0"))
        rank, _, limits = os.environ.get("CTUI_TEST_RANK_OOM", "").partition(":")
        above, _, after = limits.partition(":")
        self.oom_above = int(above) if above and rank == os.environ.get("RANK", "0") else None
        self.oom_after = int(after or 0)
        self.forwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.forwards += 1
            if self.oom_above is not None and len(x) > self.oom_above and \
                    self.forwards > self.oom_after:
                raise torch.OutOfMemoryError(f"injected by CTUI_TEST_RANK_OOM at {len(x)}")
            if self.record:
                with open(self.record, "a") as handle:
                    handle.write(" ".join(str(int(i)) for i in x[:, 0].tolist()) + "\n")
            if self.sleep:
                time.sleep(self.sleep)
        return self.layers(x[:, 1:])


def build(config):
    return Task(model=Mlp(), train_dataset=Numbers(TRAIN_SIZE),
                test_dataset=Numbers(40, offset=10_000))
