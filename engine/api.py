"""The one-call notebook API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .config import RunConfig
from .control import Engine
from .events import EpochEnded, Event, Failed


def train(config: RunConfig | None = None, *, resume: str | bool | None = None,
          on_event: Callable[[Event], None] | None = None, **settings: Any) -> list[EpochEnded]:
    """Train in this process and return the per-epoch results.

    `train(task="digits", epochs=3)` or `train(RunConfig(...))`. Interrupting the kernel
    (KeyboardInterrupt) stops at the next step with a checkpoint, which `resume=True` continues.
    """
    config = config.replace(**settings) if config else RunConfig(**settings)
    engine = Engine(config, resume=resume).start()
    epochs: list[EpochEnded] = []
    try:
        for event in engine.events():
            if on_event is not None:
                on_event(event)
            if isinstance(event, EpochEnded):
                epochs.append(event)
            elif isinstance(event, Failed):
                raise RuntimeError(event.message)
    except KeyboardInterrupt:
        engine.stop("interrupted from the keyboard")
        engine.wait()
        raise
    return epochs
