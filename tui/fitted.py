"""A Static for panes redrawn several times a second.

Static.update() asks for a layout of the whole screen on every call: every widget is arranged
again and the whole screen repainted; and measuring a Rich renderable's height renders it once
more. The training pane is redrawn twice a second while its height almost never changes, and
those layouts were half of the panel's CPU time, taken from the training on the same cores.

A FittedStatic renders new Rich content (tables, groups) once, at its width, into lines of
segments; their count is its height. It shows those lines (showing them again costs a copy, not a
render) and asks for a layout only when the height changed; otherwise only this pane is
repainted. Text is left to Textual, which draws it in the theme's colours and measures it by
wrapping its characters.
"""

from __future__ import annotations

from rich.console import RenderableType
from rich.segment import Segment, Segments
from rich.text import Text
from textual.visual import visualize
from textual.widgets import Static


class FittedStatic(Static):
    _fitted: tuple[int, int] | None = None  # (width, height) of the content last shown

    def show_content(self, content: RenderableType) -> None:
        width = self.content_size.width
        if width <= 0 or not self.is_attached:  # not laid out yet: the first layout measures it
            self._fitted = None
            self.update(content)
            return
        if isinstance(content, Text):  # Textual draws Text itself (theme colours); measuring
            height = visualize(self, content).get_height(self.styles, width)  # it: a wrap
        else:
            options = self.app.console_options.update(highlight=False, width=width, height=None)
            lines = self.app.console.render_lines(content, options, pad=False, new_lines=True)
            height = len(lines)
            content = Segments([segment for line in lines for segment in line] or [Segment("")])
        fitted = (width, height)
        self.update(content, layout=fitted != self._fitted)
        self._fitted = fitted

    def set_title(self, title: str) -> None:
        if self.border_title != title:  # setting it repaints the border even when equal
            self.border_title = title
