"""Reads a run connection's blocking event stream on its own thread.

A daemon thread the reader owns (rather than a Textual worker from the default executor): if a
connection cannot be interrupted, quitting the panel still never waits for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ctui.engine.events import Event

from .connection import RunConnection


class EventReader:
    def __init__(self, connection: RunConnection, on_event: Callable[[Event], None],
                 on_end: Callable[[str], None]) -> None:
        self.connection = connection
        self._on_event = on_event
        self._on_end = on_end
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ctui-events", daemon=True)

    def start(self) -> EventReader:
        self._thread.start()
        return self

    def _run(self) -> None:
        error = ""
        try:
            for event in self.connection.events():
                if self._closed.is_set():
                    return
                self._on_event(event)
        except Exception as exc:  # a broken connection ends the stream, it never raises in the UI
            error = f"{type(exc).__name__}: {exc}"
        if not self._closed.is_set():
            self._on_end(error)

    def send(self, command) -> None:
        self.connection.send(command)

    def close(self) -> None:
        """Stop reporting and close the connection (the run host keeps running)."""
        self._closed.set()
        try:
            self.connection.close()
        except Exception:
            pass
