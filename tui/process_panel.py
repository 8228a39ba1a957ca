"""A program run's processes, as the host saw them: the program and its children (DataLoader
workers, a launcher's ranks), each with pid, name, CPU, RAM and GPU memory (n/a: not known)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from ctui.engine.telemetry import WORKER_NAME

from .fitted import FittedStatic
from .format import size
from .model import RunModel

ROWS_SHORT, ROWS_TALL = 3, 8  # processes listed below / from 34 lines of terminal


class ProcessPanel(FittedStatic):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.border_title = "Processes"

    def show(self, model: RunModel) -> None:
        self.show_content(self._render_model(model))

    def _render_model(self, model: RunModel) -> Table | Text:
        tree, ended = model.processes, model.program_ended
        if ended is not None and (tree is None or tree.time <= ended.time):
            return Text("no process running", style="dim")  # the list from before its end
        if tree is None or not tree.rows:
            return Text("reading the processes…", style="dim")
        rows = list(tree.rows)
        room = ROWS_TALL if self.app.size.height >= 34 else ROWS_SHORT
        shown = rows if len(rows) <= room else rows[: room - 1]
        table = Table.grid(padding=(0, 1), expand=True)
        for name, justify in (("pid", "right"), ("name", "left"), ("cpu", "right"),
                              ("ram", "right"), ("gpu", "right")):
            table.add_column(name, justify=justify, no_wrap=True,
                             overflow="ellipsis" if name == "name" else "fold",
                             ratio=1 if name == "name" else None)
        table.add_row(*(Text(h, style="bold") for h in ("pid", "name", "CPU", "RAM", "GPU")))
        for pid, name, cpu, rss_mb, gpu_mb in shown:
            table.add_row(str(pid), str(name), f"{cpu:.0f}%", size(rss_mb), size(gpu_mb))
        if len(shown) < len(rows):
            rest = rows[len(shown):]
            table.add_row("", Text(f"+{len(rest)} more", style="dim"),
                          f"{sum(r[2] for r in rest):.0f}%", size(sum(r[3] for r in rest)),
                          size(_total(r[4] for r in rest)))
        return table


def program_workers(model: RunModel) -> Text:
    """A program run's DataLoader workers for the host pane, from its process tree (torch names
    each worker pt_data_worker on Linux): never the program itself or its other processes,
    which the host's own count takes for workers when no process carries that name."""
    tree, ended = model.processes, model.program_ended
    if tree is None or (ended is not None and tree.time <= ended.time):
        return Text("workers: n/a", style="dim")
    workers = [row for row in tree.rows if row[1] == WORKER_NAME]
    text = Text(f"workers {len(workers)}")
    if workers:
        text.append(f" using {sum(row[2] for row in workers):.0f}% CPU")
    return text


def _total(values) -> float | None:
    known = [value for value in values if value is not None]
    return sum(known) if known else None
