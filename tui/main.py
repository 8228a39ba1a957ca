"""The `ctui` command.

`ctui`, `ctui attach [RUN]`, `ctui train [flags]` (without --headless or --detach) and `ctui run
[options] -- CMD` (without --detach, in a terminal) open the control panel; every other command
goes to the engine's CLI unchanged. Neither path imports
torch before it is needed, and the panel draws its first frame before anything does.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PANEL_SWITCHES_OFF = ("--headless", "--detach", "-h", "--help")


def panel_command(argv: list[str]) -> str | None:
    """Which panel mode argv asks for, or None when the engine CLI should handle it."""
    if not argv:
        return "auto"
    if argv[0] == "attach":
        return "attach"
    if argv[0] == "train" and not any(arg in PANEL_SWITCHES_OFF for arg in argv[1:]):
        return "start"
    if argv[0] == "run":  # unless --detach: main() asks the CLI's own parser
        return "run"
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["train", *argv]  # `ctui --epochs 3` is `ctui train --epochs 3`
    if argv and argv[0] == "serve":  # the panel in a browser: its own options and checks
        from .serve.command import main as serve_main

        return serve_main(argv[1:])
    mode = panel_command(argv)
    if mode is None:
        from ctui.engine.cli.main import main as engine_main

        return engine_main(argv)
    from ctui.engine.cli.errors import EXIT_USAGE, fail

    terminal = sys.stdin.isatty() and sys.stdout.isatty()
    if mode == "run":
        from ctui.engine.cli.main import main as engine_main
        from ctui.engine.cli.run_cmd import parse_run_argv

        namespace = parse_run_argv(argv[1:])  # usage errors and --help exit here
        if namespace.detach or not terminal:  # no panel: the CLI follows the output instead
            return engine_main(argv)
        return open_panel(_run_launch(namespace))
    if not terminal:
        fail("the control panel needs a terminal; in a script use `ctui train --headless` or "
             "`ctui train --detach`", EXIT_USAGE)
    launch = _launch(mode, argv[1:])
    return open_panel(launch)


def _launch(mode: str, args: list[str]):
    from .app import Launch

    if mode == "auto":
        return Launch(mode="auto", runs_dir=Path(_default_runs_dir()))
    if mode == "attach":
        return _attach_launch(args)
    return _start_launch(args)


def _start_launch(args: list[str]):
    from ctui.engine.cli.errors import EXIT_USAGE, fail
    from ctui.engine.cli.main import build_parser
    from ctui.engine.config import ConfigError

    from .app import Launch

    namespace = build_parser().parse_args(["train", *args])  # usage errors exit 2 here
    runs_dir = Path(getattr(namespace, "runs_dir", None) or _default_runs_dir())
    if namespace.resume:  # finding the checkpoint loads torch: after the first frame
        return Launch(mode="start", runs_dir=runs_dir, build_config=lambda: _config(namespace))
    try:
        config, _ = _config(namespace)
    except ConfigError as error:
        fail(str(error), EXIT_USAGE)
    return Launch(mode="start", runs_dir=runs_dir, config=config)


def _run_launch(namespace):
    """`ctui run -- CMD`: its options checked now (exit 2 before the panel opens); the host
    started once the panel has drawn its first frame."""
    from ctui.engine.cli.run_cmd import build_spec

    from .app import Launch

    if namespace.resume is None:
        build_spec(namespace)
    runs_dir = Path(namespace.runs_dir or _default_runs_dir())
    return Launch(mode="run", runs_dir=runs_dir, start_program=lambda: _start_program(namespace))


def _start_program(namespace):
    """Start the program's run host (in the panel's worker thread); its RunInfo."""
    import contextlib
    import io

    from ctui.engine.cli.run_cmd import start_run
    from ctui.engine.host.registry import run_info

    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            run_dir = start_run(namespace)
    except SystemExit:  # a usage error found late (options beside --resume, say): its words
        raise RuntimeError(said.getvalue().strip().removeprefix("ctui: error: ")
                           or "ctui run refused these options") from None
    return run_info(run_dir)


def _config(namespace) -> tuple:
    """(settings, what to resume from) as `ctui train --detach` hands them to the host."""
    from ctui.engine.cli.train import build_config

    config, point = build_config(namespace)
    resume = None
    if point is not None:
        resume = str(point.path) if point.path is not None else "latest"
    return config, resume


def _attach_launch(args: list[str]):
    from ctui.engine.cli.errors import EXIT_USAGE, Parser, fail
    from ctui.engine.host import HostError, find_live_run, list_runs

    from .app import Launch

    parser = Parser(prog="ctui attach", description="Open the control panel on a live run.")
    parser.add_argument("run", nargs="?", help="the run's name or folder (default: the only "
                        "live run; a picker when there are several)")
    parser.add_argument("--runs-dir", default=None, metavar="DIR",
                        help="folder holding the runs (default: $CTUI_RUNS, else ./runs)")
    options = parser.parse_args(args)
    runs_dir = Path(options.runs_dir or _default_runs_dir())
    if options.run:
        try:
            run = find_live_run(runs_dir, options.run)
        except HostError as error:
            fail(str(error), error.exit_code)
        return Launch(mode="attach", runs_dir=run.run_dir.parent, run=run)
    live = [info for info in list_runs(runs_dir) if info.status == "live"]
    if not live:
        fail(f"no live run in {runs_dir}; `ctui` starts one, `ctui ls` lists runs", EXIT_USAGE)
    if len(live) == 1:
        return Launch(mode="attach", runs_dir=runs_dir, run=live[0])
    return Launch(mode="pick", runs_dir=runs_dir)


def open_panel(launch) -> int:
    from ctui.engine.scheduling import defer_to_training

    from .app import CtuiApp

    try:
        sample = float(os.environ.get("CTUI_SAMPLE_SECONDS") or 1)
    except ValueError:
        from ctui.engine.cli.errors import EXIT_USAGE, fail

        fail(f"CTUI_SAMPLE_SECONDS={os.environ['CTUI_SAMPLE_SECONDS']!r} is not a number of "
             "seconds; use e.g. 0.5 or 2", EXIT_USAGE)
    app = CtuiApp(launch, sample_seconds=max(sample, 0.1))
    defer_to_training()  # before the app starts its threads: they inherit it
    try:
        app.run()
    finally:
        app.close_connections()
    if app.exit_note:
        print(app.exit_note)
    return app.return_code or 0


def _default_runs_dir() -> str:
    from ctui.engine.config import default_runs_dir

    return default_runs_dir()


if __name__ == "__main__":
    sys.exit(main())
