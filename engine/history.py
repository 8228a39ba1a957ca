"""A run's past, bounded however long it runs: what a late subscriber of the engine and a newly
attached client of the run host are sent first. One retention policy for both.

Every epoch is kept; of the frequent kinds (steps, log lines, checkpoints...) only the most
recent, so attaching takes well under a second even after days of training. A program's
terminal output is kept by size instead: its newest KEEP_BYTES, enough to redraw its screen
and some scrollback for a client that attaches late.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from typing import Generic, TypeVar

Item = TypeVar("Item")

# Most recent events kept per kind; kinds not named keep DEFAULT_KEEP. None keeps all.
KEEP: dict[str, int | None] = {"epoch": None, "step": 1000, "log": 200, "state": 50,
                               "settings": 50, "checkpoint": 20, "loader_pass": 200,
                               "processes": 1, "program_started": 50, "program_exited": 50,
                               "output": None}
DEFAULT_KEEP = 20
# Kinds kept by size, newest first: at most this many bytes (of an encoded line, or of an
# event's `data`), and always the newest one.
KEEP_BYTES: dict[str, int] = {"output": 4 << 20}


class History(Generic[Item]):
    """Events (or their encoded lines) per kind, each stamped with its arrival order. Not
    thread-safe: its owner serialises access."""

    def __init__(self) -> None:
        self._order = itertools.count()
        self._kinds: dict[str, deque[tuple[int, Item]]] = {}
        self._bytes: dict[str, int] = {}  # held, for the kinds kept by size

    def add(self, kind: str, item: Item) -> None:
        kept = self._kinds.get(kind)
        if kept is None:
            kept = self._kinds[kind] = deque(maxlen=KEEP.get(kind, DEFAULT_KEEP))
        kept.append((next(self._order), item))
        budget = KEEP_BYTES.get(kind)
        if budget is not None:
            held = self._bytes.get(kind, 0) + _size(item)
            while held > budget and len(kept) > 1:
                held -= _size(kept.popleft()[1])
            self._bytes[kind] = held

    def items(self) -> list[Item]:
        """The kept events in the order they happened."""
        return [item for _, item in heapq.merge(*self._kinds.values(), key=lambda pair: pair[0])]

    lines = items  # the host keeps encoded lines


def _size(item: object) -> int:
    if isinstance(item, (bytes, str)):
        return len(item)
    data = getattr(item, "data", "")
    return len(data) if isinstance(data, str) else 0
