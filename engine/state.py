"""What a checkpoint holds of a trainer, and putting it back.

Everything is stored as tensors, numbers, strings, lists and dicts, so `torch.load(...,
weights_only=True)` can read it without running code.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from .checkpoint import FORMAT_VERSION, CheckpointError, describe_mismatch
from .errors import first_line
from .loop import Trainer
from .tasks import Task


def capture(trainer: Trainer, loggers: dict | None = None) -> dict:
    """The trainer's whole state at a step boundary (or at an epoch end), as live references:
    stage it (CheckpointWriter.stage) before training changes it."""
    progress = trainer.progress
    state = {
        "format_version": FORMAT_VERSION,
        "task": trainer.task.name,
        "config": trainer.config.to_dict(),
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "rng": _rng_state(trainer),
        "progress": {"epoch": progress.epoch, "position": progress.position,
                     "global_step": progress.global_step,
                     "epoch_so_far": trainer.epoch_so_far()},
        "history": list(progress.history),
        "settings": {"batch_size": trainer.batch_size, "num_workers": trainer.num_workers},
        "loggers": dict(loggers or {}),
        "world_size": trainer.sampler.world_size,
    }
    return state


def check_fits(state: dict, task: Task, source: str) -> None:
    """Refuse a checkpoint of another task or another architecture, naming what differs."""
    if state.get("task") != task.name:
        raise CheckpointError(f"{source} is from task {state.get('task')!r}, not "
                              f"{task.name!r}; start a new run folder for another task")
    mismatch = describe_mismatch(state["model"], task.model.state_dict())
    if mismatch:
        raise CheckpointError(f"{source} does not fit this model: {mismatch}")


def restore(trainer: Trainer, state: dict, source: str = "the checkpoint") -> None:
    """Load a checkpoint (already checked with check_fits) into a freshly built trainer. A
    field that does not fit (a crafted or foreign file) is one CheckpointError line."""
    try:
        _restore(trainer, state)
    except CheckpointError:
        raise
    except Exception as error:
        raise CheckpointError(f"{source}: cannot be restored ({type(error).__name__}: "
                              f"{first_line(error)})") from None


def _restore(trainer: Trainer, state: dict) -> None:
    samples = trainer.sampler.samples_per_epoch
    if not 0 <= state["progress"]["position"] <= samples:
        raise CheckpointError(f"position {state['progress']['position']} is outside an epoch "
                              f"of {samples} samples")
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        trainer.scaler.load_state_dict(state["scaler"])
    # In place: a running epoch loop holds this very object.
    saved, progress = state["progress"], trainer.progress
    progress.epoch = int(saved["epoch"])
    progress.position = int(saved["position"])
    progress.global_step = int(saved["global_step"])
    progress.history = list(state.get("history", []))
    carried = saved.get("epoch_so_far")
    trainer.carry_epoch(carried if isinstance(carried, dict) and progress.position else None)
    _set_rng_state(trainer, state["rng"])


def _rng_state(trainer: Trainer) -> dict:
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    rng = {
        "python": [version, list(internal), gauss],
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "loader": trainer.loader_generator.get_state(),
    }
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def _set_rng_state(trainer: Trainer, rng: dict) -> None:
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = rng["numpy"]
    np.random.set_state((np_state["name"], np_state["keys"].numpy().astype(np.uint32),
                         np_state["pos"], np_state["has_gauss"], np_state["gauss"]))
    torch.set_rng_state(rng["torch"])
    trainer.loader_generator.set_state(rng["loader"])
    if "cuda" in rng and torch.cuda.is_available():
        saved = rng["cuda"]
        if len(saved) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(saved)
