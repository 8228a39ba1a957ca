"""The one-call notebook API."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from .config import RunConfig
from .control import Engine
from .events import EpochEnded, Event, Failed


def train(config: RunConfig | None = None, *, resume: str | bool | None = None,
          on_event: Callable[[Event], None] | None = None, **settings: Any) -> list[EpochEnded]:
    """Train on the calling thread and return the per-epoch results.

    `train(task="digits", epochs=3)` or `train(RunConfig(...))`. `on_event(event)` sees every
    event as it happens; if it raises, the run stops with a checkpoint and train() re-raises.
    Interrupting the kernel (KeyboardInterrupt) stops at the next step with a checkpoint, which
    `resume=True` continues; a second interrupt leaves at once.
    """
    config = config.replace(**settings) if config else RunConfig(**settings)
    engine = Engine(config, resume=resume)
    relay = _Relay(engine, on_event)
    engine.add_sink(relay)
    with _interrupt_stops(engine) as interrupted:
        engine.run()  # here, not on a thread: PyTorch's CPU kernels are faster on this one
    if relay.error is not None:
        raise relay.error
    if interrupted:
        raise KeyboardInterrupt(f"stopped with a checkpoint in {engine.run_dir}; continue with "
                                f"train(..., resume=True, run_dir={str(engine.run_dir)!r})")
    for event in engine.history:
        if isinstance(event, Failed):
            raise RuntimeError(event.message)
    return [event for event in engine.history if isinstance(event, EpochEnded)]


class _Relay:
    """Hands events to the caller's callback; its first exception stops the run."""

    name = "on_event"

    def __init__(self, engine: Engine, on_event: Callable[[Event], None] | None) -> None:
        self.engine = engine
        self.on_event = on_event
        self.error: Exception | None = None

    def __call__(self, event: Event) -> None:
        if self.on_event is None or self.error is not None:
            return
        try:
            self.on_event(event)
        except Exception as error:
            self.error = error
            self.engine.stop(f"on_event raised {type(error).__name__}: {error}")


@contextlib.contextmanager
def _interrupt_stops(engine: Engine) -> Iterator[list[int]]:
    """While training on the main thread, Ctrl-C (SIGINT) asks for a clean stop."""
    interrupted: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield interrupted  # no signal arrives on another thread
        return

    def handle(signum, frame) -> None:
        if interrupted:
            raise KeyboardInterrupt  # the second one: leave now, as Python would
        interrupted.append(signum)
        engine.stop("interrupted from the keyboard")

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)
