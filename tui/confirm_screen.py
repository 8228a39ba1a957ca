"""A question with a few answers, each on a key (no mouse needed)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ChoiceScreen(ModalScreen[str | None]):
    """Dismisses with the chosen answer's id, or None on escape.

    choices: (id, key, label) in order; the first is focused, so enter picks it.
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, question: str, choices: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self.title_text = title
        self.question = question
        self.choices = choices

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as box:
            box.border_title = self.title_text
            yield Static(self.question, classes="question")
            with Horizontal(classes="buttons"):
                for choice, key, label in self.choices:
                    yield Button(f"{label} ({key})", id=choice, compact=True)

    def on_mount(self) -> None:
        self.query(Button).first().focus()

    def on_key(self, event) -> None:
        for choice, key, _ in self.choices:
            if event.key == key:
                event.stop()
                self.dismiss(choice)
                return

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
