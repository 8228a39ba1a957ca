"""The autotune report: median and range of samples per second of each setting, why the best
was chosen, and the offer to apply it."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Static

from ctui.engine.events import TuneReport


class TuneScreen(ModalScreen[bool]):
    """Dismisses True when the user applies the best settings."""

    BINDINGS = [Binding("escape,n", "keep", "Keep current"), Binding("a,y", "apply", "Apply"),
                Binding("q", "quit", "Quit")]

    def __init__(self, report: TuneReport) -> None:
        super().__init__()
        self.report = report

    def compose(self) -> ComposeResult:
        report = self.report
        with Vertical(classes="dialog", id="tune") as box:
            box.border_title = f"Autotune ({report.seconds:.0f}s)"
            table = DataTable(cursor_type="row", zebra_stripes=True)
            table.add_columns("batch", "workers", "samples/s", "range", "n", "note")
            best = (report.best_batch_size, report.best_num_workers)
            current = report.rows[0][:2] if report.rows else best  # the run's own setting
            for batch_size, workers, speed, note, low, high, trials in report.timed():
                picked = (batch_size, workers) == best and not note
                table.add_row(str(batch_size), str(workers), f"{speed:,.0f}",
                              f"{low:,.0f}-{high:,.0f}" if trials and not note else "",
                              str(trials or ""),
                              ("keep" if best == current else "best") if picked else note)
            yield table
            if report.summary:
                yield Static(report.summary, classes="summary", markup=False)
            question = (f"Keep the current settings: batch size {best[0]}, {best[1]} workers."
                        if best == current else
                        f"Apply the best: batch size {best[0]}, {best[1]} workers?")
            yield Static(question, classes="question")
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

    def action_quit(self) -> None:
        """q quits from here too: keep the current settings, then the panel's quit."""
        self.dismiss(False)
        self.app.call_later(self.app.run_action, "request_quit")
