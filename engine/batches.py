"""Batches of any structure, and what a task's own functions hand back.

A batch is whatever the DataLoader collates: a tensor, or tuples, lists and dicts of tensors,
nested as deep as the task likes, with numbers and strings (captions, file names) along for the
ride. ctui moves the tensors to the device and leaves the rest; anything it cannot move is a
TaskError naming where in the batch it sits, so a user fixes the dataset, not a traceback.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import torch

from .errors import TaskError

_PLAIN = (str, bytes, numbers.Number, type(None))  # travel with the batch unchanged


def to_device(batch: Any, device: torch.device, non_blocking: bool = False,
              where: str = "batch") -> Any:
    """A copy of `batch` with every tensor on `device` (pinned memory copies without blocking
    on CUDA); containers keep their type (a namedtuple stays one)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, _PLAIN):
        return batch
    if isinstance(batch, Mapping):
        moved = {key: to_device(value, device, non_blocking, f"{where}[{key!r}]")
                 for key, value in batch.items()}
        return moved if type(batch) is dict else _rebuilt(type(batch), moved)
    if isinstance(batch, (tuple, list)):
        moved = [to_device(value, device, non_blocking, f"{where}[{index}]")
                 for index, value in enumerate(batch)]
        if hasattr(batch, "_fields"):  # a namedtuple takes its fields as arguments
            return type(batch)(*moved)
        return moved if type(batch) is list else \
            tuple(moved) if type(batch) is tuple else _rebuilt(type(batch), moved)
    raise TaskError(f"{where} is a {type(batch).__name__}, which ctui cannot move to the "
                    "device: return tensors, numbers or strings (in tuples, lists or dicts) "
                    "from the dataset")


def first_tensor(batch: Any) -> torch.Tensor | None:
    """The first tensor in the batch, depth first in the order the containers hold them."""
    if isinstance(batch, torch.Tensor):
        return batch
    values = batch.values() if isinstance(batch, Mapping) else \
        batch if isinstance(batch, (tuple, list)) else ()
    for value in values:
        found = first_tensor(value)
        if found is not None:
            return found
    return None


def default_batch_size(batch: Any) -> int:
    """How many samples a batch holds: the length of its first tensor's first dimension."""
    tensor = first_tensor(batch)
    if tensor is None or tensor.dim() == 0:
        raise TaskError(f"cannot tell how many samples a {type(batch).__name__} batch holds: "
                        "it has no tensor with a batch dimension; give Task.batch_size_of")
    return int(tensor.shape[0])


def input_and_target(batch: Any) -> tuple[Any, Any]:
    """The (input, target) pair of the default step; any other shape asks for Task.step."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    shape = f"a dict with keys {sorted(map(str, batch))}" if isinstance(batch, Mapping) else \
        f"a {type(batch).__name__}" + (f" of {len(batch)}" if isinstance(batch, (tuple, list))
                                       else "")
    raise TaskError(f"batches are {shape}, not (input, target) pairs: give Task.step(model, "
                    "batch) -> loss (and Task.evaluate, or let ctui average step's outputs "
                    "on the test set)")


def split_step_output(output: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    """Task.step's result -> (loss, other figures). The loss must be a scalar tensor that
    backward() can reach; the figures scalars (tensors stay on the device until read)."""
    figures: dict[str, Any] = {}
    if isinstance(output, Mapping):
        if "loss" not in output:
            raise TaskError("Task.step returned a dict without a 'loss' entry (it has "
                            f"{', '.join(sorted(map(str, output))) or 'none'}): add the loss "
                            "to minimise as 'loss'")
        for name, value in output.items():
            if name != "loss":
                figures[str(name)] = _figure(value, f"Task.step's {name!r}")
        output = output["loss"]
    if not isinstance(output, torch.Tensor):
        raise TaskError(f"Task.step returned a {type(output).__name__} as its loss: return a "
                        "scalar tensor (or a dict with one as 'loss')")
    if output.numel() != 1:
        raise TaskError(f"Task.step returned a loss of shape {tuple(output.shape)}: return one "
                        "number to minimise, e.g. loss.mean()")
    return output.reshape(()), figures


def _figure(value: Any, what: str) -> Any:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TaskError(f"{what} has shape {tuple(value.shape)}: figures to log must be "
                            "single numbers")
        return value.detach().reshape(()).float()
    return metric_value(value, what)


def metric_value(value: Any, what: str) -> float:
    """A figure as a float, or a TaskError naming it: a metric must be one finite-or-nan number
    (inf and nan are kept: a diverged run should show as one)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.item())
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if hasattr(value, "item") and getattr(value, "size", None) == 1:  # a NumPy scalar
        return float(value.item())
    shown = type(value).__name__ if not isinstance(value, torch.Tensor) else \
        f"tensor of shape {tuple(value.shape)}"
    raise TaskError(f"{what} is a {shown}, not a number: return a float (or a one-element "
                    "tensor)")


def _rebuilt(kind: type, contents: Any) -> Any:
    """A subclass of dict, list or tuple rebuilt around moved contents, where its constructor
    takes them; else the plain container (the values are what the step reads)."""
    try:
        return kind(contents)
    except Exception:
        return contents
