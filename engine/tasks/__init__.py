"""Built-in tasks and loading a user's own task.

A task is what to train: a model, a training and a test dataset, and optionally the loss,
an optimizer factory and a scheduler factory (Adadelta and StepLR per epoch when omitted).
"""

from .base import Task, TaskError
from .registry import load_task

__all__ = ["Task", "TaskError", "load_task"]
