"""Epoch time and test loss/accuracy across epochs, drawn with plotext."""

from __future__ import annotations

import re
import time

from rich.console import Group
from rich.text import Text
from textual.timer import Timer
from textual.widgets import Static

from ctui.engine.events import EpochEnded

# Plotting takes ~10 ms and a repaint of the whole pane: on a run of one-second epochs that was
# a percent of a core taken from the training. Epochs that end sooner than this after the last
# plot are plotted together when it has passed (the table shows each at once).
PLOT_SECONDS = 5.0
BACKGROUND = re.compile(r"\x1b\[48;5;\d+m")  # plotext paints a canvas colour; keep the theme's


def plot_text(epochs: list[EpochEnded], width: int, height: int, color: bool = True) -> Text:
    """Two plots side by side: seconds per epoch, and test loss with accuracy (right axis)."""
    import plotext  # 0.15 s: imported on the first plot, not with the panel

    figure = plotext.figure
    figure.clear()
    figure.plot_size(width, height)
    figure.theme("dark" if color else "colorless")
    figure.subplots(1, 2)
    xs = [event.epoch for event in epochs]
    timing = figure.subplot(1, 1)
    timing.title("s per epoch, train+eval")  # what an epoch costs, evaluation included
    timing.draw(timing.signal(xs, [e.train_seconds + e.eval_seconds for e in epochs],
                              marker="braille").lines())
    quality = figure.subplot(1, 2)
    name, judged = judged_by(epochs)
    quality.title(f"test loss · {name}")
    losses = [(e.epoch, e.test_loss) for e in epochs if e.test_loss is not None]
    if losses:
        quality.draw(quality.signal([a for a, _ in losses], [b for _, b in losses],
                                    marker="braille").lines())
    if judged:
        quality.draw(quality.signal([a for a, _ in judged], [b for _, b in judged],
                                    marker="braille", yside="right").lines())
    for plot in (timing, quality):
        plot.ruler("x").ticks(xs if len(xs) <= 8 else None)
    rendered = BACKGROUND.sub("", str(figure.build())).rstrip("\n")  # no blank last row
    return Text.from_ansi(rendered) if color else Text(re.sub(r"\x1b\[[0-9;]*m", "", rendered))


def judged_by(epochs: list[EpochEnded]) -> tuple[str, list[tuple[int, float]]]:
    """The right axis: accuracy in percent, else the task's first own test figure (f1...)."""
    accuracy = [(e.epoch, e.test_accuracy * 100) for e in epochs if e.test_accuracy is not None]
    if accuracy or not any(e.metrics for e in epochs):
        return "acc %", accuracy
    names = [name for name, _ in next(e for e in epochs if e.metrics).metrics]
    name = next((n for n in names if not n.startswith("train_")), names[0])
    return name, [(e.epoch, dict(e.metrics)[name]) for e in epochs if name in dict(e.metrics)]


class EpochPlot(Static):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.border_title = "Plot"
        self._key: tuple | None = None
        self._epochs: list[EpochEnded] = []
        self._plotted_at = float("-inf")  # time.monotonic() of the last plot
        self._pending: Timer | None = None  # plots the newest epochs once PLOT_SECONDS passed

    def on_resize(self) -> None:
        # The layout may settle after the first draw (a busy machine): draw again at the size
        # the plot really has, or it stays cut off.
        self.show_epochs(self._epochs)

    def show_epochs(self, epochs: list[EpochEnded]) -> None:
        self._epochs = epochs
        width, height = self.content_size.width, self.content_size.height
        key = (tuple(epochs), width, height)
        if key == self._key or width < 20 or height < 5:
            return
        wait = self._plotted_at + PLOT_SECONDS - time.monotonic()
        if wait > 0 and self._key is not None and key[1:] == self._key[1:]:
            if self._pending is None:  # more epochs, at the same size, soon after the last
                self._pending = self.set_timer(wait, self._plot_pending)
            return
        self._key = key
        if len(epochs) < 2:
            self.update(Text("The plot appears after two epochs.", style="dim"))
            return
        self._plotted_at = time.monotonic()
        plot = plot_text(epochs, width, height - 1, color=not self.app.no_color)
        name, _ = judged_by(epochs)
        legend = Text.from_markup("[blue]━[/] train+eval s  [blue]━[/] test loss  [green]━[/] ")
        legend.append(name)
        self.update(Group(plot, legend), layout=False)  # sized by the stylesheet, not by it

    def _plot_pending(self) -> None:
        self._pending = None
        self.show_epochs(self._epochs)
