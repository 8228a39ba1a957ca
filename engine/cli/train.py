"""`ctui train`: start (or resume) a run. `--headless` trains in this process and prints."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import ConfigError, RunConfig, load_toml

if TYPE_CHECKING:
    from ..checkpoint import ResumePoint
from .errors import EXIT_FAILED, EXIT_OK, EXIT_STOPPED, EXIT_USAGE, fail
from .options import typed_settings


def build_config(args: argparse.Namespace) -> tuple[RunConfig, ResumePoint | None]:
    """defaults < --config file < the checkpoint's settings (on resume) < flags typed now."""
    settings: dict[str, Any] = {}
    if args.config:
        settings.update(load_toml(args.config))
    typed = typed_settings(args)
    point = None
    if args.resume:
        point = _resume_point(args.resume, {**settings, **typed})
        if point.state is not None:
            settings.update(_saved_settings(point))
        else:  # killed before its first checkpoint: start over with the run's own settings
            settings.update(_recorded_settings(typed.get("run_dir", settings.get("run_dir"))))
    settings.update(typed)
    return RunConfig.from_dict(settings), point


def _resume_point(resume: str, known: dict[str, Any]) -> ResumePoint:
    from ..checkpoint import find_resume_point

    if resume == "latest" and "run_dir" not in known:
        raise ConfigError("resume", "say which run to continue with --run-dir DIR "
                          "(or give a checkpoint file: --resume PATH)")
    return find_resume_point(resume, known.get("run_dir", "."))


def _saved_settings(point: ResumePoint) -> dict[str, Any]:
    """A resumed run keeps its own settings, including batch size and workers changed live,
    and its own run folder."""
    saved = dict(point.state.get("config", {}))
    saved.update(point.state.get("settings", {}))
    saved["run_dir"] = str(point.path.parent.parent)  # RUN/checkpoints/ckpt-....pt -> RUN
    return saved


def _recorded_settings(run_dir: str | None) -> dict[str, Any]:
    import json
    from pathlib import Path

    from ..runs import CONFIG_FILE

    path = Path(run_dir or ".") / CONFIG_FILE
    try:
        return json.loads(path.read_text())["config"]
    except (OSError, ValueError, KeyError):
        return {}


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import CheckpointError
    from .errors import start_error

    try:
        config, resume = build_config(args)
    except (ConfigError, CheckpointError) as error:
        fail(*start_error(error))
    if args.headless:
        return run_headless(config, resume)
    if getattr(args, "detach", False):
        from .runs_cmds import run_detached

        return run_detached(config, resume)
    # Plain `ctui train` opens the panel: the `ctui` command (ctui.tui.main) handles it before
    # reaching here; the engine alone can only train headless or detached.
    fail("choose --headless (train in this terminal) or --detach (train in a background "
         "host); plain `ctui train` opens the panel", EXIT_USAGE)


def run_headless(config: RunConfig, resume: ResumePoint | None) -> int:
    """Train in this process, one line per epoch; signals checkpoint and stop cleanly."""
    from ..checkpoint import CheckpointError
    from ..control import Engine
    from ..events import State
    from ..host.registry import host_is_live
    from ..host.serve import EndRecorder, claim_headless_run
    from ..tasks import TaskError
    from .console import ConsolePrinter, ConsoleSink
    from .errors import start_error

    if config.run_dir and host_is_live(Path(config.run_dir)):
        fail(f"{config.run_dir} is being trained by a live run; attach to it with "
             f"`ctui attach {config.run_dir}` instead", EXIT_USAGE)
    try:
        engine = Engine(config, resume=resume)
    except (ConfigError, TaskError, CheckpointError) as error:
        fail(*start_error(error))
    started = claim_headless_run(engine.run_dir)
    if started is None:
        fail(f"{engine.run_dir} is being trained by a live run host; attach to it with "
             f"`ctui attach {engine.run_dir}` instead", EXIT_USAGE)
    engine.add_sink(EndRecorder(engine.run_dir, started))

    printer = ConsolePrinter(sys.stdout)
    engine.add_sink(ConsoleSink(
        printer, tracebacks=bool(os.environ.get("CTUI_DEBUG")),  # tracebacks for bug reports
        paused_hint=f"`kill -USR1 {os.getpid()}` continues, Ctrl-C saves and stops"))
    _stop_on_signals(engine)
    final = engine.run()  # on this, the main, thread: the fastest for PyTorch's CPU kernels
    printer.close()
    if final == State.STOPPED:
        printer.note(f"stopped; the last checkpoint is {engine.last_checkpoint}; continue with: "
                     f"ctui train --headless --resume --run-dir {engine.run_dir}")
        return EXIT_STOPPED
    return EXIT_OK if final == State.FINISHED else EXIT_FAILED


def _stop_on_signals(engine) -> None:
    """SIGTERM, SIGINT, SIGHUP: checkpoint at the next step and exit. A second SIGINT quits at
    once; the last committed checkpoint is intact either way.

    The handlers run on the training thread, between two bytecodes of whatever it was doing:
    they write with say_now (a buffered print could be in the middle of a write) and only
    queue a command, which the engine applies at the next step boundary."""
    from .console import say_now

    received: list[int] = []

    def handle(signum, frame) -> None:
        name = signal.Signals(signum).name
        if received and signum == signal.SIGINT:
            say_now(f"{name} again: quitting without waiting for the checkpoint")
            os._exit(130)
        received.append(signum)
        say_now(f"{name} received: saving a checkpoint at the next step, then stopping")
        engine.stop(f"{name} received")

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, handle)
    # Headless runs have no panel: SIGUSR1 resumes a run paused by a failed checkpoint.
    signal.signal(signal.SIGUSR1, lambda signum, frame: engine.resume())
