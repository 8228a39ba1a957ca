"""ctui's engine: a checkpointed, device-aware PyTorch training loop on its own thread.

Importing this package is cheap (no torch, no Textual); torch loads when an Engine or Task is
first used, so the panel can draw its first frame without waiting for it.

    from ctui.engine import Engine, RunConfig
    engine = Engine(RunConfig(task="digits", epochs=3)).start()
    for event in engine.events():
        print(event)
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import ConfigError, RunConfig
from .events import State

_LAZY = {
    "Engine": ".control",
    "train": ".api",
    "Task": ".tasks",
    "TaskError": ".tasks",
    "CheckpointError": ".checkpoint",
    "events": ".events",
}

__all__ = ["ConfigError", "RunConfig", "State", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name], __name__)
        return module if name == "events" else getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
