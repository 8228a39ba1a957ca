"""Exit codes and the one-line usage error shared by every subcommand."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

EXIT_OK = 0  # finished
EXIT_FAILED = 1  # the run failed (data missing, an error in training)
EXIT_USAGE = 2  # a bad flag or value: nothing was started
EXIT_STOPPED = 3  # stopped early (signal, stop command, time limit) with a checkpoint to resume


class UsageError(Exception):
    """A user error: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def fail(message: str, code: int) -> NoReturn:
    print(f"ctui: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def start_error(error: Exception) -> tuple[str, int] | None:
    """The one-line message and exit code for an error raised while a run is set up (bad
    device, task or checkpoint), the same for headless runs and run hosts; None for others."""
    from ..checkpoint import CheckpointError
    from ..config import ConfigError
    from ..run_folder import RunBusy
    from ..safefs import UnsafePathError
    from ..tasks import TaskError

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
