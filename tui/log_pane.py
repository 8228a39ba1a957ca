"""The run's messages and warnings, and the panel's own (refused keys, connection changes)."""

from __future__ import annotations

import time

from rich.text import Text
from textual.widgets import RichLog

from ctui.engine.events import LogLine

LEVEL_STYLES = {"warning": "yellow", "error": "bold red"}


class LogPane(RichLog):
    def __init__(self, **kwargs) -> None:
        # min_width=1: RichLog renders at least 78 cells wide by default, so on an 80-column
        # terminal the scrollbar covered each line's last characters. The CSS keeps the
        # scrollbar's gutter from the start, so lines written before it appears fit too.
        super().__init__(max_lines=2000, wrap=True, markup=False, highlight=False, min_width=1,
                         **kwargs)
        self.border_title = "Log"

    def add(self, line: LogLine) -> None:
        text = Text(time.strftime("%H:%M:%S ", time.localtime(line.time)), style="dim")
        prefix = "" if line.level == "info" else f"{line.level}: "
        text.append(prefix + line.message, style=LEVEL_STYLES.get(line.level, ""))
        self.write(text)

    @property
    def text(self) -> str:
        """Everything shown, as plain text (for tests and for copying)."""
        return "\n".join(strip.text for strip in self.lines)
