"""When an engine saves: every N steps, every M minutes, again after a failed save, and in time
before --time-limit (with room kept for the final save). Counters only; the engine saves."""

from __future__ import annotations

import time

from .config import RunConfig

FINAL_SAVE_RESERVE = 30.0  # seconds kept before the time limit, at least, for the last save


class CheckpointSchedule:
    def __init__(self, config: RunConfig) -> None:
        self.every_steps = config.checkpoint_every_steps
        self.every_minutes = config.checkpoint_every_minutes
        self.time_limit = config.time_limit
        self._last_save = time.monotonic()
        self._steps_since_save = 0
        self._retry = False
        self._longest_save = 0.0
        self.started_at = time.monotonic()

    def start(self) -> None:
        self.started_at = time.monotonic()

    def step(self) -> None:
        self._steps_since_save += 1

    def due(self) -> bool:
        if self._retry:
            return True
        if self.every_steps and self._steps_since_save >= self.every_steps:
            return True
        return bool(self.every_minutes) and \
            time.monotonic() - self._last_save >= self.every_minutes * 60

    def saving(self) -> None:
        self._last_save = time.monotonic()
        self._steps_since_save = 0
        self._retry = False

    def finished(self, seconds: float, failed: bool) -> None:
        """A save's outcome: a failed one is retried at the next step boundary."""
        self._longest_save = max(self._longest_save, seconds)
        if failed:
            self._retry = True

    def out_of_time(self) -> bool:
        """True once the time limit, less room for the final save, is reached."""
        if not self.time_limit:
            return False
        reserve = max(FINAL_SAVE_RESERVE, 3 * self._longest_save)
        return time.monotonic() - self.started_at >= self.time_limit - reserve
