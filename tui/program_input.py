"""Typing into a program run's terminal: keys become the bytes a terminal would send, and what
is typed goes out as a few small TypeInput commands, not one socket line per key.

The host reads at most 20 command lines a second and refuses a line over 4 KiB, so typed text
is sent at most every TYPE_INTERVAL seconds, in pieces whose JSON stays under CHUNK_BYTES.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from ctui.engine.events import TypeInput

TYPE_INTERVAL = 0.1  # seconds between two TypeInput lines: 10 a second, half the host's limit
CHUNK_BYTES = 2048  # the JSON of one TypeInput's text, well under the host's 4 KiB a line
MAX_PENDING = 64 * 1024  # characters waiting to go out; a longer paste is cut, and we say so

# Keys by their Textual names -> what a VT100/xterm sends for them.
NAMED_KEYS = {
    "enter": "\r", "tab": "\t", "shift+tab": "\x1b[Z", "backspace": "\x7f",
    "ctrl+h": "\x08", "escape": "\x1b", "space": " ", "delete": "\x1b[3~",
    "insert": "\x1b[2~", "pageup": "\x1b[5~", "pagedown": "\x1b[6~",
    "home": "\x1b[H", "end": "\x1b[F",
    "f1": "\x1bOP", "f2": "\x1bOQ", "f3": "\x1bOR", "f4": "\x1bOS", "f5": "\x1b[15~",
    "f6": "\x1b[17~", "f7": "\x1b[18~", "f8": "\x1b[19~", "f9": "\x1b[20~",
    "f10": "\x1b[21~", "f11": "\x1b[23~", "f12": "\x1b[24~",
    "ctrl+space": "\x00", "ctrl+at": "\x00", "ctrl+backslash": "\x1c",
    "ctrl+right_square_bracket": "\x1d", "ctrl+circumflex_accent": "\x1e",
    "ctrl+underscore": "\x1f",
}
ARROWS = {"up": "A", "down": "B", "right": "C", "left": "D"}


def key_text(key: str, character: str | None, application_cursor: bool = False) -> str | None:
    """What typing `key` sends to the program, or None for a key with no terminal meaning.
    `application_cursor`: the program asked for arrows as ESC O A (DECCKM), as less and vim do."""
    if key in ARROWS:
        return ("\x1bO" if application_cursor else "\x1b[") + ARROWS[key]
    if key in NAMED_KEYS:
        return NAMED_KEYS[key]
    if key.startswith("ctrl+") and len(key) == 6 and key[5].isalpha():
        return chr(ord(key[5].lower()) - ord("a") + 1)  # ctrl+c -> \x03
    if key.startswith("alt+"):
        rest = key_text(key[4:], character[-1:] if character else None, application_cursor)
        return None if rest is None else "\x1b" + rest
    if character and (character.isprintable() or character in "\r\t\x1b\x7f"):
        return character
    if character and len(character) == 1 and ord(character) < 32:
        return character  # a control character Textual named in a way not listed above
    return None


def pasted_text(text: str, bracketed: bool) -> str:
    """A paste as the program should receive it: newlines as Enter, and wrapped in the
    bracketed-paste markers when the program asked for them (mode 2004)."""
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    return f"\x1b[200~{text}\x1b[201~" if bracketed else text


def first_chunk(text: str, limit: int = CHUNK_BYTES) -> tuple[str, str]:
    """(as much of text as fits one TypeInput, the rest): its JSON at most `limit` bytes."""
    if len(json.dumps(text)) <= limit:
        return text, ""
    size = 2  # the quotes
    for end, char in enumerate(text):
        size += len(json.dumps(char)) - 2
        if size > limit:
            return text[:end], text[end:]
    return text, ""


class TypedText:
    """Collects what is typed and sends it: at once when nothing went out for TYPE_INTERVAL,
    else batched with whatever else is typed meanwhile (a paste of keys is a few lines)."""

    def __init__(self, send: Callable[[TypeInput], None],
                 call_later: Callable[[float, Callable[[], None]], Any],
                 say: Callable[[str, str], None], now: Callable[[], float] = time.monotonic,
                 ) -> None:
        self._send = send
        self._call_later = call_later
        self._say = say
        self._now = now
        self._pending = ""
        self._last_sent = float("-inf")
        self._scheduled = False

    @property
    def pending(self) -> str:
        return self._pending

    def type(self, text: str) -> None:
        room = MAX_PENDING - len(self._pending)
        if len(text) > room:
            self._say(f"typed too much at once: kept the first {MAX_PENDING // 1024} KiB; "
                      "the rest was not sent", "warning")
            text = text[:max(room, 0)]
        self._pending += text
        self._flush_soon()

    def clear(self) -> None:
        self._pending = ""

    def _flush_soon(self) -> None:
        if self._scheduled or not self._pending:
            return
        wait = self._last_sent + TYPE_INTERVAL - self._now()
        if wait <= 0:
            self.flush()
        else:
            self._scheduled = True
            self._call_later(wait, self._flush_later)

    def _flush_later(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        """Send the first chunk now; the rest follows TYPE_INTERVAL later."""
        if not self._pending:
            return
        chunk, self._pending = first_chunk(self._pending)
        self._last_sent = self._now()
        self._send(TypeInput(data=chunk))
        self._flush_soon()
