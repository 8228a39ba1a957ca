"""The footer: every key with a word, wrapped onto a second line when the terminal is narrow
(Textual's Footer scrolls sideways instead, hiding keys at 80 columns). Which keys depends on
what is attached (keys.TRAINING, PROGRAM) and on typing into a program (keys.INPUT)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from .keys import ACTIONS, INPUT, PROGRAM, TRAINING

INPUT_NOTE = "typing goes to the program"


def footer_items(mode: str = TRAINING) -> list[tuple[str, str]]:
    """(keys, word) pairs; keys of one group share a word: "b/B batch"."""
    items: list[tuple[str, str]] = []
    seen_groups: set[str] = set()
    for action in ACTIONS:
        if mode not in action.footer:
            continue
        if action.group:
            if action.group in seen_groups:
                continue
            seen_groups.add(action.group)
            keys = "/".join(a.label for a in ACTIONS if a.group == action.group)
            items.append((keys, action.group))
        else:
            items.append((action.label, action.short))
    return items


class KeysBar(Static):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.mode = TRAINING

    def show_mode(self, mode: str) -> None:
        if mode != self.mode:
            self.mode = mode
            self.update(self.render_keys(self.size.width or 80, mode))

    def on_resize(self) -> None:
        self.update(self.render_keys(self.size.width, self.mode))

    def on_mount(self) -> None:
        self.update(self.render_keys(self.size.width or 80, self.mode))

    @staticmethod
    def render_keys(width: int, mode: str = TRAINING) -> Text:
        if mode == INPUT:
            # As many lines as the program's footer, so the terminal above keeps its size.
            text = Text(no_wrap=True, overflow="crop")
            text.append(" INPUT ", style="bold reverse")
            text.append(f" {INPUT_NOTE}  ")
            text.append_text(KeysBar._lay_out(footer_items(INPUT), width))
            lines = KeysBar._lay_out(footer_items(PROGRAM), width).plain.count("\n")
            text.append("\n" * lines)
            return text
        return KeysBar._lay_out(footer_items(mode), width)

    @staticmethod
    def _lay_out(items: list[tuple[str, str]], width: int) -> Text:
        text = Text(no_wrap=True, overflow="crop")
        column = 0
        for keys, word in items:
            length = len(keys) + 1 + len(word)
            if column and column + 2 + length > width:
                text.append("\n")
                column = 0
            elif column:
                text.append("  ")
                column += 2
            text.append(keys, style="bold reverse")  # reverse: visible with NO_COLOR too
            text.append(" " + word)
            column += length
        return text
