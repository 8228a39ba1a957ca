"""Pick one of several live runs to attach to."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from ctui.engine.host.registry import RunInfo


def describe(run: RunInfo) -> str:
    epoch = f"epoch {run.epoch}/{run.epochs}" if run.epochs else "starting"
    return f"{run.name}  {run.status}  {epoch}"


class PickerScreen(ModalScreen[RunInfo | None]):
    BINDINGS = [Binding("escape,q", "cancel", "Quit")]

    def __init__(self, runs: list[RunInfo]) -> None:
        super().__init__()
        self.runs = runs

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as box:
            box.border_title = "Several runs are live"
            yield Static("Attach to which? (arrows, enter; esc quits)", classes="question")
            yield OptionList(*(Option(describe(run), id=str(i)) for i, run in
                               enumerate(self.runs)))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.runs[int(event.option.id)])

    def action_cancel(self) -> None:
        self.dismiss(None)
