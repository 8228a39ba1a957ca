"""A pane redrawn several times a second (FittedStatic) skips the screen's layout when its
height is unchanged: what it shows must still be the newest content, and a pane that grows or
shrinks must still get its new height (nothing cut off, no blank rows left)."""

from __future__ import annotations

import asyncio

from textual.app import App, ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from ctui.tui.fitted import FittedStatic


class Pane(FittedStatic):
    DEFAULT_CSS = "Pane { height: auto; }"


class PaneApp(App):
    def compose(self) -> ComposeResult:
        with Vertical():
            yield Pane("one", id="pane")
            yield Static("below", id="below")


def test_new_content_of_the_same_height_is_shown_and_the_height_follows_the_content() -> None:
    async def scenario() -> None:
        app = PaneApp()
        async with app.run_test(size=(40, 10)) as pilot:
            pane, below = app.query_one(Pane), app.query_one("#below")
            await pilot.pause()
            assert pane.size.height == 1 and below.region.y == 1

            for step in range(3):  # same height: only the pane is repainted
                pane.show_content(f"step {step}")
                await pilot.pause()
                assert pane.render_line(0).text.startswith(f"step {step}")
                assert below.region.y == 1

            pane.show_content("a\nb\nc")  # taller: the widget below moves down
            await pilot.pause()
            assert pane.size.height == 3 and below.region.y == 3
            assert [pane.render_line(y).text.rstrip() for y in range(3)] == ["a", "b", "c"]

            pane.show_content("short")  # shorter again: no rows left behind
            await pilot.pause()
            assert pane.size.height == 1 and below.region.y == 1

            await pilot.resize_terminal(4, 10)  # narrower: "short" wraps to two rows
            await pilot.pause()
            pane.show_content("short wraps")
            await pilot.pause()
            assert pane.size.height >= 2 and below.region.y == pane.size.height

    asyncio.run(scenario())
