"""The autotune report: samples per second of each trial, and the offer to apply the best."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Static

from ctui.engine.events import TuneReport


class TuneScreen(ModalScreen[bool]):
    """Dismisses True when the user applies the best settings."""

    BINDINGS = [Binding("escape,n", "keep", "Keep current"), Binding("a,y", "apply", "Apply")]

    def __init__(self, report: TuneReport) -> None:
        super().__init__()
        self.report = report

    def compose(self) -> ComposeResult:
        report = self.report
        with Vertical(classes="dialog", id="tune") as box:
            box.border_title = f"Autotune ({report.seconds:.0f}s)"
            table = DataTable(cursor_type="row", zebra_stripes=True)
            table.add_columns("batch", "workers", "samples/s", "note")
            for batch_size, workers, speed, note in report.rows:
                best = (batch_size, workers) == (report.best_batch_size, report.best_num_workers)
                table.add_row(str(batch_size), str(workers), f"{speed:,.0f}",
                              "best" if best and not note else note)
            yield table
            yield Static(f"Apply the best: batch size {report.best_batch_size}, "
                         f"{report.best_num_workers} workers?", classes="question")
            with Horizontal(classes="buttons"):
                yield Button("Apply (a)", id="apply", compact=True)
                yield Button("Keep current (esc)", id="keep", compact=True)

    def on_mount(self) -> None:
        self.query_one("#apply", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "apply")

    def action_apply(self) -> None:
        self.dismiss(True)

    def action_keep(self) -> None:
        self.dismiss(False)
