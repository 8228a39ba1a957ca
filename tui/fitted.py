"""A Static for panes redrawn every second or more often.

Static.update() asks for a layout of the whole screen on every call: every widget is arranged
again and the whole screen repainted; and measuring a Rich renderable's height renders it once
more. The training pane is redrawn every second while its height almost never changes, and
those layouts were half of the panel's CPU time, taken from the training on the same cores.

A FittedStatic renders new Rich content (tables, groups) once, at its width, into lines of
segments; their count is its height. It shows those lines (showing them again costs a copy, not a
render) and asks for a layout only when the height changed; otherwise only this pane is
repainted. Content equal to what is shown (the same figures at the same width) is not shown
again: a repaint costs the compositor and the terminal (or a browser's websocket) a frame. Text
is left to Textual, which draws it in the theme's colours and measures it by wrapping its
characters.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import RenderableType
from rich.segment import Segment, Segments
from rich.text import Text
from textual.visual import visualize
from textual.widgets import Static


def text_key(text: Text) -> tuple:
    """What decides how a Text looks (Text's own == compares only its characters and spans)."""
    return (text.plain, tuple(text.spans), str(text.style), text.justify, text.overflow,
            text.no_wrap, text.end, text.tab_size)


class FittedStatic(Static):
    _fitted: tuple[int, int] | None = None  # (width, height) of the content last shown
    _shown: tuple | list[Segment] | None = None  # that content, to not show it again
    _drawn_from: object = None  # see show_drawn_from

    def show_content(self, content: RenderableType) -> None:
        width = self.content_size.width
        if width <= 0 or not self.is_attached:  # not laid out yet: the first layout measures it
            self._fitted = self._shown = None
            self.update(content)
            return
        if isinstance(content, Text):  # Textual draws Text itself (theme colours); measuring
            shown: tuple | list[Segment] = text_key(content)
            height = visualize(self, content).get_height(self.styles, width)  # it: a wrap
        else:
            options = self.app.console_options.update(highlight=False, width=width, height=None)
            lines = self.app.console.render_lines(content, options, pad=False, new_lines=True)
            height = len(lines)
            shown = [segment for line in lines for segment in line] or [Segment("")]
            content = Segments(shown)
        fitted = (width, height)
        if fitted == self._fitted and shown == self._shown:
            return  # the same lines: nothing to repaint
        self.update(content, layout=fitted != self._fitted)
        self._fitted, self._shown = fitted, shown

    def show_drawn_from(self, inputs: object, render: Callable[[], RenderableType]) -> None:
        """Render and show only when `inputs` (immutable values, compared with ==) changed:
        for a pane drawn from figures that change less often than the app redraws."""
        if inputs != self._drawn_from:
            self._drawn_from = inputs
            self.show_content(render())

    def set_title(self, title: str) -> None:
        if self.border_title != title:  # setting it repaints the border even when equal
            self.border_title = title
