"""The one-line usage error shared by every subcommand; exit codes come from engine.errors."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from ..errors import EXIT_FAILED, EXIT_OK, EXIT_STOPPED, EXIT_USAGE, start_error

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_STOPPED", "EXIT_USAGE", "Parser", "UsageError", "fail",
           "start_error"]

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
