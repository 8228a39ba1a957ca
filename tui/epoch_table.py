"""One row per finished epoch: the figures to compare after changing workers or batch size."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from ctui.engine.events import EpochEnded

COLUMNS = ("epoch", "train s", "eval s", "samples/s", "wait", "loss", "acc", "bs", "wk")
MAX_TASK_COLUMNS = 3  # the task's own figures (f1, iou...) after these; the rest are logged
NOT_KNOWN = "–"  # not evaluated this epoch (--val-every), or not reported by the task


def epoch_row(event: EpochEnded, figures: tuple[str, ...] = ()) -> tuple[Text, ...]:
    accuracy = "n/a" if event.test_accuracy is None else f"{event.test_accuracy:.2%}"
    loss = NOT_KNOWN if event.test_loss is None else f"{event.test_loss:.4f}"
    changed = "*" if event.settings_changed else ""
    own = dict(event.metrics)
    cells = (f"{event.epoch}", f"{event.train_seconds:.2f}", f"{event.eval_seconds:.2f}",
             f"{event.samples_per_second:,.0f}", f"{event.data_wait_fraction:.0%}",
             loss, accuracy, f"{event.batch_size}{changed}", f"{event.num_workers}{changed}",
             *(f"{own[name]:.4g}" if name in own else NOT_KNOWN for name in figures))
    return tuple(Text(cell, justify="right") for cell in cells)


def task_figures(epochs: list[EpochEnded]) -> tuple[str, ...]:
    """The task's own figures to give columns: evaluation's first (they judge the model)."""
    names: dict[str, None] = {}
    for event in epochs:
        names.update(dict.fromkeys(name for name, _ in event.metrics))
    ordered = sorted(names, key=lambda name: name.startswith("train_"))
    return tuple(ordered[:MAX_TASK_COLUMNS])


class EpochTable(DataTable):
    """Rows are rebuilt only when the list of epochs changed."""

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.border_title = "Epochs"
        self._shown: list[EpochEnded] = []
        self._figures: tuple[str, ...] = ()

    def on_mount(self) -> None:
        self.add_columns(*COLUMNS)

    def show_epochs(self, epochs: list[EpochEnded]) -> None:
        if epochs == self._shown:
            return
        figures = task_figures(epochs)
        if epochs[: len(self._shown)] != self._shown or figures != self._figures:
            self.clear(columns=True)  # a resume replaced epochs, or new figures: start over
            self.add_columns(*COLUMNS, *figures)
            self._figures = figures
            self._shown = []
        for event in epochs[len(self._shown):]:
            self.add_row(*epoch_row(event, figures), key=str(event.epoch))
        self._shown = list(epochs)
        self.move_cursor(row=self.row_count - 1)
