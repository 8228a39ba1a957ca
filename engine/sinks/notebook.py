"""train()'s output in a notebook (Jupyter, Colab) or a script: a progress bar per epoch and one
line per epoch, as it happens. tqdm.auto draws the bar as a widget in a notebook and as text
elsewhere, so the same code serves both."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from ..events import (
    Answer,
    EpochEnded,
    Event,
    Failed,
    LogLine,
    Settings,
    State,
    StateChanged,
    StepLogged,
)
from .console import epoch_line


class NotebookProgress:
    """An engine sink: runs on the training thread, which for train() is the caller's."""

    name = "progress"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream  # None: sys.stdout at each write (a notebook swaps it per cell)
        self._bar: Any = None
        self._epoch = 0
        self._shown_settings: tuple = ()

    def __call__(self, event: Event) -> None:
        if isinstance(event, StepLogged) or event.kind == "position":  # between logged steps
            self._step(event)
        elif isinstance(event, EpochEnded):
            self._close_bar()
            self.say(epoch_line(event))
        elif isinstance(event, Settings):
            shown = (event.batch_size, event.num_workers)
            if shown != self._shown_settings:  # once, and again when they change
                self._shown_settings = shown
                self.say(f"run {event.run_dir}: task {event.task} on {event.device} "
                         f"({event.precision}), batch size {event.batch_size}, "
                         f"{event.num_workers} workers, {event.epochs} epochs")
        elif isinstance(event, LogLine):
            self.say(event.message if event.level == "info" else
                     f"{event.level}: {event.message}")
        elif isinstance(event, Answer):
            self.say(event.message if event.accepted else f"refused: {event.message}")
        elif isinstance(event, Failed):
            self._close_bar()
            self.say(f"error: {event.message}")
        elif isinstance(event, StateChanged) and event.state in State.ENDED:
            self._close_bar()
            self.say(f"{event.state}: {event.reason}")

    def _step(self, event: Any) -> None:
        """StepLogged or Position: the epoch's step of its steps (a resumed epoch counts its
        earlier steps too); StepLogged brings the loss."""
        if self._bar is not None and event.epoch != self._epoch:
            self._close_bar()
        if self._bar is None:
            from tqdm.auto import tqdm

            self._epoch = event.epoch
            # initial: steps done before the bar began (a resumed epoch) are not in its rate
            self._bar = tqdm(total=event.steps_in_epoch, initial=event.step,
                             desc=f"epoch {event.epoch}", unit="step", leave=False,
                             file=self._out(), dynamic_ncols=True)
        bar = self._bar
        bar.total = event.steps_in_epoch  # a new batch size changes it
        if isinstance(event, StepLogged):
            bar.set_postfix_str(f"loss {event.loss:.4f}", refresh=False)
        bar.update(event.step - bar.n)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _out(self) -> TextIO:
        return self.stream or sys.stdout

    def say(self, text: str) -> None:
        if self._bar is not None:
            from tqdm.auto import tqdm

            tqdm.write(text, file=self._out())
        else:
            print(text, file=self._out(), flush=True)

    def close(self) -> None:
        self._close_bar()
