"""A flood of step events costs a few redraws, not one each; the model folds events right."""

from __future__ import annotations

import asyncio
import dataclasses
import time

from conftest import attached, make_app, until
from standin import recorded_events

from ctui.engine.events import EpochEnded, LogLine, Settings, StepLogged
from ctui.tui.app import ROUTINE_SECONDS
from ctui.tui.messages import RunEvent
from ctui.tui.model import RunModel
from ctui.tui.training_panel import TrainingPanel


def test_step_events_replace_each_other_but_nothing_else_does():
    step = RunEvent(StepLogged(step=1), 1)
    assert step.can_replace(RunEvent(StepLogged(step=2), 1))
    assert not step.can_replace(RunEvent(LogLine(message="x"), 1))
    assert not RunEvent(LogLine(message="x"), 1).can_replace(RunEvent(LogLine(message="y"), 1))
    assert not step.can_replace(RunEvent(StepLogged(step=2), 2))  # another connection


def test_thousands_of_steps_redraw_a_few_times_a_second(monkeypatch):
    redraws = []
    original = TrainingPanel.show
    monkeypatch.setattr(TrainingPanel, "show",
                        lambda self, model: (redraws.append(1), original(self, model)))
    app, backend = make_app(redraw_seconds=0.25)

    async def test():
        async with app.run_test(size=(80, 24)) as pilot:
            await attached(pilot, app)
            redraws.clear()
            start = time.monotonic()
            backend.connection.emit(*(StepLogged(epoch=3, step=i % 23 + 1, steps_in_epoch=23,
                                                 samples_per_second=500.0)
                                      for i in range(3000)))
            backend.connection.emit(StepLogged(epoch=3, step=23, steps_in_epoch=23))
            await until(pilot, lambda: app.model.step.step == 23
                        and app.model.step.samples_per_second == 0.0)
            await pilot.pause(ROUTINE_SECONDS + 0.3)  # step figures wait for the next frame
            elapsed = time.monotonic() - start
        assert 1 <= len(redraws) <= elapsed / ROUTINE_SECONDS + 2
    asyncio.run(test())


def test_model_keeps_the_latest_figures_of_a_repeated_epoch():
    model = RunModel()
    first = EpochEnded(epoch=1, train_seconds=3.0)
    second = EpochEnded(epoch=2, train_seconds=3.0)
    for event in (first, second, EpochEnded(epoch=2, train_seconds=2.5)):  # resumed in epoch 2
        model.apply(event)
    assert [e.train_seconds for e in model.epochs] == [3.0, 2.5]


def test_eta_from_step_rate_and_finished_epochs():
    model = RunModel()
    for event in recorded_events():
        if isinstance(event, StepLogged) and event.epoch == 3:
            break
        model.apply(event)
    model.apply(Settings(batch_size=64, epochs=5, steps_per_epoch=23))
    model.apply(StepLogged(epoch=3, step=13, steps_in_epoch=23, samples_per_second=640.0))
    assert model.epoch_seconds_left() == 10 * 64 / 640.0
    mean = sum(e.train_seconds + e.eval_seconds for e in model.epochs) / 2
    assert abs(model.run_seconds_left() - (1.0 + 2 * mean)) < 1e-9
    model.host_gone()
    assert model.state == "interrupted" and not model.live
    assert dataclasses.replace(model.step) == model.step  # events stay immutable values
