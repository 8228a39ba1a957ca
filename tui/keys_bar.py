"""The footer: every key with a word, wrapped onto a second line when the terminal is narrow
(Textual's Footer scrolls sideways instead, hiding keys at 80 columns)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from .keys import ACTIONS


def footer_items() -> list[tuple[str, str]]:
    """(keys, word) pairs; keys of one group share a word: "b/B batch"."""
    items: list[tuple[str, str]] = []
    seen_groups: set[str] = set()
    for action in ACTIONS:
        if not action.footer:
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
    def on_resize(self) -> None:
        self.update(self.render_keys(self.size.width))

    def on_mount(self) -> None:
        self.update(self.render_keys(self.size.width or 80))

    @staticmethod
    def render_keys(width: int) -> Text:
        text = Text(no_wrap=True, overflow="crop")
        column = 0
        for keys, word in footer_items():
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
