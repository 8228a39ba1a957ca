"""metrics.jsonl: one JSON object per logged step and per epoch, appended as they happen.

The file lives in a run folder someone else may have tampered with, and on disks that fill up:
it is opened without following links (engine.safefs), a resume rewrite skips lines it cannot
use and says so, and a failed write never leaves a torn line nor switches the file off: records
wait in memory and are written, in order, once the disk takes them again.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .. import safefs
from ..events import EpochEnded, Event, ScriptScalars, StepLogged
from ..runs import METRICS_FILE

MAX_LINE = 1 << 20  # a longer line is tampering, not a record: skipped without holding it


class MetricsFile:
    retry_seconds = 1.0  # while writes fail, retry at most this often: no syscall storm per step
    max_backlog_bytes = 16 << 20  # held records beyond this: the oldest step records go first

    def __init__(self, run_dir: Path, resume_global_step: int | None = None,
                 resume_epochs_done: int | None = None) -> None:
        self.path = run_dir / METRICS_FILE
        self.notes: list[str] = []  # one-line notes about the resume rewrite, for the run's log
        self._messages: list[tuple[str, str]] = []
        self._lock = threading.Lock()  # take_messages() may be polled from another thread
        self._backlog: deque[tuple[bool, bytes]] = deque()  # (is an epoch record, line)
        self._held = 0  # bytes in the backlog
        self._error: OSError | None = None  # the failure being retried, reported once
        self._next_try = 0.0
        self._recovered = self._dropped = 0  # during the current failure
        self._torn_at: int | None = None  # where to cut a failed write's tail we could not cut
        if resume_global_step is not None:
            self._rewrite(resume_global_step, resume_epochs_done)
        self._fd = safefs.open_append(self.path)  # a symlink or FIFO here raises OSError

    def __call__(self, event: Event) -> None:
        if self._fd < 0 or not isinstance(event, (StepLogged, EpochEnded, ScriptScalars)):
            return
        if isinstance(event, ScriptScalars):
            line = _script_lines(event)
        else:
            line = (json.dumps(event.to_dict()) + "\n").encode()
        self._backlog.append((isinstance(event, EpochEnded), line))
        self._held += len(line)
        if self._held > self.max_backlog_bytes:
            self._shed()
        if self._error is None or time.monotonic() >= self._next_try:
            self._flush()

    def take_messages(self) -> list[tuple[str, str]]:
        """(level, message) pairs ("info" | "warning" | "error") since the last call."""
        with self._lock:
            messages, self._messages = self._messages, []
        return messages

    def close(self) -> None:
        if self._fd < 0:
            return
        if self._backlog:
            self._flush()  # a last try, whatever the retry timer says
        if self._backlog or self._dropped:
            self._say("error", f"metrics.jsonl: {len(self._backlog) + self._dropped} records "
                      f"could not be written and are lost ({_why(self._error)})")
        os.close(self._fd)
        self._fd = -1

    # ------------------------------------------------------------ writing

    def _flush(self) -> None:
        """Write the held records in order; on an error keep the rest for a later try."""
        try:
            while self._backlog:
                self._write(self._backlog[0][1])
                self._held -= len(self._backlog.popleft()[1])
                self._recovered += 1
        except OSError as error:  # ENOSPC, EDQUOT, EFBIG, EIO: never raise, the engine would
            self._next_try = time.monotonic() + self.retry_seconds  # switch the file off
            if self._error is None:
                self._error = error
                self._say("warning", f"metrics.jsonl: cannot write ({_why(error)}); holding "
                          f"records in memory and retrying every {self.retry_seconds:g} s")
            return
        if self._error is not None:
            dropped = f"; {self._dropped} step records were dropped" if self._dropped else ""
            self._say("info", f"metrics.jsonl: writable again; wrote {self._recovered} held "
                      f"records{dropped}")
            self._error = None
        self._recovered = self._dropped = 0

    def _write(self, line: bytes) -> None:
        """The whole line or nothing: a failed write's partial tail is cut off again."""
        if self._torn_at is not None:
            os.ftruncate(self._fd, self._torn_at)
            self._torn_at = None
        start = os.fstat(self._fd).st_size  # O_APPEND: the line starts at the current end
        try:
            view = memoryview(line)
            while view:  # one write in practice; a short write is continued
                written = os.write(self._fd, view)
                if not written:
                    raise OSError(0, "write accepted no bytes")
                view = view[written:]
        except OSError:
            self._torn_at = start
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
                self._torn_at = None
            raise

    def _shed(self) -> None:
        """Drop the oldest step records down to 3/4 of the bound (amortized: not per record).
        Epoch records are few and matter most: they are never dropped."""
        if self._dropped == 0:
            self._say("warning", f"metrics.jsonl: over {self.max_backlog_bytes / 2**20:g} MiB "
                      "of records held; dropping the oldest step records")
        kept: deque[tuple[bool, bytes]] = deque()
        for is_epoch, line in self._backlog:
            if not is_epoch and self._held > self.max_backlog_bytes * 3 // 4:
                self._held -= len(line)
                self._dropped += 1
            else:
                kept.append((is_epoch, line))
        self._backlog = kept

    def _say(self, level: str, message: str) -> None:
        with self._lock:
            self._messages.append((level, message))

    # ------------------------------------------------------------ resume

    def _rewrite(self, global_step: int, epochs_done: int | None) -> None:
        """A resumed run repeats what came after its checkpoint: drop those records (steps past
        `global_step`, epochs past `epochs_done`) so each appears once, and skip lines that are
        not records. Streamed into a fresh random-named temp, then renamed over the file."""
        try:
            source = os.fdopen(safefs.open_regular(self.path), "rb")
        except FileNotFoundError:
            return
        bad: list[str] = []

        def copy_kept(out: BinaryIO) -> None:
            for number, line in enumerate(_lines(source), 1):
                keep, problem = _keep(line, global_step, epochs_done)
                if problem:
                    bad.append(f"line {number}: {problem}")
                elif keep:
                    out.write(line.rstrip(b"\r\n") + b"\n")

        with source:
            safefs.write_atomically_with(self.path, copy_kept)
        if bad:
            more = ", ..." if len(bad) > 3 else ""
            self.notes.append(f"metrics.jsonl: skipped {len(bad)} unreadable lines "
                              f"({', '.join(bad[:3])}{more})")


