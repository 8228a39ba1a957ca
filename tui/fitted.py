"""A Static for panes redrawn several times a second.

Static.update() asks for a layout of the whole screen on every call: every widget is arranged
again and the whole screen repainted. The training pane is redrawn four times a second while
its height almost never changes, and those layouts were half of the panel's CPU time, taken
from the training on the same cores. A FittedStatic measures the new content's height (one
render of this pane) and asks for a layout only when the height changed; otherwise only this
pane is repainted.
"""

from __future__ import annotations

from textual.visual import VisualType, visualize
from textual.widgets import Static


class FittedStatic(Static):
    _fitted: tuple[int, int] | None = None  # (width, height) of the content last shown

    def show_content(self, content: VisualType) -> None:
        width = self.content_size.width
        if width <= 0:  # not laid out yet: the first layout measures it
            self._fitted = None
            self.update(content)
            return
        height = visualize(self, content, markup=self._render_markup).get_height(
            self.styles, width)
        fitted = (width, height)
        self.update(content, layout=fitted != self._fitted)
        self._fitted = fitted

    def set_title(self, title: str) -> None:
        if self.border_title != title:  # setting it repaints the border even when equal
            self.border_title = title
