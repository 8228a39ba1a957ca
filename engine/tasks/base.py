"""The task contract that built-in and user tasks both fulfil."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from ..errors import TaskError

__all__ = ["Task", "TaskError"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


@dataclass
class Task:
    """What `build(config)` returns.

    loss: mean loss over a batch from (model output, targets); cross-entropy on logits by default.
    optimizer: parameters -> optimizer; Adadelta(lr=config.lr) by default.
    scheduler: optimizer -> scheduler stepped once per epoch; StepLR(1, gamma) by default.
    """

    model: nn.Module
    train_dataset: Dataset
    test_dataset: Dataset
    loss: LossFn | None = None
    optimizer: OptimizerFactory | None = None
    scheduler: SchedulerFactory | None = None
    name: str = "custom"
