"""Owning a run folder: which folders ctui may adopt, making new ones, the run's lock, and the
records of who trains it (host.json) and how its run ended (end.json).

A run folder is adopted only when it is the user's own and nobody else can write into it, and
its lock is taken before anything in it is touched (read for resume, renamed, rewritten), so two
starts of one run never both write. Standard library only: the CLI decides before torch loads.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from .config import ConfigError, RunConfig
from .errors import RunBusy
from .events import Event, Failed, State, StateChanged
from .runs import CONFIG_FILE, END_FILE, HOST_FILE, checkpoint_dir, new_run_name
from .safefs import (
    UnsafePathError,
    check_private_dir,
    make_private_dir,
    make_unique_dir,
    read_bounded,
    write_atomically,
)

LOCK_NAME = "host.lock"  # held (flock) by the process training the run, for its whole life
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_held: dict[str, int] = {}  # run folder (real path) -> this process's lock descriptor
_made: set[str] = set()  # run folders (real paths) claim_run_folder made in this process
# What a run's set-up writes before training starts: all a run that failed to start leaves.
_SET_UP_FILES = (CONFIG_FILE, LOCK_NAME, HOST_FILE, "metrics.jsonl")


def is_run_folder(path: Path) -> bool:
    """A folder ctui made for a run: it has config.json, host.json or checkpoints/ (lstat:
    nothing is followed)."""
    for name in (CONFIG_FILE, HOST_FILE, "checkpoints"):
        try:
            os.lstat(path / name)
            return True
        except OSError:
            continue
    return False


def open_run_folder(path: Path) -> Path:
    """An existing run folder to resume or serve: refused unless it is a run folder of this
    user that nobody else can write into, its checkpoints/ likewise."""
    check_private_dir(path)
    if not is_run_folder(path):
        raise UnsafePathError(errno.ENOENT, f"{path} is not a run folder (no config.json or "
                              "checkpoints/ in it)", str(path))
    folder = checkpoint_dir(path)
    if os.path.lexists(folder):
        check_private_dir(folder, "checkpoints folder")
    return path


def claim_run_folder(config: RunConfig, resume: object = None) -> Path:
    """The folder an Engine trains in, adopted (or made) and locked by this process. Resuming
    the newest checkpoint (resume True or "latest") needs an existing run folder."""
    if resume is True or resume == "latest":
        if not config.run_dir:
            raise ConfigError("resume", "say which run to continue: --run-dir DIR (run_dir=... "
                              "from Python); `ctui ls` lists the runs")
        path, made = open_run_folder(Path(config.run_dir)), False
    else:
        made = not (config.run_dir and os.path.lexists(config.run_dir))
        path = new_run_folder(config.run_dir, config.runs_dir, new_run_name(config))
    hold_lock(path, still_alive=lambda: owner_alive(path))
    # Only this claim counts: a folder made by an earlier run of this process is that run's.
    if made:
        _made.add(os.path.realpath(path))
    else:
        _made.discard(os.path.realpath(path))
    return path


def discard_unstarted(run_dir: Path) -> bool:
    """Remove a run folder this process made for a run that then failed to start (a bad task,
    data missing), so no empty run is left behind. Only the files set-up writes are removed;
    a folder holding anything else is left as it is. True when the folder is gone."""
    key = os.path.realpath(run_dir)
    if key not in _made:
        return False
    _made.discard(key)
    folder = Path(run_dir)
    try:  # anything beyond what set-up writes (a checkpoint, a metric) keeps the folder
        if set(os.listdir(folder)) - {*_SET_UP_FILES, "checkpoints"} or \
                os.path.lexists(checkpoint_dir(folder)) and os.listdir(checkpoint_dir(folder)) \
                or os.path.lexists(folder / "metrics.jsonl") and \
                os.lstat(folder / "metrics.jsonl").st_size:
            return False
        for name in _SET_UP_FILES:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(folder / name)
        release_lock(folder)
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(checkpoint_dir(folder))
        os.rmdir(folder)
    except OSError:
        return False
    return True


def owner_alive(run_dir: Path) -> bool:
    """The process the run folder's host.json names still runs."""
    try:
        return process_alive(json.loads(read_bounded(Path(run_dir) / HOST_FILE)))
    except (OSError, ValueError, RecursionError):  # missing, torn or crafted: no live owner
        return False


