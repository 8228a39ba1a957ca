"""How the panel reaches runs: a small interface over the run host's client.

The panel never trains in its own process: it lists, starts and attaches to run hosts, and talks
to one through a RunConnection. Tests swap in a scripted backend with the same shape.
Torch-free: nothing here may import ctui.engine.control, loop or tasks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from ctui.engine.config import RunConfig
from ctui.engine.events import Command, Event
from ctui.engine.host.registry import RunInfo
from ctui.engine.runs import read_metrics, read_next_settings, recorded_settings


class RunConnection(Protocol):
    def events(self) -> Iterator[Event]:
        """The run's history, then live events; blocks; ends when the host goes away."""

    def send(self, command: Command) -> None: ...

    def close(self) -> None: ...


class Backend(Protocol):
    def list_runs(self, runs_dir: Path) -> list[RunInfo]: ...

    def start(self, config: RunConfig, resume: str | None = None) -> RunInfo: ...

    def connect(self, run: RunInfo) -> RunConnection: ...


class HostBackend:
    """The real thing: the run host's client (ctui.engine.host), imported when first used."""

    def list_runs(self, runs_dir: Path) -> list[RunInfo]:
        from ctui.engine.host import list_runs

        return [info for info in list_runs(Path(runs_dir))]

    def start(self, config: RunConfig, resume: str | None = None) -> RunInfo:
        from ctui.engine.host import start_host
        from ctui.engine.host.registry import run_info

        run_dir = Path(start_host(config, resume=resume))
        return run_info(run_dir)

    def connect(self, run: RunInfo) -> RunConnection:
        from ctui.engine.host import RunClient

        return RunClient.connect(run.run_dir, timeout=5.0)


def saved_config(run_dir: Path) -> RunConfig:
    """The settings a run was started with, the batch size and workers of its last epoch
    (changed live, perhaps), and the edits kept for its next start or resume (`e`), for
    resuming it. Torch-free, unlike reading the checkpoint."""
    settings = recorded_settings(run_dir)
    for record in reversed(read_metrics(run_dir)):
        if record.get("type") == "epoch":
            settings["batch_size"] = record.get("batch_size") or settings.get("batch_size")
            settings["num_workers"] = record.get("num_workers", settings.get("num_workers"))
            break
    settings.update(read_next_settings(run_dir))
    settings["run_dir"] = os.fspath(run_dir)
    return RunConfig.from_dict(settings)
