"""`ctui train`: start (or resume) a run. `--headless` trains in this process and prints."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import BUILTIN_TASKS, ConfigError, RunConfig, load_toml
from ..distributed.spec import wants_ranks
from ..errors import CheckpointError, RunBusy, TaskError, start_error
from ..events import State
from ..host.registry import host_is_live
from ..preflight import check_before_torch
from ..run_folder import (
    EndRecorder,
    claim_headless_run,
    hold_lock,
    is_run_folder,
    open_run_folder,
    owner_alive,
)
from ..runs import (
    CHECKPOINT_NAME,
    CONFIG_FILE,
    checkpoint_dir,
    list_checkpoints,
    recorded_settings,
)
from ..safefs import UnsafePathError
from ..sinks.console import ConsolePrinter, ConsoleSink, say_now

if TYPE_CHECKING:
    from ..checkpoint import ResumePoint
from .errors import EXIT_FAILED, EXIT_OK, EXIT_STOPPED, EXIT_USAGE, fail
from .options import typed_settings
from .runs_cmds import run_detached


def build_config(args: argparse.Namespace) -> tuple[RunConfig, ResumePoint | None]:
    """defaults < --config file < the run folder's settings (on resume) < flags typed now.

    A checkpoint never chooses code: the task comes from the flags or the run folder's own
    config.json, and only a built-in task is taken from a checkpoint's settings."""
    settings: dict[str, Any] = {}
    if args.config:
        settings.update(load_toml(args.config))
    typed = typed_settings(args)
    _check_early({**settings, **typed})
    point = None
    if args.resume is not None:
        point, resumed = resume_settings(args.resume, {**settings, **typed},
                                         hold=bool(getattr(args, "headless", False)))
        settings.update(resumed)
    settings.update(typed)
    config = RunConfig.from_dict(settings)
    check_before_torch(config)  # the resumed run's own task and device too
    if point is not None and point.state is not None:
        _check_task(config, point, chosen="task" in typed or "task" in settings)
    return config, point


def _check_early(settings: dict[str, Any]) -> None:
    """The typed device and task, before a resume loads a checkpoint (and torch): a typo is
    refused in a fraction of a second. Anything else invalid is left to the full check."""
    try:
        config = RunConfig.from_dict(settings)
    except (ConfigError, TypeError):
        return
    check_before_torch(config)


def resume_settings(resume: str, known: dict[str, Any], hold: bool
                    ) -> tuple[ResumePoint, dict[str, Any]]:
    """The checkpoint to continue from and the settings it brings. hold: take the run's lock
    first (this process trains it), so corrupt checkpoints may be moved aside."""
    if not resume.strip():
        raise ConfigError("resume", "'' is not a checkpoint: give a checkpoint file, or "
                          "--resume alone with --run-dir DIR for the run's newest")
    if resume == "latest":
        if not known.get("run_dir"):
            raise ConfigError("resume", "say which run to continue with --run-dir DIR "
                              "(or give a checkpoint file: --resume PATH)")
        run_dir = _own_run_folder(Path(known["run_dir"]), hold)
        recorded = _recorded_settings(run_dir)
        if not recorded and not list_checkpoints(checkpoint_dir(run_dir)):
            raise ConfigError("resume", f"{run_dir} has nothing to resume: no checkpoint and no "
                              "recorded settings; start a new run without --resume")
        from ..checkpoint import find_resume_point  # loads torch: only with something to load

        point = find_resume_point("latest", run_dir, move_aside=hold)
        if point.state is None and not recorded:
            raise ConfigError("resume", f"{run_dir} has nothing to resume: no checkpoint and no "
                              "recorded settings; start a new run without --resume")
        return point, {**recorded, **_live_settings(point), "run_dir": str(run_dir)}
    from ..checkpoint import ResumePoint, load_checkpoint

    path = Path(resume)
    run_dir = path.parent.parent  # RUN/checkpoints/ckpt-....pt -> RUN
    if path.parent.name == "checkpoints" and CHECKPOINT_NAME.match(path.name) \
            and is_run_folder(run_dir):
        run_dir = _own_run_folder(run_dir, hold)
        point = ResumePoint(path, load_checkpoint(path))
        recorded = _recorded_settings(run_dir) or _checkpoint_settings(point)
        return point, {**recorded, **_live_settings(point), "run_dir": str(run_dir)}
    # A file outside any run folder: a new run folder starts from it; nothing is written near it.
    point = ResumePoint(path, load_checkpoint(path))
    return point, {**_checkpoint_settings(point), **_live_settings(point)}


def _own_run_folder(run_dir: Path, hold: bool) -> Path:

    run_dir = open_run_folder(run_dir)
    if hold:
        hold_lock(run_dir, still_alive=lambda: owner_alive(run_dir))
    return run_dir


def _live_settings(point: ResumePoint) -> dict[str, Any]:
    """Batch size and workers as last changed live (checked when the checkpoint loaded)."""
    if point.state is None:
        return {}
    saved = point.state["settings"]
    return {key: saved[key] for key in ("batch_size", "num_workers") if key in saved}


def _checkpoint_settings(point: ResumePoint) -> dict[str, Any]:
    """A checkpoint's own settings, less anything that names code or a place on disk."""
    if point.state is None:
        return {}
    saved = dict(point.state["config"])
    for key in ("run_dir", "runs_dir", "data_dir"):
        saved.pop(key, None)
    if saved.get("task") not in BUILTIN_TASKS:
        saved.pop("task", None)
    try:
        RunConfig.from_dict(saved)
    except (ConfigError, TypeError) as error:
        raise CheckpointError(f"{point.path}: its saved settings are not valid ({error})") \
            from None
    return saved


