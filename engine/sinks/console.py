"""Headless output: one line per epoch, a progress bar in a terminal, plain lines in a pipe."""

from __future__ import annotations

import os
import sys
from typing import TextIO

from ..events import (
    Answer,
    CheckpointSaved,
    EpochEnded,
    Event,
    Failed,
    LogLine,
    Position,
    Settings,
    State,
    StateChanged,
    StepLogged,
)


def epoch_line(event: EpochEnded) -> str:
    """The figures a user compares between runs, in one line."""
    parts = [
        f"epoch {event.epoch}/{event.epochs}",
        f"train {event.train_seconds:.2f}s",
        f"eval {event.eval_seconds:.2f}s",
        f"{event.samples_per_second:,.0f} samples/s",
        f"data wait {event.data_wait_fraction:.0%}",
    ]
    if event.compile_seconds:
        parts.insert(2, f"compile {event.compile_seconds:.2f}s")
    if event.train_loss is not None:
        parts.append(f"train loss {event.train_loss:.4f}")
    if event.test_loss is not None:
        parts.append(f"test loss {event.test_loss:.4f}")
    if event.test_accuracy is not None:
        parts.append(f"acc {event.test_accuracy:.2%}")
    parts.extend(f"{name} {value:.4g}" for name, value in event.metrics)
    parts.append(f"lr {event.lr:.4g}")
    if event.peak_gpu_memory_mb is not None:
        parts.append(f"peak GPU {event.peak_gpu_memory_mb:,.0f} MiB")
    parts.append(f"bs {event.batch_size}{'*' if event.settings_changed else ''}")
    parts.append(f"workers {event.num_workers}")
    return "  ".join(parts)


class ConsolePrinter:
    """Shows events; called on the main thread only."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.interactive = stream.isatty()
        self._progress = None
        self._bar = None
        self._next_plain_tenth = 1
        self._settings_shown = False

    def show(self, event: Event) -> None:
        if isinstance(event, StepLogged):
            self._step(event)
        elif isinstance(event, Position):
            if self.interactive:  # a pipe gets lines with the loss, from StepLogged only
                self._update_bar(event)
        elif isinstance(event, EpochEnded):
            self._end_bar()
            self.note(epoch_line(event))
        elif isinstance(event, Settings) and not self._settings_shown:
            # once: later ones (a live change, each epoch's learning rate) are told by answers
            self._settings_shown = True
            self.note(f"run {event.run_dir}: task {event.task} on {event.device} "
                      f"({event.precision}), batch size {event.batch_size}, "
                      f"{_count(event.num_workers, 'worker')}, {_count(event.epochs, 'epoch')}")
        elif isinstance(event, LogLine):
            prefix = "" if event.level == "info" else f"{event.level}: "
            self.note(prefix + event.message)
        elif isinstance(event, Answer):
            self.note(event.message if event.accepted else f"refused: {event.message}")
        elif isinstance(event, Failed):
            self._end_bar()
            self.note(f"error: {event.message}", stream=sys.stderr)
        elif isinstance(event, CheckpointSaved):
            pass  # quiet: one per epoch would drown the epoch lines
        elif isinstance(event, StateChanged) and event.state in ("stopped", "finished"):
            self._end_bar()
            self.note(f"{event.state}: {event.reason}")

    def _step(self, event: StepLogged) -> None:
        if self.interactive:
            self._update_bar(event)
            return
        # In a pipe or a log file: a plain line at the first logged step (every --log-interval
        # steps) past each tenth of the epoch, so never more often than either.
        if event.step * 10 >= event.steps_in_epoch * self._next_plain_tenth:
            self._next_plain_tenth = event.step * 10 // event.steps_in_epoch + 1
            self.note(f"epoch {event.epoch} step {event.step}/{event.steps_in_epoch}  "
                      f"loss {event.loss:.4f}  {event.samples_per_second:,.0f} samples/s  "
                      f"data wait {event.data_wait_fraction:.0%}")
        if event.step >= event.steps_in_epoch:
            self._next_plain_tenth = 1

    def _update_bar(self, event: StepLogged | Position) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        if self._progress is None:
            self._progress = Progress(
                TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                TimeRemainingColumn(), TextColumn("{task.fields[loss]}"),
                transient=True, auto_refresh=True,
                # Rich estimates the speed from the updates of this many seconds: a longer
                # window than its 30 s default, so slow steps still get a time left.
                speed_estimate_period=600.0,
            )
            self._progress.start()
            self._bar = self._progress.add_task("train", total=event.steps_in_epoch,
                                                epoch=event.epoch, loss="")
        loss = {"loss": f"loss {event.loss:.4f}"} if isinstance(event, StepLogged) else {}
        self._progress.update(self._bar, completed=event.step, total=event.steps_in_epoch,
                              epoch=event.epoch, **loss)

    def time_left(self) -> float | None:
        """The bar's estimate of the epoch's seconds left (None: no bar, or no estimate)."""
        if self._progress is None:
            return None
        return self._progress.tasks[0].time_remaining

    def _end_bar(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = self._bar = None
        self._next_plain_tenth = 1

    def note(self, text: str, stream: TextIO | None = None) -> None:
        target = stream or self.stream
        if self._progress is not None and target is self.stream:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=target, flush=True)

    def close(self) -> None:
        self._end_bar()


class ConsoleSink:
    """A ConsolePrinter as an engine sink: it runs on the training thread, as events happen.

    tracebacks: print a failure's traceback to stderr. paused_hint: told when the run pauses."""

    def __init__(self, printer: ConsolePrinter, *, name: str = "console",
                 tracebacks: bool = False, paused_hint: str = "") -> None:
        self.printer = printer
        self.name = name
        self.tracebacks = tracebacks
        self.paused_hint = paused_hint

    def __call__(self, event: Event) -> None:
        self.printer.show(event)
        if self.paused_hint and isinstance(event, StateChanged) and event.state == State.PAUSED:
            self.printer.note(f"paused ({event.reason}): {self.paused_hint}")
        if self.tracebacks and isinstance(event, Failed) and event.detail:
            self.printer.note(event.detail, stream=sys.stderr)


def say_now(text: str, fd: int = 2) -> None:
    """Write a line unbuffered: safe inside a signal handler, where a print could land in the
    middle of another write. A closed stream is ignored: what the handler does goes ahead."""
    try:
        os.write(fd, f"{text}\n".encode())
    except OSError:
        pass


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")
