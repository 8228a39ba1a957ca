"""Where an engine's events go: its sinks (called on the training thread, in order), the
queues of subscribers on other threads, and a bounded history for those who come late."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator

from .events import Event, LogLine
from .history import History

Sink = Callable[[Event], None]
_END = object()


class EventFanout:
    def __init__(self, past: Iterable[Event] = ()) -> None:
        self.sinks: list[Sink] = []
        self._subscribers: list[queue.Queue] = []
        self._lock = threading.Lock()  # guards _subscribers and _history
        self._history: History[Event] = History()
        for event in past:
            self._history.add(event.kind, event)
        self._done = threading.Event()  # set when the run has ended and sinks are closed

    def emit(self, event: Event) -> None:
        """To every subscriber and sink. A sink that raises is switched off, and says so: a
        broken sink must never stop training."""
        with self._lock:
            self._history.add(event.kind, event)
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            subscriber.put(event)
        for sink in list(self.sinks):
            try:
                sink(event)
            except Exception as error:
                self.sinks.remove(sink)
                name = getattr(sink, "name", type(sink).__name__)
                self.emit(LogLine(level="warning", message=f"{name} failed and is switched off: "
                                  f"{type(error).__name__}: {error}"))

    def events(self, history: bool = True) -> Iterator[Event]:
        """Every event (the kept past first, when history is true) until close()."""
        subscriber: queue.Queue = queue.Queue()
        with self._lock:
            past = self._history.items() if history else []
            ended = self._done.is_set()
            if not ended:
                self._subscribers.append(subscriber)
        yield from past
        if ended:
            return
        while (item := subscriber.get()) is not _END:
            yield item

    @property
    def history(self) -> list[Event]:
        with self._lock:
            return self._history.items()

    def close(self) -> None:
        """Close the sinks (their optional close()), then end every subscriber's iteration."""
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    pass
        with self._lock:
            subscribers, self._subscribers = self._subscribers, []
            self._done.set()
        for subscriber in subscribers:
            subscriber.put(_END)

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)
