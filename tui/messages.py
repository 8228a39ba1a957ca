"""Messages posted into the app from background threads (the event reader, telemetry).

post_message is thread-safe and never waits for the UI, so training figures keep flowing even
when the terminal is slow. Messages that only carry the latest value may replace a pending one of
their kind, so a burst of steps collapses to one.
"""

from __future__ import annotations

from textual.message import Message

from ctui.engine.events import Event, Position, ProcessTree, StepLogged
from ctui.engine.telemetry import Snapshot

LATEST_VALUE = (StepLogged, Position, ProcessTree)  # a newer one makes a pending one worthless


class RunEvent(Message):
    """One engine event from the connection numbered `generation` (older ones are dropped)."""

    def __init__(self, event: Event, generation: int) -> None:
        super().__init__()
        self.event = event
        self.generation = generation

    def can_replace(self, message: Message) -> bool:
        # Only step figures, positions and process lists are "latest value" events; every other
        # event (program output included) must arrive.
        return (isinstance(message, RunEvent) and isinstance(self.event, LATEST_VALUE)
                and type(message.event) is type(self.event)
                and message.generation == self.generation)


class ConnectionEnded(Message):
    """The event stream ended: the host went away (or the panel closed the connection)."""

    def __init__(self, generation: int, error: str = "") -> None:
        super().__init__()
        self.generation = generation
        self.error = error


class TelemetrySampled(Message):
    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, TelemetrySampled)
