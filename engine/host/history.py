"""What a newly attached client is sent first: the run so far, bounded however long it runs.

Every epoch is kept; of the frequent kinds (steps, log lines, checkpoints...) only the most
recent, so attaching takes well under a second even after days of training.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque

# Most recent events kept per kind; kinds not named keep DEFAULT_KEEP. None keeps all.
KEEP: dict[str, int | None] = {"epoch": None, "step": 1000, "log": 200, "state": 50,
                               "settings": 50, "checkpoint": 20}
DEFAULT_KEEP = 20


class History:
    """Encoded events per kind, each stamped with its arrival order. One thread only."""

    def __init__(self) -> None:
        self._order = itertools.count()
        self._kinds: dict[str, deque[tuple[int, bytes]]] = {}

    def add(self, kind: str, line: bytes) -> None:
        kept = self._kinds.get(kind)
        if kept is None:
            kept = self._kinds[kind] = deque(maxlen=KEEP.get(kind, DEFAULT_KEEP))
        kept.append((next(self._order), line))

    def lines(self) -> list[bytes]:
        """The kept events in the order they happened."""
        return [line for _, line in heapq.merge(*self._kinds.values())]
