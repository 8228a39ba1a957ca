"""The overlay of two or more runs: seconds per epoch, samples/s, test loss and accuracy, each
run in its own colour (its own marker without colour), its differing settings in the legend."""

from __future__ import annotations

import re

from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from ctui.engine.compare import Comparison, EpochPoint, RunSummary

from .epoch_plot import BACKGROUND

COLOURS = (39, 208, 76, 170, 220, 203, 51, 250)  # xterm-256 codes: plotext and rich share them
MARKERS = ("•", "+", "x", "o", "*", "#", "@", "%")  # NO_COLOR: runs told apart by marker
ESCAPES = re.compile(r"\x1b\[[0-9;]*m")
PLOTS = (("seconds per epoch", lambda p: p.seconds),
         ("samples/s", lambda p: p.samples_per_second or None),
         ("test loss", lambda p: p.test_loss),
         ("accuracy %", lambda p: None if p.accuracy is None else p.accuracy * 100))


def overlay_text(runs: tuple[RunSummary, ...], width: int, height: int, color: bool) -> Text:
    """Four plots in a 2x2 grid, every run drawn in each where it has that figure."""
    import plotext  # imported on the first plot, not with the panel

    figure = plotext.figure
    # The widget, not the terminal plotext sees (none under a test or a web server: 80x24),
    # decides the size; plotext's default limit is restored after, for the other plots.
    plotext.terminal.limit(False, False)
    figure.clear()
    figure.plot_size(width, height)
    figure.theme("dark" if color else "colorless")
    figure.subplots(2, 2)
    epochs = sorted({point.epoch for run in runs for point in run.points})
    for index, (title, value) in enumerate(PLOTS):
        plot = figure.subplot(index // 2 + 1, index % 2 + 1)
        plot.title(title)
        for number, run in enumerate(runs):
            xs, ys = _series(run.points, value)
            if xs:
                plot.draw(plot.signal(xs, ys, marker=_marker(plotext, number, color)).lines())
        plot.ruler("x").ticks(epochs if 0 < len(epochs) <= 8 else None)
    try:
        rendered = BACKGROUND.sub("", str(figure.build()))
    finally:
        plotext.terminal.limit()
    return Text.from_ansi(rendered) if color else Text(ESCAPES.sub("", rendered))


def legend_text(comparison: Comparison, color: bool) -> Text:
    """One line per run: its colour (or marker), its name, its settings that differ."""
    text = Text(no_wrap=True, overflow="ellipsis")
    for number, run in enumerate(comparison.runs):
        if number:
            text.append("\n")
        if color:
            text.append("━━ ", style=f"bold color({COLOURS[number % len(COLOURS)]})")
        else:
            text.append(f"{MARKERS[number % len(MARKERS)]}  ", style="bold")
        text.append(run.name, style="bold")
        settings = comparison.differing_settings(run)
        if settings:
            text.append("  " + "  ".join(f"{name}={value}" for name, value in settings))
        if not run.points:
            text.append("  (no epochs yet)", style="dim")
    return text


def _marker(plotext, number: int, color: bool):
    if not color:
        return MARKERS[number % len(MARKERS)]
    return plotext.marker("braille").fill(COLOURS[number % len(COLOURS)])


def _series(points: tuple[EpochPoint, ...], value) -> tuple[list[int], list[float]]:
    pairs = [(point.epoch, figure) for point in points if (figure := value(point)) is not None]
    return [epoch for epoch, _ in pairs], [figure for _, figure in pairs]


class OverlayPlot(Static):
    """The plots, drawn again whenever the layout gives them another size."""

    def __init__(self, runs: tuple[RunSummary, ...], **kwargs) -> None:
        super().__init__(**kwargs)
        self.runs = runs
        self.drawn: tuple[int, int] | None = None

    def on_resize(self) -> None:
        self.draw()

    def draw(self) -> None:
        size = (self.content_size.width, self.content_size.height)
        if size == self.drawn or size[0] < 20 or size[1] < 6:
            return
        self.drawn = size
        self.update(Group(overlay_text(self.runs, size[0], size[1], not self.app.no_color)))


class OverlayScreen(ModalScreen[None]):
    """The marked runs' curves on one screen; esc goes back to the list."""

    CSS_PATH = "runs_view.tcss"
    BINDINGS = [Binding("escape,q,enter", "dismiss", "back")]

    def __init__(self, comparison: Comparison) -> None:
        super().__init__()
        self.comparison = comparison

    def compose(self) -> ComposeResult:
        with Vertical(id="overlay") as box:
            box.border_title = f"{len(self.comparison.runs)} runs compared (esc: back)"
            yield OverlayPlot(self.comparison.runs, id="overlay-plot")
            yield Static(legend_text(self.comparison, not self.app.no_color),
                         id="overlay-legend")

    @property
    def drawn(self) -> tuple[int, int] | None:
        """The plots' size once drawn."""
        return self.query_one(OverlayPlot).drawn
