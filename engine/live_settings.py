"""The settings a running job can change, in one table: the engine checks and applies them,
`ctui set` parses them, the panel's keys and edit dialog offer them. Adding a live setting
means a row here and a `set_<name>` method on the Trainer that applies it; nothing else.

Torch-free: the panel and the CLI use it before torch loads."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from .config import ConfigError, max_num_workers
from .events import Command, SetBatchSize, SetNumWorkers


@dataclass(frozen=True)
class LiveSetting:
    name: str  # as in RunConfig and the command's field: batch_size
    label: str  # for people: "batch size"
    command: type[Command]
    low: int
    # (training set size, when known) -> the largest allowed value, and why it is the largest
    high: Callable[[int | None], int | None]
    why_high: Callable[[], str]

    def problem(self, value: object, train_size: int | None = None) -> str:
        """'' when value is allowed, else what is allowed, in one line."""
        high = self.high(train_size)
        if isinstance(value, bool) or not isinstance(value, int) or value < self.low or (
                high is not None and value > high):
            allowed = (f"a whole number from {self.low} to {high} (the upper bound is "
                       f"{self.why_high()})" if high is not None
                       else f"a whole number >= {self.low}")
            return f"{self.name}={value!r} refused: use {allowed}"
        return ""

    def parse(self, text: str, train_size: int | None = None) -> int:
        """A typed value, checked; ConfigError naming the setting and what is allowed."""
        try:
            value: object = int(text.strip())
        except ValueError:
            value = text
        problem = self.problem(value, train_size)
        if problem:
            raise ConfigError(self.name, problem.split(": ", 1)[1])
        return value  # type: ignore[return-value]

    def command_for(self, value: int) -> Command:
        return self.command(**{self.name: value})


def _cores() -> str:
    return (f"4 per CPU core ({os.cpu_count()} cores); each worker is a process, so more only "
            "costs memory")


LIVE_SETTINGS: dict[str, LiveSetting] = {
    setting.name: setting for setting in (
        LiveSetting("batch_size", "batch size", SetBatchSize, 1,
                    high=lambda train_size: train_size, why_high=lambda: "the training set's size"),
        LiveSetting("num_workers", "workers", SetNumWorkers, 0,
                    high=lambda train_size: max_num_workers(), why_high=_cores),
    )
}


def setting_of(command: Command) -> LiveSetting | None:
    """The live setting a command changes, if it changes one."""
    for setting in LIVE_SETTINGS.values():
        if isinstance(command, setting.command):
            return setting
    return None


def suggest(name: str) -> str:
    """`batchsize` -> ` (did you mean batch_size?)`, for a typo in `ctui set`."""
    import difflib

    close = difflib.get_close_matches(name.replace("-", "_"), LIVE_SETTINGS, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""
