"""Errors of the run host and its clients: one line for people, and the exit code the CLI uses."""

from __future__ import annotations

from ..errors import EXIT_FAILED, EXIT_USAGE


class HostError(Exception):
    """Something about a run host went wrong; str() is one line naming the run and what to do."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class HostStartError(HostError):
    """The host could not start the run (bad task, device, checkpoint) or died starting."""

    complete = False  # True when the message is the whole story (no need to keep host.log)


class HostUnavailable(HostError, ConnectionError):
    """No live host answers for this run (it ended, was killed, or never started)."""


class RunNotFound(HostError, LookupError):
    """A RUN argument names no run, or no single live run can be chosen."""

    exit_code = EXIT_USAGE
