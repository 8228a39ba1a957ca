"""The runs view: every run in the runs folder with the settings that differ between them
highlighted; space marks runs, enter overlays the marked runs' curves (runs_view_overlay)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rich.markup import escape
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from ctui.engine.compare import Comparison, RunSummary, best_text, compare, summarize_all
from ctui.engine.host.registry import UNREADABLE

from .runs_view_overlay import COLOURS, OverlayScreen

DIFFERS = "bold yellow"  # a setting that is not the same in every run
KEYS = (("space", "mark"), ("enter", "compare marked"), ("a", "mark all"), ("r", "reload"),
        ("esc", "back"))
MARK = "✓"


class RunsScreen(ModalScreen[None]):
    """Modal so the panel's own keys (p, x...) do nothing while the list is open."""

    CSS_PATH = "runs_view.tcss"
    BINDINGS = [Binding("escape,q", "dismiss", "back"), Binding("space", "mark", "mark"),
                Binding("a", "mark_all", "mark all"), Binding("r", "reload", "reload")]

    def __init__(self, runs_dir: Path) -> None:
        super().__init__()
        self.runs_dir = Path(runs_dir)
        self.comparison = Comparison(runs=(), differing=())
        self.marked: list[str] = []  # run folders, in the order marked: the legend's order
        self.loaded = False

    def compose(self) -> ComposeResult:
        with Vertical(id="runs-view") as box:
            box.border_title = escape(f"Runs in {self.runs_dir}")
            yield Static("reading the runs…", id="runs-note")
            yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
            yield Static(id="runs-detail")
            yield Static(_keys_line(), id="runs-keys")

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self.action_reload()

    @work(exclusive=True, group="runs")
    async def action_reload(self) -> None:
        runs = await asyncio.to_thread(summarize_all, self.runs_dir)
        self.show_runs(runs)

    def show_runs(self, runs: list[RunSummary]) -> None:
        self.comparison = compare(runs)
        folders = {run.run_dir for run in runs}
        self.marked = [folder for folder in self.marked if folder in folders]
        highlighted = self._cursor_run()  # kept highlighted across a reload (r)
        table = self.query_one(DataTable)
        table.clear(columns=True)
        table.add_column(" ", key="mark")
        table.add_column("run", key="run")
        for name in self.comparison.differing:
            table.add_column(Text(f"*{name}", style=DIFFERS), key=f"setting:{name}")
        for label in ("epochs", "best", "s/epoch", "samples/s", "status", "task"):
            table.add_column(label, key=label)
        for run in runs:
            table.add_row(*self._cells(run), key=run.run_dir)
        if highlighted is not None and highlighted.run_dir in folders:
            table.move_cursor(row=table.get_row_index(highlighted.run_dir))
        self.loaded = True
        note = self.query_one("#runs-note", Static)
        if not runs:
            note.update(Text(f"No runs in {self.runs_dir} yet."))
        elif len(runs) == 1:
            note.update("One run: a second one to compare it with appears here.")
        else:
            note.update(Text.assemble("Settings that differ are ", ("*highlighted", DIFFERS),
                                      "; mark two or more runs to compare."))
        self._show_detail()

    def _cells(self, run: RunSummary) -> list[Text]:
        """Text, never str: DataTable reads a str as markup, and names come from disk."""
        mark = self._mark_cell(run.run_dir)
        if run.status == UNREADABLE:
            return [mark, Text(run.name), *(Text() for _ in self.comparison.differing),
                    *(Text() for _ in range(4)), Text(run.status, style="red"), Text()]
        seconds, speed = run.mean_epoch_seconds, run.samples_per_second
        return [mark, Text(run.name),
                *(Text(value, style=DIFFERS) for _, value in
                  self.comparison.differing_settings(run)),
                *(Text(cell) for cell in (
                    f"{run.epochs_done}/{run.epochs_planned or '?'}", best_text(run.best),
                    "-" if seconds is None else f"{seconds:.2f}",
                    "-" if speed is None else f"{speed:,.0f}", run.status, run.task))]

    def _mark_cell(self, folder: str) -> Text:
        if folder not in self.marked:
            return Text(" ")
        colour = COLOURS[self.marked.index(folder) % len(COLOURS)]
        return Text(MARK, style=f"bold color({colour})")

    # ------------------------------------------------------------ keys

    def _cursor_run(self) -> RunSummary | None:
        table = self.query_one(DataTable)
        if not self.loaded or table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((run for run in self.comparison.runs if run.run_dir == key), None)

    def action_mark(self) -> None:
        run = self._cursor_run()
        if run is None:
            return
        if run.status == UNREADABLE:
            self.notify(f"{run.name} cannot be read: {run.reason}", severity="warning",
                        markup=False)
            return
        if run.run_dir in self.marked:
            self.marked.remove(run.run_dir)
        else:
            self.marked.append(run.run_dir)
        self._redraw_marks()
        table = self.query_one(DataTable)
        if table.cursor_row < table.row_count - 1:
            table.move_cursor(row=table.cursor_row + 1)  # mark several with space, space...

    def action_mark_all(self) -> None:
        readable = [run.run_dir for run in self.comparison.runs if run.status != UNREADABLE]
        self.marked = [] if set(self.marked) == set(readable) else readable
        self._redraw_marks()

    def _redraw_marks(self) -> None:
        table = self.query_one(DataTable)
        for run in self.comparison.runs:
            table.update_cell(run.run_dir, "mark", self._mark_cell(run.run_dir))
        self._show_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_compare()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    def action_compare(self) -> None:
        if len(self.marked) < 2:
            self.notify("Mark two or more runs with space, then press enter.",
                        severity="warning", markup=False)
            return
        chosen = [next(run for run in self.comparison.runs if run.run_dir == folder)
                  for folder in self.marked]
        self.app.push_screen(OverlayScreen(compare(chosen)))

    def _show_detail(self) -> None:
        """The highlighted run in full (the table may be wider than the screen)."""
        run = self._cursor_run()
        detail = self.query_one("#runs-detail", Static)
        if run is None:
            detail.update("")
            return
        if run.status == UNREADABLE:
            detail.update(Text(f"cannot read it: {run.reason}", style="red"))
            return
        text = Text(f"{run.name}  {run.status}  {run.task}  ", no_wrap=True,
                    overflow="ellipsis")
        for name, value in self.comparison.differing_settings(run):
            text.append(f"{name}={value}  ", style=DIFFERS)
        text.append(f"{len(self.marked)} marked" if self.marked else "")
        detail.update(text)


def _keys_line() -> Text:
    text = Text(no_wrap=True, overflow="crop")
    for index, (key, word) in enumerate(KEYS):
        if index:
            text.append("  ")
        text.append(key, style="bold reverse")  # reverse: visible with NO_COLOR too
        text.append(" " + word)
    return text
