"""A program run's terminal: its output fed through a terminal emulator (pyte), drawn with its
colours, with scrollback.

The app feeds output on its redraw tick (a few times a second), so a program that prints
thousands of chunks a second costs a few redraws. The emulator is sized to this widget, and
the widget says when its size changes so the app can resize the program's pseudo-terminal.
"""

from __future__ import annotations

from functools import lru_cache

import pyte
from rich.color import Color, ColorParseError
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.events import MouseScrollDown, MouseScrollUp, Resize
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

HISTORY_LINES = 2000  # scrollback kept, in lines
# Private modes pyte records without naming them (it keeps them shifted left by 5): arrows as
# ESC O A (DECCKM, set by less and vim), and pastes wrapped in markers.
APPLICATION_CURSOR = 1 << 5
BRACKETED_PASTE = 2004 << 5
PYTE_COLORS = {"brown": "yellow", "default": None}


class EmulatedScreen(pyte.HistoryScreen):
    """pyte's HistoryScreen, keeping the lines that scroll off the top in `history.top`.

    The view scrolls by reading that history, never with prev_page/next_page: those move lines
    in and out of the screen itself and jump back to the bottom at the next output. Without
    them, HistoryScreen's wrapper around every method call only costs time (three times the
    plain Screen's), so it is bypassed.
    """

    __getattribute__ = object.__getattribute__

    def __init__(self, columns: int, lines: int, history: int = HISTORY_LINES) -> None:
        super().__init__(columns, lines, history=history)
        self.scrolled_off = 0  # lines pushed into history, ever: keeps a scrolled view still

    def index(self) -> None:
        bottom = self.margins.bottom if self.margins else self.lines - 1
        if self.cursor.y == bottom:  # HistoryScreen.index keeps the top line
            self.scrolled_off += 1
        super().index()

    def resize(self, lines: int | None = None, columns: int | None = None) -> None:
        """As a terminal does: fewer lines push the top ones into history only as far as the
        cursor needs (pyte drops them, even empty lines below the cursor)."""
        lines = lines or self.lines
        if lines < self.lines:
            drop = max(0, self.cursor.y - (lines - 1))
            buffer = self.buffer
            for y in range(drop):
                self.history.top.append(buffer[y])
            self.scrolled_off += drop
            kept = {y - drop: buffer[y] for y in range(drop, drop + lines) if y in buffer}
            buffer.clear()
            buffer.update(kept)
            self.cursor.y -= drop
            self.lines = lines
            self.dirty.update(range(lines))
            self.set_margins()  # a program's scroll region of the old size no longer fits
        super().resize(lines, columns)

    @property
    def application_cursor(self) -> bool:
        return APPLICATION_CURSOR in self.mode

    @property
    def bracketed_paste(self) -> bool:
        return BRACKETED_PASTE in self.mode


@lru_cache(maxsize=256)
def _color(name: str) -> Color | None:
    if name in PYTE_COLORS:
        name = PYTE_COLORS[name]
        return None if name is None else Color.parse(name)
    if name.startswith("bright"):  # brightred, brightbrown
        name = "bright_" + PYTE_COLORS.get(name[6:], name[6:])
    elif len(name) == 6:  # 256-colour and true-colour cells arrive as rrggbb
        name = "#" + name
    try:
        return Color.parse(name)
    except ColorParseError:
        return None


@lru_cache(maxsize=1024)
def char_style(fg: str, bg: str, bold: bool, italics: bool, underscore: bool,
               strikethrough: bool, reverse: bool) -> Style:
    """The Rich style of one cell from pyte's attributes (blink is left out on purpose)."""
    return Style(color=_color(fg), bgcolor=_color(bg), bold=bold or None,
                 italic=italics or None, underline=underscore or None,
                 strike=strikethrough or None, reverse=reverse or None)


def _style_of(char: pyte.screens.Char) -> Style:
    return char_style(char.fg, char.bg, char.bold, char.italics, char.underscore,
                      char.strikethrough, char.reverse)


def row_segments(row, columns: int, cursor_x: int | None = None) -> list[Segment]:
    """One emulator line as segments of like-styled text; `cursor_x`: draw the cursor there."""
    segments: list[Segment] = []
    text: list[str] = []
    style: Style | None = None
    for x in range(columns):
        char = row[x]
        if not char.data:  # the second cell of a wide character
            continue
        cell_style = _style_of(char)
        if x == cursor_x:
            cell_style = cell_style + Style(reverse=not char.reverse)
        if cell_style != style and text:
            segments.append(Segment("".join(text), style))
            text = []
        style = cell_style
        text.append(char.data)
    if text:
        segments.append(Segment("".join(text), style))
    return segments


