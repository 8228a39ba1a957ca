"""The task contract that built-in and user tasks both fulfil."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..errors import TaskError

__all__ = ["Task", "TaskError"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]
StepFn = Callable[[nn.Module, Any], "torch.Tensor | Mapping[str, Any]"]
EvaluateFn = Callable[[nn.Module, Iterable[Any]], Mapping[str, float]]
MetricFn = Callable[[Any, Any], "float | torch.Tensor"]


@dataclass
class Task:
    """What `build(config)` returns.

    loss: mean loss over a batch from (model output, targets); cross-entropy on logits by default.
    optimizer: parameters -> optimizer; --optimizer (Adadelta(lr=config.lr)) by default.
    scheduler: optimizer -> scheduler stepped once per epoch; --scheduler (StepLR) by default.

    For batches that are not (input, target) pairs, or a model judged by more than its loss:
    step: (model, batch on the device) -> scalar loss, or a dict with "loss" and other figures
        to log; replaces loss(model(input), target). ctui keeps backward, AMP, the grad scaler,
        accumulation and clipping.
    evaluate: (model, test batches on the device) -> {name: number}; run in eval mode without
        gradients. "loss" and "accuracy" fill the test loss and accuracy columns, the rest are
        shown and logged under their names. Without it: the mean of step's outputs (or of loss
        and `metrics`) over the test set.
    metrics: {name: (output, target) -> number}, averaged over the test set by batch size, for
        the default (input, target) evaluation.
    batch_size_of: batch -> how many samples it holds; the first tensor's length by default.
    collate_fn: the DataLoaders' collate_fn (samples -> batch); PyTorch's default_collate by
        default.
    """

    model: nn.Module
    train_dataset: Dataset
    test_dataset: Dataset
    loss: LossFn | None = None
    optimizer: OptimizerFactory | None = None
    scheduler: SchedulerFactory | None = None
    name: str = "custom"
    step: StepFn | None = None
    evaluate: EvaluateFn | None = None
    metrics: Mapping[str, MetricFn] | None = None
    batch_size_of: Callable[[Any], int] | None = None
    collate_fn: Callable[[list[Any]], Any] | None = None
