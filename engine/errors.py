"""Errors and exit codes that several layers share (engine, run host, CLI). Torch-free, so any
layer may import it; the one-line message a start error prints lives here too."""

from __future__ import annotations

import os
import re
import sysconfig
import traceback
from pathlib import Path

from .config import ConfigError
from .safefs import UnsafePathError

EXIT_OK = 0  # finished
EXIT_FAILED = 1  # the run failed (data missing, an error in training)
EXIT_USAGE = 2  # a bad flag or value: nothing was started
EXIT_STOPPED = 3  # stopped early (signal, stop command, time limit) with a checkpoint to resume


class TaskError(Exception):
    """A task could not be built (missing data, bad user task); the message says what to do."""


class CheckpointError(Exception):
    """A checkpoint cannot be used; the message names the file and why. `corrupt`: the file
    itself is damaged (not merely unloadable now)."""

    def __init__(self, message: str, corrupt: bool = False) -> None:
        super().__init__(message)
        self.corrupt = corrupt


class RunBusy(Exception):
    """Another live process trains this run."""


class SaveFailed(RuntimeError):
    """A checkpoint could not be written (a full or read-only disk) in a run nobody can resume
    from a pause (a blocking train()); the message says what is on disk and how to go on."""


def first_line(error: BaseException) -> str:
    """An exception's first line, or its type's name when it says nothing."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


DEBUG_HINT = "CTUI_DEBUG=1 shows the whole traceback"
# Frames in these folders are not the user's: ctui itself, the standard library, installed
# packages (torch). The innermost frame outside them is where the user's code went wrong.
_NOT_USER = tuple(str(Path(folder).resolve()) + os.sep for folder in {
    Path(__file__).resolve().parent, Path(__file__).resolve().parent.parent / "tui",
    *(sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib"))})


def user_location(error: BaseException) -> str:
    """`file.py:42` of the innermost frame of the user's own code in the error's traceback
    (a task file, a model's forward), or "" when the error did not pass through it."""
    frames = [(frame.filename, frame.lineno) for frame in
              traceback.extract_tb(error.__traceback__)]
    # A DataLoader worker's error comes back with the worker's traceback as text only
    frames += [(name, int(line)) for name, line in _TEXT_FRAME.findall(str(error))]
    found = ""
    for name, line in frames:
        if name.startswith("<") or os.path.realpath(name).startswith(_NOT_USER):
            continue
        found = f"{name}:{line}"
    return found


_TEXT_FRAME = re.compile(r'^\s*File "([^"\n]+)", line (\d+)', re.MULTILINE)


def user_error_line(error: BaseException) -> str:
    """`Type: first line (at file.py:42; CTUI_DEBUG=1 shows the whole traceback)`: one line
    that says what went wrong in the user's code and where."""
    where = user_location(error)
    suffix = f" (at {where}; {DEBUG_HINT})" if where else f" ({DEBUG_HINT})"
    return f"{type(error).__name__}: {first_line(error)}{suffix}"


def start_error(error: Exception) -> tuple[str, int] | None:
    """The one-line message and exit code for an error raised while a run is set up (bad
    device, task, folder or checkpoint), the same for headless runs and run hosts; None for
    others."""
    if isinstance(error, ConfigError):
        return str(error), EXIT_USAGE
    if isinstance(error, UnsafePathError):  # a folder ctui will not adopt: the user's to fix
        return (error.strerror if error.filename and error.filename in error.strerror
                else f"{error.filename}: {error.strerror}"), EXIT_USAGE
    if isinstance(error, RunBusy):
        return f"{error}; attach to it with `ctui attach` or stop it first", EXIT_USAGE
    if isinstance(error, TaskError):
        return str(error), EXIT_USAGE if str(error).startswith("--task") else EXIT_FAILED
    if isinstance(error, CheckpointError):
        return f"cannot resume: {error}", EXIT_FAILED
    return None