class TerminalView(Widget, can_focus=True):
    """The program's screen and scrollback. pageup/pagedown (or the mouse wheel) scroll back,
    end comes back to the bottom; while typing into the program (input mode) the cursor shows
    and the keys go to the program instead (the app routes them)."""

    BINDINGS = [
        Binding("pageup", "page(-1)", "scroll back", show=False),
        Binding("pagedown", "page(1)", "scroll on", show=False),
        Binding("home", "scroll_to_top", "oldest output", show=False),
        Binding("end", "scroll_to_bottom", "newest output", show=False),
    ]

    class Resized(Message):
        """The view's size changed: the program's terminal should match (columns, rows)."""

        def __init__(self, columns: int, rows: int) -> None:
            super().__init__()
            self.columns = columns
            self.rows = rows

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, TerminalView.Resized)

    def __init__(self, history: int = HISTORY_LINES, **kwargs) -> None:
        super().__init__(**kwargs)
        self.emulator = EmulatedScreen(80, 24, history=history)
        self._stream = pyte.Stream(self.emulator)
        self.scrolled = 0  # lines scrolled back from the bottom
        self.input_mode = False
        self.shows = 0  # times new output was drawn: the app redraws a few times a second
        self.border_title = "Terminal"

    # ------------------------------------------------------------ output

    def feed(self, text: str) -> None:
        """Run output through the emulator; draw it on the next refresh."""
        before = self.emulator.scrolled_off
        try:
            self._stream.feed(text)
        except Exception:  # a sequence pyte cannot take: start clean rather than stop showing
            self.emulator.reset()
            self._stream = pyte.Stream(self.emulator)
        if self.scrolled:  # keep a scrolled-back view on the same lines
            self.scrolled = min(self.scrolled + self.emulator.scrolled_off - before,
                                len(self.emulator.history.top))
        self.shows += 1
        self._update_titles()
        self.refresh()

    def clear(self) -> None:
        """Forget the screen and its scrollback (another run is attached)."""
        self.emulator = EmulatedScreen(self.emulator.columns, self.emulator.lines,
                                       history=self.emulator.history.size)
        self._stream = pyte.Stream(self.emulator)
        self.scrolled = 0
        self._update_titles()
        self.refresh()

    def set_input_mode(self, on: bool) -> None:
        self.input_mode = on
        if on:
            self.scrolled = 0
        self.set_class(on, "-input")
        self._update_titles()
        self.refresh()

    @property
    def text(self) -> str:
        """What the view shows now, as plain text (for tests and for copying)."""
        columns = self.emulator.columns
        return "\n".join("".join(self._row(y)[x].data for x in range(columns)).rstrip()
                         for y in range(self.emulator.lines))

    def _update_titles(self) -> None:
        if self.input_mode:
            self.border_title = "Terminal · typing into the program (ctrl+] comes back)"
        elif self.scrolled:
            self.border_title = f"Terminal · {self.scrolled} lines back (end: newest)"
        else:
            self.border_title = "Terminal"

    # ------------------------------------------------------------ drawing

    def _row(self, y: int):
        history = self.emulator.history.top
        if y < self.scrolled:
            return history[len(history) - self.scrolled + y]
        return self.emulator.buffer[y - self.scrolled]

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        emulator = self.emulator
        if y >= emulator.lines:
            return Strip.blank(width, self.rich_style)
        cursor = emulator.cursor
        cursor_x = None
        if (self.input_mode and not self.scrolled and not cursor.hidden
                and y == cursor.y):
            cursor_x = min(cursor.x, emulator.columns - 1)
        segments = row_segments(self._row(y), emulator.columns, cursor_x)
        base = self.rich_style
        return Strip(Segment.apply_style(segments, base)).adjust_cell_length(width, base)

    def on_resize(self, event: Resize) -> None:
        columns, rows = self.size
        if columns <= 0 or rows <= 0:
            return
        self.emulator.resize(rows, columns)
        self.scrolled = min(self.scrolled, len(self.emulator.history.top))
        self.post_message(self.Resized(columns, rows))
        self.refresh()

    # ------------------------------------------------------------ scrollback

    def scroll_back(self, lines: int) -> None:
        """Scroll `lines` further back (negative: towards the newest output)."""
        self.scrolled = max(0, min(self.scrolled + lines, len(self.emulator.history.top)))
        self._update_titles()
        self.refresh()

    def action_page(self, direction: int) -> None:
        self.scroll_back(-direction * max(self.size.height - 1, 1))

    def action_scroll_to_top(self) -> None:
        self.scroll_back(len(self.emulator.history.top))

    def action_scroll_to_bottom(self) -> None:
        self.scroll_back(-self.scrolled)

    def on_mouse_scroll_up(self, event: MouseScrollUp) -> None:
        event.stop()
        self.scroll_back(3)

    def on_mouse_scroll_down(self, event: MouseScrollDown) -> None:
        event.stop()
        self.scroll_back(-3)
