"""TensorBoard event files in the run folder, through torch.utils.tensorboard.

Every scalar is written at the global step (epoch figures at the epoch's last step), so one
step axis serves the whole run and a resumed run can purge what a crash left behind: the writer
opens with purge_step just after the checkpoint's last logged step, and TensorBoard then hides
the older records from that step on. SummaryWriter writes on its own thread; a write error (a
full disk) surfaces at the next call, where the engine switches this sink off with one warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..events import EpochEnded, Event, StepLogged
from .figures import epoch_scalars, step_scalars

STEP_KEY = "tensorboard_step"  # in the checkpoint: the last global step written
FLUSH_SECONDS = 10  # how stale a live TensorBoard view may get
HPARAMS_METRICS = ("test_loss", "test_acc", "time_taken", "train_loss")  # HParams table columns


class TensorBoardSink:
    name = "TensorBoard"

    def __init__(self, log_dir: Path, settings: dict[str, Any], saved: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = log_dir
        resumed_step = int(saved.get(STEP_KEY, 0))
        earlier_files = log_dir.is_dir() and any(log_dir.glob("events.out.tfevents.*"))
        # Steps after the checkpoint were logged by the run that crashed or stopped: hide them.
        purge_step = resumed_step + 1 if earlier_files else None
        self._writer = SummaryWriter(str(log_dir), purge_step=purge_step,
                                     flush_secs=FLUSH_SECONDS)
        self._floor = resumed_step  # never write a step at or before the checkpoint's
        self._last_step = resumed_step
        if STEP_KEY not in saved:  # a new run, not a resumed one
            self._write_hparams(settings)

    def __call__(self, event: Event) -> None:
        if isinstance(event, StepLogged):
            self._write(step_scalars(event), event.global_step)
        elif isinstance(event, EpochEnded):
            self._write({"epoch": event.epoch, **epoch_scalars(event)}, event.global_step)

    def _write(self, scalars: dict[str, float], step: int) -> None:
        if step <= self._floor:
            return
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, value, step)
        self._last_step = step

    def _write_hparams(self, settings: dict[str, Any]) -> None:
        """The run's settings in the HParams tab, next to the final test figures."""
        from torch.utils.tensorboard.summary import hparams

        columns = dict.fromkeys(HPARAMS_METRICS, 0.0)  # tag names; values come from the scalars
        for summary in hparams(_flatten(settings), columns):
            self._writer.file_writer.add_summary(summary)

    def checkpoint_state(self) -> dict[str, int]:
        return {STEP_KEY: self._last_step}

    def close(self) -> None:
        self._writer.close()


def _flatten(settings: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """HParams take only numbers, strings and booleans: nest with dots, show lists as 1x28x28."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in settings.items():
        name = prefix + key
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            flat[name] = "x".join(str(item) for item in value)
        elif value is None:
            flat[name] = "none"
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat
