"""Command-line front of the engine: `ctui train --headless` and friends.

Usage errors exit with code 2 and one line on stderr; nothing here imports Textual.
"""

from .errors import EXIT_FAILED, EXIT_OK, EXIT_STOPPED, EXIT_USAGE, UsageError

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_STOPPED", "EXIT_USAGE", "UsageError"]
