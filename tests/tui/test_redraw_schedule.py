"""When the panel draws: the figures that change several times a second (progress, steps,
checkpoints, epochs, the gauges) together in one frame at most every ROUTINE_SECONDS; a state
change or a line for the log at the next tick; and a pane only when what it shows changed. Each
frame costs the compositor and the terminal (or a browser's websocket) CPU that the training on
the same cores pays for."""

from __future__ import annotations

import asyncio

from conftest import attached, make_app
from standin import busier_snapshot

from ctui.engine.events import (
    CheckpointSaved,
    EpochEnded,
    LogLine,
    Position,
    State,
    StateChanged,
    StepLogged,
)
from ctui.tui.app import ROUTINE_SECONDS
from ctui.tui.epoch_table import EpochTable
from ctui.tui.fitted import FittedStatic
from ctui.tui.host_panel import HostPanel
from ctui.tui.messages import RunEvent, TelemetrySampled
from ctui.tui.training_panel import TrainingPanel

SMALL = (80, 24)


class Clock:
    """time.monotonic for the app's redraw schedule, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def scheduled_app(monkeypatch, **kwargs):
    """An app whose redraw timer never fires (the test calls redraw() at the times it sets),
    and counts of each pane's repaints."""
    clock = Clock()
    painted: dict[str, int] = {}
    original = FittedStatic.update

    def update(self, *args, **kwargs):
        painted[type(self).__name__] = painted.get(type(self).__name__, 0) + 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FittedStatic, "update", update)
    app, backend = make_app(redraw_seconds=3600, **kwargs)
    app.monotonic = clock
    return app, clock, painted


async def drawn_afresh(pilot, app, painted: dict[str, int]) -> None:
    """The recorded run on screen, everything drawn, and no repaint counted yet."""
    await attached(pilot, app)
    app.redraw(force=True)
    await pilot.pause()
    painted.clear()


def deliver(app, *events) -> None:
    """The events as the reader thread delivers them, handled at once."""
    for event in events:
        app.on_run_event(RunEvent(event, app._generation))


def test_progress_steps_and_checkpoints_wait_for_the_next_frame_then_show_together(
        monkeypatch):
    app, clock, painted = scheduled_app(monkeypatch)

    async def test():
        async with app.run_test(size=SMALL) as pilot:
            await drawn_afresh(pilot, app, painted)
            clock.now += 0.25
            deliver(app, Position(epoch=3, step=20, steps_in_epoch=23, samples_seen=1280,
                                  samples_in_epoch=1437),
                    StepLogged(epoch=3, step=20, steps_in_epoch=23, loss=0.125,
                               samples_per_second=512.0),
                    CheckpointSaved(path="ckpt", epoch=3, step=20))
            app.redraw()  # a quarter of a second after the last frame: not yet
            assert painted == {}
            await pilot.pause()
            assert "step 20/23" not in flat(app.query_one(TrainingPanel))
            clock.now += ROUTINE_SECONDS - 0.25
            app.redraw()
            assert painted.get("TrainingPanel") == 1
            await pilot.pause()
            assert "step 20/23" in flat(app.query_one(TrainingPanel))
            assert "0.1250" in flat(app.query_one(TrainingPanel))
    asyncio.run(test())


def test_a_state_change_or_a_log_line_is_drawn_at_the_next_tick(monkeypatch):
    app, clock, painted = scheduled_app(monkeypatch)

    async def test():
        async with app.run_test(size=SMALL) as pilot:
            await drawn_afresh(pilot, app, painted)
            clock.now += 0.05  # just after a frame
            deliver(app, StateChanged(state=State.PAUSED))
            app.redraw()
            assert painted.get("TrainingPanel") == 1
            await pilot.pause()
            assert "paused" in flat(app.query_one(TrainingPanel))
            clock.now += 0.05
            deliver(app, LogLine(level="warning", message="disk nearly full"))
            app.redraw()
            await pilot.pause()
            assert "disk nearly full" in flat(app.query_one("#log"))
    asyncio.run(test())


def test_a_telemetry_sample_is_drawn_with_the_next_frame_and_only_the_gauges_repaint(
        monkeypatch):
    app, clock, painted = scheduled_app(monkeypatch)

    async def test():
        async with app.run_test(size=SMALL) as pilot:
            await drawn_afresh(pilot, app, painted)
            busier = busier_snapshot()
            clock.now += 0.1
            app.on_telemetry_sampled(TelemetrySampled(busier))
            app.redraw()
            assert painted == {}  # the next frame is a second after the last
            clock.now += ROUTINE_SECONDS
            app.redraw()
            await pilot.pause()
            assert "7.25" in flat(app.query_one(HostPanel))
            # the host pane changed; the training pane and the GPU pane show the same as before
            assert painted == {"HostPanel": 1}
    asyncio.run(test())


def test_gauges_read_more_often_than_once_a_second_are_drawn_as_often(monkeypatch):
    """CTUI_SAMPLE_SECONDS=0.25 asks for gauges four times a second: the frames follow."""
    app, clock, painted = scheduled_app(monkeypatch, sample_seconds=0.25)

    async def test():
        async with app.run_test(size=SMALL) as pilot:
            await drawn_afresh(pilot, app, painted)
            busier = busier_snapshot()
            clock.now += 0.25
            app.on_telemetry_sampled(TelemetrySampled(busier))
            app.redraw()
            await pilot.pause()
            assert "7.25" in flat(app.query_one(HostPanel))
    asyncio.run(test())


