"""Which runs exist under a runs folder, and which of them a live host serves.

A host holds an exclusive flock on RUN_DIR/host.lock for its whole life and records its pid and
process start time in host.json; it is live while both hold. A socket file proves nothing (a
killed host leaves it behind), and a pid alone may have been reused. Only stdlib and psutil
here: the panel's run picker uses this before torch loads.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from ..runs import CONFIG_FILE, METRICS_FILE, checkpoint_dir, list_checkpoints
from .errors import RunNotFound
from .protocol import END_FILE, HOST_FILE, LOCK_NAME

STATUSES = ("live", "finished", "stopped", "failed", "interrupted")


@dataclass(frozen=True)
class RunInfo:
    name: str
    run_dir: Path
    status: str  # one of STATUSES
    epoch: int  # epochs completed
    epochs: int  # epochs planned
    last_checkpoint: Path | None
    checkpoint_age: float | None  # seconds since the last checkpoint was written
    pid: int | None  # the host's pid while live

    @property
    def age(self) -> float | None:
        """checkpoint_age, under the name the panel's run picker reads."""
        return self.checkpoint_age


def read_json(path: Path) -> dict[str, Any]:
    """A small JSON file, or {} when it is missing or torn."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically (temp + rename), private to the user."""
    temp = path.with_name(path.name + ".tmp")
    with open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        json.dump(data, handle)
    os.replace(temp, path)


def host_is_live(run_dir: Path) -> bool:
    """True while the host recorded in host.json runs and holds the run's lock. Both: a
    DataLoader worker forked by a killed host inherits the lock for a few seconds."""
    return _lock_held(Path(run_dir)) and host_process_alive(read_json(Path(run_dir) / HOST_FILE))


def host_process_alive(host: dict[str, Any]) -> bool:
    """The process host.json names still runs: same pid and start time (pids are reused)."""
    try:
        process = psutil.Process(int(host["pid"]))
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        created = host.get("created")
        return created is None or abs(process.create_time() - float(created)) < 1.0
    except (KeyError, TypeError, ValueError, psutil.Error):
        return False


def _lock_held(run_dir: Path) -> bool:
    try:
        fd = os.open(run_dir / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases our shared lock, if we got it
    return False


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in (CONFIG_FILE, HOST_FILE))


def run_status(run_dir: Path) -> tuple[str, int | None]:
    """(status, host pid while live). The end record counts only if it belongs to the host
    that last started here, so a resumed run is live again while a new host runs it."""
    host = read_json(run_dir / HOST_FILE)
    end = read_json(run_dir / END_FILE)
    ended_here = not host or end.get("host_started") == host.get("started")
    if end.get("state") in STATUSES and ended_here:
        return end["state"], None
    if host_is_live(run_dir):
        return "live", host.get("pid")
    if host:
        return "interrupted", None
    return "", None  # never hosted (a headless or notebook run): the caller decides


def run_info(run_dir: Path) -> RunInfo:
    run_dir = Path(run_dir)
    config = read_json(run_dir / CONFIG_FILE).get("config", {})
    epochs = int(config.get("epochs") or 0)
    epoch = last_epoch(run_dir)
    status, pid = run_status(run_dir)
    if not status:  # headless runs leave no end record: judge by the epochs done
        status = "finished" if epochs and epoch >= epochs else "interrupted"
    checkpoint = newest_checkpoint(run_dir)
    age = None
    if checkpoint is not None:
        with contextlib.suppress(OSError):
            age = max(0.0, time.time() - checkpoint.stat().st_mtime)
    return RunInfo(name=run_dir.name, run_dir=run_dir, status=status, epoch=epoch, epochs=epochs,
                   last_checkpoint=checkpoint, checkpoint_age=age, pid=pid)


def list_runs(runs_dir: str | os.PathLike[str]) -> list[RunInfo]:
    """Every run folder directly under runs_dir, oldest start first."""
    folder = Path(runs_dir)
    if not folder.is_dir():
        return []
    runs = [run_info(path) for path in folder.iterdir() if is_run_dir(path)]
    return sorted(runs, key=lambda info: (_started(info.run_dir), info.name))


def resolve_run(runs_dir: str | os.PathLike[str], name_or_path: str) -> Path:
    """A RUN argument -> its folder: a path to a run folder, or a name under runs_dir."""
    candidates = [Path(runs_dir) / name_or_path]
    if os.sep in name_or_path or name_or_path.startswith("."):
        candidates.insert(0, Path(name_or_path))
    else:
        candidates.append(Path(name_or_path))
    for candidate in candidates:
        if is_run_dir(candidate):
            return candidate.resolve()
    raise RunNotFound(f"no run {name_or_path!r} in {runs_dir}; `ctui ls --runs-dir "
                      f"{runs_dir}` lists them")


def find_live_run(runs_dir: str | os.PathLike[str], name_or_path: str | None = None) -> RunInfo:
    """The run a command acts on: the one named, or the only live one when none is named."""
    if name_or_path:
        info = run_info(resolve_run(runs_dir, name_or_path))
        if info.status != "live":
            hint = ""
            if info.status in ("stopped", "interrupted"):
                hint = f"; continue it with: ctui train --detach --resume --run-dir {info.run_dir}"
            raise RunNotFound(f"run {info.name} is not live ({info.status}){hint}")
        return info
    live = [info for info in list_runs(runs_dir) if info.status == "live"]
    if not live:
        raise RunNotFound(f"no live run in {runs_dir}; start one with `ctui train --detach`, "
                          "or name the run (ctui ls lists them)")
    if len(live) > 1:
        raise RunNotFound(f"{len(live)} runs are live in {runs_dir} ("
                          + ", ".join(info.name for info in live) + "); say which one")
    return live[0]


def last_epoch(run_dir: Path) -> int:
    """The newest epoch record in metrics.jsonl, reading the file from its end."""
    path = run_dir / METRICS_FILE
    try:
        with open(path, "rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            tail = b""
            while end > 0:
                start = max(0, end - 65536)
                handle.seek(start)
                tail = handle.read(end - start) + tail
                end = start
                for line in reversed(tail.splitlines()[1 if start else 0:]):
                    if b'"type": "epoch"' in line or b'"type":"epoch"' in line:
                        with contextlib.suppress(ValueError):
                            return int(json.loads(line).get("epoch", 0))
    except OSError:
        pass
    return 0


def newest_checkpoint(run_dir: Path) -> Path | None:
    committed = list_checkpoints(checkpoint_dir(run_dir))
    return committed[-1] if committed else None


def _started(run_dir: Path) -> float:
    started = read_json(run_dir / HOST_FILE).get("started")
    if isinstance(started, (int, float)):
        return float(started)
    for name in (CONFIG_FILE, ""):
        with contextlib.suppress(OSError):
            return (run_dir / name).stat().st_mtime
    return 0.0
