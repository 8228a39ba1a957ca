"""RUN/output.log: the program's terminal output as plain text, for `ctui logs` and for people.

A terminal program redraws: tqdm rewrites its bar after a carriage return many times a second,
and colours come as ANSI escapes. Here each line keeps only its last state (the text after its
last carriage return), escapes and other control characters are removed, and what is held in
memory is one unfinished line at most, collapsed as it grows. Every byte of output reaches the
file unless it passes MAX_LOG_BYTES; past that the log says how much it did not keep.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..safefs import open_append

OUTPUT_LOG = "output.log"
MAX_LOG_BYTES = 1 << 30  # a program printing 10 MB/s fills this in under two minutes
MAX_PENDING = 1 << 16  # an unfinished line longer than this is written out as it stands

# CSI (colours, cursor moves), OSC (window titles, hyperlinks), and two-character escapes.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
                      r"|\x1b[@-Z\\-_]|\x1b")
# Control characters other than tab (newline and carriage return are handled before this).
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def plain_line(raw: str) -> str:
    """One line as a terminal left it: its last carriage-return redraw, no escapes."""
    raw = raw.rstrip("\r")
    cut = raw.rfind("\r")
    if cut >= 0:
        raw = raw[cut + 1:]
    return _CONTROLS.sub("", _ESCAPES.sub("", raw))


class OutputLog:
    """Appends collapsed lines to RUN/output.log. Fed from one thread (the terminal reader)."""

    def __init__(self, run_dir: Path, limit: int = MAX_LOG_BYTES) -> None:
        self.path = Path(run_dir) / OUTPUT_LOG
        self.limit = limit
        self._fd = open_append(self.path)
        self._size = os.fstat(self._fd).st_size
        self._pending = ""  # the line being written, collapsed at each carriage return
        self.dropped = 0  # characters of output not kept (past the limit, or a failed write)
        self._error = ""

    def feed(self, text: str) -> None:
        """Take a piece of output; whole lines go to the file now."""
        text = self._pending + text
        lines = text.split("\n")
        self._pending = _collapse(lines.pop())
        if len(self._pending) > MAX_PENDING:
            lines.append(self._pending)
            self._pending = ""
        if lines:
            self._write("".join(plain_line(line) + "\n" for line in lines))

    def note(self, message: str) -> None:
        """A line of ctui's own (a start, an exit, a restart), on a line of its own."""
        self.flush_line()
        self._write(f"--- ctui: {message}\n", force=True)

    def flush_line(self) -> None:
        """Write the unfinished line (the program has gone quiet or ended)."""
        if self._pending:
            line, self._pending = self._pending, ""
            if plain_line(line):
                self._write(plain_line(line) + "\n")

    def close(self) -> None:
        if self._fd < 0:
            return
        self.flush_line()
        if self.dropped:
            why = self._error or f"the log reached its limit of {self.limit >> 20} MiB"
            self._write(f"--- ctui: {self.dropped:,} characters of output were not kept here "
                        f"({why})\n", force=True)
        os.close(self._fd)
        self._fd = -1

    def _write(self, text: str, force: bool = False) -> None:
        if self._fd < 0:
            return
        data = text.encode(errors="replace")
        if self._size + len(data) > self.limit and not force:
            if not self.dropped:
                self._raw(f"--- ctui: output.log reached {self.limit >> 20} MiB; the rest of "
                          "the output is not kept (the count follows at the end)\n".encode())
            self.dropped += len(text)
            return
        self._raw(data, count=len(text))

    def _raw(self, data: bytes, count: int = 0) -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            self._size += len(data)
        except OSError as error:  # a full disk: keep supervising, count what was lost
            self._error = error.strerror or str(error)
            self.dropped += count


def _collapse(pending: str) -> str:
    """An unfinished line reduced to its last redraw: cut before the last carriage return that
    has text after it (a trailing one may be the first half of a CR LF)."""
    cut = pending.rfind("\r", 0, len(pending) - 1)
    return pending[cut:] if cut > 0 else pending


def tail_text(run_dir: Path, limit: int = 64 * 1024) -> str:
    """The last `limit` bytes of output.log, from a line start (for a resumed run's screen)."""
    from ..safefs import open_regular

    try:
        fd = open_regular(Path(run_dir) / OUTPUT_LOG)
    except OSError:
        return ""
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - limit)
        data = os.pread(fd, size - start, start)
    except OSError:
        return ""
    finally:
        os.close(fd)
    if start:
        data = data[data.find(b"\n") + 1:]
    return data.decode(errors="replace")