def _recorded_settings(run_dir: Path) -> dict[str, Any]:
    """The run folder's own config.json (a folder already checked as the user's own)."""
    path = run_dir / CONFIG_FILE
    try:
        recorded = recorded_settings(run_dir)
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise ConfigError("resume", f"{path} is unreadable ({error}); the run's settings are "
                          "lost: start a new run from the checkpoint file with --resume FILE") \
            from None
    except ValueError:
        raise ConfigError("resume", f"{path} holds no settings; start a new run from the "
                          "checkpoint file with --resume FILE") from None
    try:
        RunConfig.from_dict(recorded)
    except (ConfigError, TypeError) as error:
        raise ConfigError("resume", f"{path} holds invalid settings ({error})") from None
    return recorded


def _check_task(config: RunConfig, point: ResumePoint, chosen: bool) -> None:
    """Refuse, before any import, a checkpoint whose task is not the one the user chose."""
    saved = point.state["config"].get("task")
    if saved != config.task and not chosen:
        raise CheckpointError(f"{point.path} was trained with task {saved!r}, not "
                              f"{config.task!r}; ctui imports no code a checkpoint names: if you "
                              f"trust it, pass --task {saved}")


def run(args: argparse.Namespace) -> int:

    try:
        config, resume = build_config(args)
    except (ConfigError, CheckpointError, UnsafePathError, RunBusy) as error:
        fail(*start_error(error))
    if args.headless and wants_ranks(config):
        return run_ranks_headless(config, resume)
    if args.headless:
        return run_headless(config, resume)
    if getattr(args, "detach", False):
        return run_detached(config, resume)
    # Plain `ctui train` opens the panel: the `ctui` command (ctui.tui.main) handles it before
    # reaching here; the engine alone can only train headless or detached.
    fail("choose --headless (train in this terminal) or --detach (train in a background "
         "host); plain `ctui train` opens the panel", EXIT_USAGE)


def run_ranks_headless(config: RunConfig, resume: ResumePoint | None) -> int:
    """--nproc-per-node/--nnodes: the elastic launcher runs the ranks; rank 0 prints here."""
    from ..distributed.launch import JobError, run_job  # loads torch: the job is starting

    if config.run_dir and host_is_live(Path(config.run_dir)):
        fail(f"{config.run_dir} is being trained by a live run; attach to it with "
             f"`ctui attach {config.run_dir}` instead", EXIT_USAGE)
    try:
        return run_job(config, str(resume.path) if resume and resume.path else None)
    except (ConfigError, UnsafePathError, RunBusy) as error:
        fail(*start_error(error))
    except JobError as error:
        fail(str(error), error.code)


def run_headless(config: RunConfig, resume: ResumePoint | None) -> int:
    """Train in this process, one line per epoch; signals checkpoint and stop cleanly."""
    from ..control import Engine  # loads torch: only once a run is really starting

    if config.run_dir and host_is_live(Path(config.run_dir)):
        fail(f"{config.run_dir} is being trained by a live run; attach to it with "
             f"`ctui attach {config.run_dir}` instead", EXIT_USAGE)
    try:
        engine = Engine(config, resume=resume)
    except (ConfigError, TaskError, CheckpointError, UnsafePathError, RunBusy) as error:
        fail(*start_error(error))
    except OSError as error:  # the run folder could not be written: say where and why
        fail(f"{error.filename or config.run_dir}: {error.strerror or error}", EXIT_FAILED)
    engine.add_sink(EndRecorder(engine.run_dir, claim_headless_run(engine.run_dir)))

    printer = ConsolePrinter(sys.stdout)
    engine.add_sink(ConsoleSink(
        printer, tracebacks=bool(os.environ.get("CTUI_DEBUG")),  # tracebacks for bug reports
        paused_hint=f"`kill -USR1 {os.getpid()}` continues, Ctrl-C saves and stops"))
    _stop_on_signals(engine)
    final = engine.run()  # on this, the main, thread: the fastest for PyTorch's CPU kernels
    printer.close()
    if final == State.STOPPED:
        return _report_stop(printer, engine)
    return EXIT_OK if final == State.FINISHED else EXIT_FAILED


def _report_stop(printer, engine) -> int:
    """Say exactly what is on disk: the checkpoint to continue from, or that there is none."""
    again = f"ctui train --headless --resume --run-dir {engine.run_dir}"
    newest = engine.last_checkpoint
    if newest and not Path(newest).is_file():
        newest = None
    if not engine.save_error:
        printer.note(f"stopped; the last checkpoint is {newest}; continue with: {again}")
        return EXIT_STOPPED
    if newest:
        printer.note(f"stopped, but the final checkpoint could not be saved "
                     f"({engine.save_error}); the newest one on disk is {newest} (the steps "
                     f"after it will be trained again); continue with: {again}")
        return EXIT_STOPPED
    printer.note(f"stopped without a checkpoint: saving failed ({engine.save_error}) and none "
                 "was saved before; there is nothing to resume")
    return EXIT_FAILED


def _stop_on_signals(engine) -> None:
    """SIGTERM, SIGINT, SIGHUP: checkpoint at the next step and exit. A second SIGINT quits at
    once; the last committed checkpoint is intact either way.

    The handlers run on the training thread, between two bytecodes of whatever it was doing:
    they write with say_now (a buffered print could be in the middle of a write) and only
    queue a command, which the engine applies at the next step boundary."""
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
