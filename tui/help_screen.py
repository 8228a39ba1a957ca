"""`?`: every key and what it does, from the same table as the footer and the palette."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from .keys import ACTIONS


def keys_table() -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for action in ACTIONS:
        table.add_row(action.label, action.help)
    table.add_row("ctrl+p", "Command palette: every action by name")
    table.add_row("tab", "Move between the panes; arrows scroll the epoch table and the log")
    table.add_row("pgup/pgdn", "Scroll a program's terminal back and on (home: oldest, end: "
                  "newest); the mouse wheel too")
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help", classes="dialog") as box:
            box.border_title = "Keys"
            box.border_subtitle = "esc closes"
            yield Static(keys_table())
            yield Static("Quitting the panel never stops training: the run host keeps it "
                         "going, and `ctui attach` shows it again.", classes="note")