def test_a_pane_is_not_repainted_with_what_it_already_shows(monkeypatch):
    app, clock, painted = scheduled_app(monkeypatch)

    async def test():
        async with app.run_test(size=SMALL) as pilot:
            await drawn_afresh(pilot, app, painted)
            for _ in range(3):
                clock.now += ROUTINE_SECONDS
                app.redraw(force=True)
            assert "GpuPanel" not in painted and "HostPanel" not in painted
            assert "TrainingPanel" not in painted  # the fixed clock: the same figures
    asyncio.run(test())


def test_equal_text_in_another_style_is_shown():
    """Rich's Text == compares characters only: a pane turning from dim to red must repaint."""
    from rich.text import Text
    from textual.app import App

    class One(App):
        def compose(self):
            yield FittedStatic(id="pane")

    async def test():
        app = One()
        async with app.run_test(size=(40, 5)) as pilot:
            pane = app.query_one(FittedStatic)
            pane.show_content(Text("no GPU", style="dim"))
            await pilot.pause()
            calls = []
            original = pane.update
            pane.update = lambda *a, **k: (calls.append(1), original(*a, **k))
            pane.show_content(Text("no GPU", style="dim"))
            assert calls == []
            pane.show_content(Text("no GPU", style="red"))
            assert calls == [1]
    asyncio.run(test())


def test_a_new_epoch_row_asks_for_no_layout_of_the_screen():
    """The table is sized by the stylesheet: a row added changes what scrolls, not the screen's
    arrangement (a layout of every widget per epoch was a fifth of the panel's CPU on short
    epochs). The newest row is still drawn and the scrollbar still follows."""
    from textual.app import App

    class Table(App):
        def compose(self):
            yield EpochTable()

    def epoch(number: int) -> EpochEnded:
        return EpochEnded(epoch=number, train_seconds=1.5, samples_per_second=900.0,
                          test_accuracy=0.9, test_loss=0.3, batch_size=64, num_workers=2)

    async def test():
        app = Table()
        async with app.run_test(size=(100, 8)) as pilot:
            table = app.query_one(EpochTable)
            epochs = [epoch(n) for n in range(1, 20)]  # more than fit: the scrollbar is shown
            table.show_epochs(epochs)
            await pilot.pause()
            assert table.show_vertical_scrollbar
            layouts = []
            original = app.screen._refresh_layout
            app.screen._refresh_layout = lambda *a, **k: (layouts.append(1), original(*a, **k))
            epochs = [*epochs, epoch(20)]
            table.show_epochs(epochs)
            await pilot.pause()
            await pilot.pause()
            assert layouts == []
            assert table.virtual_size.height == 21  # the header and 20 rows
            assert table.vertical_scrollbar.window_virtual_size == 21
            assert any(strip.text.split()[:1] == ["20"] for strip in
                       table.render_lines(table.scrollable_content_region.reset_offset))
    asyncio.run(test())


def flat(widget) -> str:
    from textual.geometry import Region

    width, height = widget.outer_size
    return " ".join(" ".join(strip.text for strip in
                             widget.render_lines(Region(0, 0, width, height))).split())


def test_epochs_soon_after_a_plot_are_plotted_together_and_the_last_is_never_left_out(
        monkeypatch):
    """Plotting costs ~10 ms: on one-second epochs the plot is redrawn every PLOT_SECONDS,
    not per epoch; and the newest epoch reaches the plot with no further redraw (a run that
    just finished sends nothing more)."""
    from textual.app import App

    from ctui.tui import epoch_plot

    monkeypatch.setattr(epoch_plot, "PLOT_SECONDS", 0.4)
    plotted: list[int] = []
    original = epoch_plot.plot_text
    monkeypatch.setattr(epoch_plot, "plot_text", lambda epochs, *args, **kwargs: (
        plotted.append(len(epochs)), original(epochs, *args, **kwargs))[1])

    class Plot(App):
        CSS = "EpochPlot { height: 100%; }"  # as in the panel: sized by the stylesheet

        def compose(self):
            yield epoch_plot.EpochPlot()

    def epochs(count: int) -> list[EpochEnded]:
        return [EpochEnded(epoch=n, train_seconds=1.0, test_loss=1 / n, test_accuracy=0.9)
                for n in range(1, count + 1)]

    async def test():
        app = Plot()
        async with app.run_test(size=(80, 20)) as pilot:
            plot = app.query_one(epoch_plot.EpochPlot)
            await pilot.pause()
            plot.show_epochs(epochs(3))
            assert plotted == [3]
            plot.show_epochs(epochs(4))
            plot.show_epochs(epochs(5))
            assert plotted == [3]  # too soon: waits
            await pilot.pause(0.6)
            assert plotted == [3, 5]  # both, in one plot, with no call from the app
            assert "5" in " ".join(strip.text for strip in plot.render_lines(
                plot.content_region.reset_offset))
    asyncio.run(test())


def test_a_decaying_learning_rate_keeps_the_training_panes_height(monkeypatch):
    """`lr 4.6e-05` then `lr 3.22e-05`: one character more wrapped the line in a narrow pane
    and back, every other epoch, each time a layout of the whole screen and a jumping pane."""
    app, clock, painted = scheduled_app(monkeypatch)

    async def test():
        async with app.run_test(size=SMALL) as pilot:
            await attached(pilot, app)
            pane = app.query_one(TrainingPanel)
            shown = []
            for lr in (4.6e-05, 3.22e-05, 1.1e-05, 7.5e-06):
                deliver(app, StepLogged(epoch=3, step=20, steps_in_epoch=23, lr=lr))
                app.redraw(force=True)
                await pilot.pause()
                lines = [strip.text for strip in pane.render_lines(pane.outer_size.region)]
                shown.append((flat(pane), sum(1 for line in lines if line.strip())))
            assert len({count for _, count in shown}) == 1, shown  # the same lines drawn
            assert "lr 4.60e-05" in shown[0][0] and "lr 3.22e-05" in shown[1][0]
    asyncio.run(test())
