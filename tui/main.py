"""The `ctui` command. Engine commands run without importing Textual or torch up front."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from ctui.engine.cli.main import main as engine_main

    return engine_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
