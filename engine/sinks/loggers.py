"""Experiment loggers (TensorBoard, wandb) as event sinks, opened for a run.

Opening a logger never stops a run: a missing package or a logger that fails to start becomes
one note, and the run trains without it. wandb and TensorBoard are imported here, inside
`open_loggers`, so `import ctui.engine` stays free of both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..errors import first_line
from ..events import LoggersInfo
from .figures import EPOCH_METRICS, STEP_PREFIX, epoch_scalars, step_scalars

__all__ = ["EPOCH_METRICS", "STEP_PREFIX", "epoch_scalars", "open_loggers", "run_settings",
           "step_scalars"]

TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"

def run_settings(config: RunConfig, task_name: str) -> dict[str, Any]:
    """The whole run configuration as loggers record it: the settings plus the device and the
    DataLoader settings the loop builds from them (mirrors `Trainer._loader`)."""
    from ..device import choose_placement

    placement = choose_placement(config.device, config.amp)  # the Engine already validated it
    workers = config.num_workers
    common = {"num_workers": workers, "pin_memory": placement.is_cuda,
              "persistent_workers": workers > 0, "drop_last": False}
    return {
        **config.to_dict(),
        "task_name": task_name,
        "resolved_device": str(placement.device),
        "precision": placement.precision,
        "train_loader": {"batch_size": config.batch_size, "shuffle": True, **common},
        "test_loader": {"batch_size": config.test_batch_size, "shuffle": False, **common},
    }


def open_loggers(config: RunConfig, run_dir: Path, saved: dict,
                 task_name: str) -> tuple[list, LoggersInfo, list[str]]:
    """(sinks, what to show about them, one-line notes for the log). `saved` is what the sinks'
    checkpoint_state() returned in the checkpoint being resumed, else {}."""
    sinks: list = []
    notes: list[str] = []
    info: dict[str, str] = {}
    settings = run_settings(config, task_name)
    if config.tensorboard:
        try:
            from .tensorboard_sink import TensorBoardSink

            log_dir = run_dir / TENSORBOARD_DIR
            sinks.append(TensorBoardSink(log_dir, settings, saved))
            info["tensorboard_dir"] = str(log_dir)
            notes.append(f"TensorBoard logs in {log_dir}; open them with: "
                         f"tensorboard --logdir {log_dir}")
        except ImportError as error:  # torch says which tensorboard it needs
            notes.append(f"TensorBoard is off: {first_line(error)} (pip install tensorboard); "
                         "training continues")
        except Exception as error:  # a full disk, a folder we may not write
            notes.append(f"TensorBoard is off: {first_line(error)}; training continues")
    if config.wandb:
        try:
            from .wandb_sink import open_wandb

            sink, wandb_info, wandb_notes = open_wandb(config.wandb, run_dir / WANDB_DIR,
                                                       settings, saved, run_dir.name, task_name)
            sinks.append(sink)
            info.update(wandb_info)
            notes.extend(wandb_notes)
        except ImportError as error:
            problem = ("the wandb package is not installed" if error.name == "wandb"
                       else first_line(error))
            notes.append(f"wandb is off: {problem} (pip install wandb); training continues")
        except Exception as error:
            notes.append(f"wandb is off: {first_line(error)}; training continues")
    return sinks, LoggersInfo(**info), notes