def _lines(source: BinaryIO) -> Iterator[bytes | None]:
    """The file's lines, streamed; one over MAX_LINE comes out as None, read past, not held."""
    while line := source.readline(MAX_LINE + 1):
        if len(line) > MAX_LINE:
            while not line.endswith(b"\n") and (line := source.readline(MAX_LINE)):
                pass
            yield None
        else:
            yield line


def _keep(line: bytes | None, global_step: int, epochs_done: int | None) -> tuple[bool, str]:
    """(keep it, what is wrong with it or "")."""
    if line is None:
        return False, f"longer than {MAX_LINE} bytes"
    if not line.strip():
        return False, ""  # a blank line: nothing lost
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the limit
        return False, "not JSON" if line.endswith(b"\n") else "torn (no line end)"
    if not isinstance(record, dict):
        return False, "not a JSON object"
    step = record.get("global_step")
    if type(step) is not int:  # bool is an int subclass: excluded
        return False, "global_step is not an integer"
    if epochs_done is not None and record.get("type") == "epoch":
        epoch = record.get("epoch")
        if type(epoch) is not int:
            return False, "epoch is not an integer"
        if epoch > epochs_done:
            return False, ""
    return step <= global_step, ""


def _script_lines(event: ScriptScalars) -> bytes:
    """A supervised program's own scalars, one line each (`"type": "script_scalar"`), as
    they were logged: easy to grep or load, and never taken for a step or an epoch."""
    return b"".join((json.dumps({
        "type": "script_scalar", "source": event.source, "path": event.path, "tag": tag,
        "step": step, "value": value, "time": event.time}) + "\n").encode()
        for tag, step, value in event.scalars)


def _why(error: OSError | None) -> str:
    return (error.strerror or str(error)) if error else "unknown error"
