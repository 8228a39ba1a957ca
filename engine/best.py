"""`--monitor NAME --mode max|min`: which epoch is the best so far, by one of its figures.

The figures of an epoch are its train and test loss, its accuracy and the task's own (step's
other outputs as train_NAME, evaluate()'s under their names). The best is recomputed from the
run's epoch history, so a resumed run knows it without any state of its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .events import EpochEnded

BEST_CHECKPOINT = "ckpt-best.pt"


@dataclass(frozen=True)
class Best:
    value: float
    epoch: int


def mode_for(monitor: str, mode: str | None) -> str:
    """The given mode, else min for a loss and max for anything else (accuracy, F1, IoU)."""
    return mode or ("min" if monitor.endswith("loss") else "max")


def figures_of(event: EpochEnded) -> dict[str, float]:
    figures: dict[str, float] = {}
    for name in ("train_loss", "test_loss", "test_accuracy"):
        value = getattr(event, name)
        if value is not None:
            figures[name] = value
    figures.update(event.metrics)
    return figures


def figure(event: EpochEnded, name: str) -> float | None:
    """The epoch's figure `name`; None when it has none (not evaluated, or no such figure)."""
    value = figures_of(event).get(name)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def improves(value: float, best: Best | None, mode: str) -> bool:
    """Whether `value` beats the best so far. NaN never does (a diverged epoch is not best)."""
    if math.isnan(value):
        return False
    if best is None:
        return True
    return value > best.value if mode == "max" else value < best.value


def best_in(history: Iterable[dict[str, Any]], monitor: str, mode: str) -> Best | None:
    """The best epoch of a run's history (EpochEnded dicts from its checkpoint)."""
    best = None
    for record in history:
        try:
            event = EpochEnded.from_dict(record)
        except Exception:  # a record this version cannot read: it cannot be the best either
            continue
        value = figure(event, monitor)
        if value is not None and improves(value, best, mode):
            best = Best(value, event.epoch)
    return best
