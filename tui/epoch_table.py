"""One row per finished epoch: the figures to compare after changing workers or batch size."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from ctui.engine.events import EpochEnded

COLUMNS = ("epoch", "train s", "eval s", "samples/s", "wait", "loss", "acc", "bs", "wk")


def epoch_row(event: EpochEnded) -> tuple[Text, ...]:
    accuracy = "n/a" if event.test_accuracy is None else f"{event.test_accuracy:.2%}"
    changed = "*" if event.settings_changed else ""
    cells = (f"{event.epoch}", f"{event.train_seconds:.2f}", f"{event.eval_seconds:.2f}",
             f"{event.samples_per_second:,.0f}", f"{event.data_wait_fraction:.0%}",
             f"{event.test_loss:.4f}", accuracy, f"{event.batch_size}{changed}",
             f"{event.num_workers}{changed}")
    return tuple(Text(cell, justify="right") for cell in cells)


class EpochTable(DataTable):
    """Rows are rebuilt only when the list of epochs changed."""

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.border_title = "Epochs"
        self._shown: list[EpochEnded] = []

    def on_mount(self) -> None:
        self.add_columns(*COLUMNS)

    def show_epochs(self, epochs: list[EpochEnded]) -> None:
        if epochs == self._shown:
            return
        if epochs[: len(self._shown)] != self._shown:  # a resume replaced epochs: start over
            self.clear()
            self._shown = []
        for event in epochs[len(self._shown):]:
            self.add_row(*epoch_row(event), key=str(event.epoch))
        self._shown = list(epochs)
        self.move_cursor(row=self.row_count - 1)
