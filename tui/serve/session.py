"""One browser session's panel: what `ctui serve` runs per tab (textual-serve's web driver on
stdin and stdout). The same panel as `ctui`: it attaches to the live run in the runs folder,
a picker when there are several, or offers to resume an interrupted one; with none of those it
waits for `s` to start a run (opening the URL, reloading or a second tab starts no training)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ctui.engine.cli.errors import Parser


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="ctui-serve-session", description="a panel for one browser session")
    parser.add_argument("--runs-dir", required=True, metavar="DIR")
    options = parser.parse_args(argv)
    try:
        sample = max(float(os.environ.get("CTUI_SAMPLE_SECONDS") or 1), 0.1)
    except ValueError:
        sample = 1.0
    from ctui.engine.scheduling import defer_to_training

    from ..app import CtuiApp, Launch

    defer_to_training()  # inherited from `ctui serve` already; said here for a session alone
    launch = Launch(mode="auto", runs_dir=Path(options.runs_dir), start_on_request=True)
    app = CtuiApp(launch, sample_seconds=sample)
    try:
        app.run()  # stdout is the browser's channel: nothing else may be printed to it
    finally:
        app.close_connections()
    return app.return_code or 0


if __name__ == "__main__":
    sys.exit(main())
