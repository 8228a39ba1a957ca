"""Where training is, as clients see it: Position events between logged steps (counters only),
a resumed epoch counted whole, and the learning rate in force sent when an epoch's decay
applies. Also the headless printer's bar and pipe lines, which follow the same events."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from ctui.engine import Engine
from ctui.engine.events import (
    EpochEnded,
    Position,
    Settings,
    StateChanged,
    StepLogged,
)
from ctui.engine.sinks.console import ConsolePrinter

from helpers import tiny

STEPS = 23  # 1437 training digits in batches of 64


def progress_of(events) -> list[tuple[int, int, int]]:
    return [(e.epoch, e.step, e.steps_in_epoch) for e in events
            if isinstance(e, (Position, StepLogged))]


@pytest.mark.slow
def test_position_follows_every_step_and_a_resumed_epoch_counts_whole(tmp_path):
    # A log interval longer than the epoch: StepLogged only at its end, so without Position
    # events the progress would stand still for the whole epoch.
    config = tiny(epochs=2, batch_size=64, log_interval=1000, run_dir=str(tmp_path / "run"))
    engine = Engine(config).start()  # ~0.1 s a step on a CPU: a Position every few steps
    seen = []
    for event in engine.events():
        seen.append(event)
        if isinstance(event, Position) and event.epoch == 1:  # the first comes at step 1
            engine.stop("test: stop inside the first epoch")
    first = progress_of(seen)
    positions = [e for e in seen if isinstance(e, Position)]
    assert positions, "no Position event inside an epoch"
    assert all(p.steps_in_epoch == STEPS and p.samples_in_epoch == 1437 for p in positions)
    assert [p.step for p in positions] == sorted(p.step for p in positions)
    stopped_at = first[-1][1]
    assert 1 <= stopped_at < STEPS

    resumed = Engine(config, resume=True).start()
    rest = list(resumed.events())
    counts = progress_of(rest)
    # the resumed epoch goes on from where it stopped, counting the steps before the stop
    assert counts[0][0] == 1 and stopped_at < counts[0][1] <= STEPS
    assert all(total == STEPS for _, _, total in counts)
    assert (1, STEPS, STEPS) in counts and counts[-1] == (2, STEPS, STEPS)

    # the learning rate in force is sent when the epoch's decay applies, before epoch 2 trains
    kinds = [type(e).__name__ for e in rest]
    after_epoch_1 = kinds.index("EpochEnded")
    settings = next(e for e in rest[after_epoch_1:] if isinstance(e, Settings))
    first_epoch = next(e for e in rest if isinstance(e, EpochEnded))
    assert settings.lr == pytest.approx(first_epoch.lr * 0.7)
    assert rest.index(settings) < next(i for i, e in enumerate(rest)
                                       if isinstance(e, (Position, StepLogged)) and e.epoch == 2)
    assert isinstance(rest[-1], StateChanged) and rest[-1].state == "finished"


class Terminal:
    """A stream that says it is a terminal (the bar) and keeps what is printed to it."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.lines: list[str] = []

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        self.lines.extend(line for line in text.splitlines() if line)
        return len(text)

    def flush(self) -> None:
        pass


def test_the_terminal_bar_follows_positions_and_has_a_time_left():
    printer = ConsolePrinter(Terminal(tty=True))
    try:
        for step in range(1, 6):  # between logged steps, as a slow model's would come
            printer.show(Position(epoch=1, step=step, steps_in_epoch=100, samples_seen=step * 64,
                                  samples_in_epoch=6400))
            time.sleep(0.05)
        left = printer.time_left()
        # ~0.05 s a step, 95 steps to go: about 5 s (generous: the machine may be loaded)
        assert left is not None and 1 < left < 60
        assert printer._progress.tasks[0].completed == 5
    finally:
        printer.close()


def test_a_pipe_gets_a_line_at_each_tenth_of_an_epoch_with_the_loss():
    stream = Terminal(tty=False)
    printer = ConsolePrinter(stream)
    for step in list(range(3, 100, 3)) + [100]:  # --log-interval 3 over 100 steps
        printer.show(StepLogged(epoch=1, step=step, steps_in_epoch=100, loss=0.5))
        printer.show(Position(epoch=1, step=step + 1, steps_in_epoch=100))  # not printed
    lines = [line for line in stream.lines if line.startswith("epoch 1 step")]
    assert len(lines) == 10
    assert all("loss 0.5000" in line for line in lines)
    assert lines[-1].startswith("epoch 1 step 100/100")


def test_one_epoch_left_is_singular():
    said = []
    fake = SimpleNamespace(_epochs_timed=0, _finish_reported=0.0,
                           _schedule=SimpleNamespace(started_at=0.0),
                           config=SimpleNamespace(epochs=3, time_limit=None),
                           _log=said.append)
    Engine._report_finish(fake, EpochEnded(epoch=2, epochs=3))
    assert "(1 epoch left" in said[0]