def process_alive(host: object) -> bool:
    """The process a host.json record names still runs: same pid and start time (pids are
    reused). Anything odd in the record (a crafted pid of 1e400) means no."""
    if not isinstance(host, dict):
        return False
    pid, created = host.get("pid"), host.get("created")
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid < 2**31 or not (
            created is None or isinstance(created, (int, float)) and math.isfinite(created)):
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return created is None or abs(process.create_time() - created) < 1.0
    except psutil.Error:
        return False


def new_run_folder(run_dir: str | None, runs_dir: str, name: str) -> Path:
    """A run folder for a new run: --run-dir when given (created, or an existing empty or
    run folder of this user), else a fresh folder under runs_dir whose name nobody could
    have guessed and made beforehand."""
    if run_dir:
        path = Path(run_dir)
        if make_private_dir(path):
            return path
        with os.scandir(path) as entries:
            empty = not any(entries)
        if not empty and not is_run_folder(path):
            raise UnsafePathError(errno.EEXIST, f"{path} already holds files and is not a run "
                                  "folder; give a new or empty folder", str(path))
        return open_run_folder(path) if is_run_folder(path) else path
    parent = Path(runs_dir)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UnsafePathError(errno.ENOTDIR, f"runs folder {parent} is not a folder",
                              str(parent)) from None
    if not parent.is_dir():
        raise UnsafePathError(errno.ENOTDIR, f"runs folder {parent} is not a folder", str(parent))
    return make_unique_dir(parent, name)


def checkpoints_folder(run_dir: Path) -> Path:
    """RUN/checkpoints, made private or checked like the run folder."""
    folder = checkpoint_dir(run_dir)
    make_private_dir(folder, "checkpoints folder")
    return folder


def hold_lock(run_dir: Path, still_alive: Callable[[], bool] = lambda: False,
              wait: float = 2.0) -> int:
    """Take the run's exclusive lock for the rest of this process's life (a second call in the
    same process returns the same descriptor). DataLoader workers of a killed process keep its
    lock for a few seconds: wait up to `wait` for them, longer unless `still_alive()` says the
    previous owner lives. Raises RunBusy when it stays held."""
    key = os.path.realpath(run_dir)
    if key in _held:
        return _held[key]
    fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDWR | os.O_CREAT | _NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    if not stat.S_ISREG(os.fstat(fd).st_mode) or os.fstat(fd).st_uid != os.geteuid():
        os.close(fd)
        raise UnsafePathError(errno.EPERM, f"{run_dir / LOCK_NAME} is not this user's file",
                              str(run_dir))
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _held[key] = fd
            return fd
        except BlockingIOError:
            now = time.monotonic()
            if now > deadline and (still_alive() or now > deadline + 20.0):
                os.close(fd)
                raise RunBusy(f"{run_dir} is being trained by another live process") from None
            time.sleep(0.05)


def release_lock(run_dir: Path) -> None:
    """Let go of the run (its run has ended in a process that lives on: a notebook)."""
    fd = _held.pop(os.path.realpath(run_dir), None)
    if fd is not None:
        os.close(fd)


class EndRecorder:
    """Writes end.json when the run ends, on the engine thread and before the broadcast sink
    sees the final state, so a client told "stopped" finds `ctui ls` saying so too."""

    name = "end record"

    def __init__(self, run_dir: Path, host_started: float) -> None:
        self.run_dir = run_dir
        self.host_started = host_started
        self._reason = ""

    def __call__(self, event: Event) -> None:
        if isinstance(event, Failed):
            self._reason = event.message
        if isinstance(event, StateChanged) and event.state in (State.FINISHED, State.STOPPED,
                                                               State.FAILED):
            record_end(self.run_dir, event.state, self._reason or event.reason,
                       self.host_started)


def record_end(run_dir: Path, state: str, reason: str, host_started: float) -> None:
    """end.json: how the run ended (finished, stopped, failed) and why."""
    _write_json(run_dir / END_FILE, {"state": state, "reason": reason, "time": time.time(),
                                     "host_started": host_started, "pid": os.getpid()})


def claim_headless_run(run_dir: Path) -> float:
    """A headless run records itself in its folder as a host does (host.json, then end.json),
    so `ctui ls` shows it live while it trains and how it ended. The Engine already holds the
    run's lock (claim_run_folder); returns the start time EndRecorder needs."""
    started = time.time()
    _write_json(run_dir / HOST_FILE, {"pid": os.getpid(), "started": started, "headless": True,
                                      "created": psutil.Process().create_time()})
    return started


def _write_json(path: Path, data: dict) -> None:
    write_atomically(path, json.dumps(data).encode())
