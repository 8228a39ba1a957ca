"""Errors and exit codes that several layers share (engine, run host, CLI). Torch-free, so any
layer may import it; the one-line message a start error prints lives here too."""

from __future__ import annotations

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


def first_line(error: BaseException) -> str:
    """An exception's first line, or its type's name when it says nothing."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


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
