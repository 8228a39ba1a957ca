"""Experiment loggers (TensorBoard, wandb) as event sinks. Filled in by the logging issue."""

from __future__ import annotations

from pathlib import Path

from ..config import RunConfig
from ..events import LoggersInfo


def open_loggers(config: RunConfig, run_dir: Path, saved: dict,
                 task_name: str) -> tuple[list, LoggersInfo, list[str]]:
    """(sinks, what to show about them, one-line notes for the log). `saved` is what the sinks'
    checkpoint_state() returned in the checkpoint being resumed, else {}."""
    return [], LoggersInfo(), []
