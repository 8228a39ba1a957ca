"""The one-call notebook API."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .config import ConfigError, RunConfig
from .control import Engine
from .errors import SaveFailed, first_line
from .events import EpochEnded, Event, Failed, State, StateChanged
from .run_folder import EndRecorder, claim_headless_run, record_end

RESUMABLE = ("stopped", "failed", "interrupted")  # `ctui ls` statuses a resume can continue


def train(config: RunConfig | None = None, *, resume: str | bool | None = None,
          on_event: Callable[[Event], None] | None = None, quiet: bool = False,
          **settings: Any) -> list[EpochEnded]:
    """Train on the calling thread and return the per-epoch results.

    `train(task="digits", epochs=3)` or `train(RunConfig(...))`. It shows a progress bar and
    one line per epoch (a widget in Jupyter and Colab); quiet=True shows nothing.
    `on_event(event)` sees every event as it happens; if it raises, the run stops with a
    checkpoint and train() re-raises. Interrupting the kernel (Ctrl-C, on the main thread)
    stops at the next step with a checkpoint and raises KeyboardInterrupt with the call that
    continues it; a second interrupt leaves at once. resume=True continues the run_dir given,
    or else the newest stopped, failed or interrupted run of the same task in the runs folder.
    A checkpoint that cannot be saved (a full disk) stops the run and raises SaveFailed.
    """
    config = config.replace(**settings) if config else RunConfig(**settings)
    say = _Sayer(quiet)
    if resume in (True, "latest") and not config.run_dir:
        run_dir = newest_resumable_run(config)
        say(f"resuming {run_dir}: the newest resumable {config.task} run in {config.runs_dir} "
            f"(pass run_dir=... to choose another)")
        config = config.replace(run_dir=str(run_dir))
    on_main_thread = threading.current_thread() is threading.main_thread()
    if not on_main_thread:
        say("train() runs on a thread other than the main one, where Ctrl-C cannot reach it: "
            "it trains to the end. To stop a run from a notebook, use "
            "Engine(config).start() and engine.stop()")
    engine = Engine(config, resume=resume)
    # host.json and end.json, as a headless run writes them: `ctui ls` shows the run live
    # while it trains, then how it ended.
    started = claim_headless_run(engine.run_dir)
    engine.add_sink(EndRecorder(engine.run_dir, started))
    relay = _Relay(engine, on_event)
    engine.add_sink(relay)
    if not quiet:
        from .sinks.notebook import NotebookProgress

        engine.add_sink(NotebookProgress())
    with _interrupt_stops(engine, on_main_thread) as interrupted:
        engine.run()  # here, not on a thread: PyTorch's CPU kernels are faster on this one
    if relay.error is not None:  # the caller's code failed: the run did not merely stop
        record_end(engine.run_dir, State.FAILED, f"on_event raised "
                   f"{type(relay.error).__name__}: {first_line(relay.error)}", started)
        raise relay.error
    if relay.save_failed:
        raise SaveFailed(f"a checkpoint could not be saved ({engine.save_error}), so the run "
                         f"stopped; the newest one on disk is {engine.last_checkpoint or 'none'}"
                         f". Free space, then continue with {again(config, engine.run_dir)}")
    if interrupted:
        saved = (f"stopped with a checkpoint in {engine.run_dir}" if not engine.save_error else
                 f"stopped, but the final checkpoint could not be saved ({engine.save_error}); "
                 f"the newest on disk is {engine.last_checkpoint or 'none'}")
        raise KeyboardInterrupt(f"{saved}; continue with {again(config, engine.run_dir)}")
    for event in engine.history:
        if isinstance(event, Failed):
            debug = os.environ.get("CTUI_DEBUG") and event.detail
            raise RuntimeError(event.message + (f"\n{event.detail}" if debug else ""))
    return [event for event in engine.history if isinstance(event, EpochEnded)]


def again(config: RunConfig, run_dir: Path) -> str:
    """The train() call that continues this run, as it can be pasted: the settings that
    differ from the defaults, resume=True and the run's folder."""
    defaults = RunConfig()
    given = [f"{item.name}={getattr(config, item.name)!r}"
             for item in dataclasses.fields(config) if item.name != "run_dir"
             and getattr(config, item.name) != getattr(defaults, item.name)]
    return f"train({', '.join([*given, 'resume=True', f'run_dir={str(run_dir)!r}'])})"


def newest_resumable_run(config: RunConfig) -> Path:
    """The run folder in config.runs_dir of the same task that stopped, failed or was
    interrupted with a checkpoint, newest checkpoint first. ConfigError saying what to pass
    when there is none: a resume never starts over silently."""
    from .host.registry import list_runs
    from .runs import recorded_settings

    found = []
    for run in list_runs(config.runs_dir):
        if run.kind != "train" or run.status not in RESUMABLE or run.last_checkpoint is None:
            continue
        try:
            task = recorded_settings(run.run_dir).get("task")
        except (OSError, ValueError):
            continue
        if task == config.task:
            found.append((run.checkpoint_age if run.checkpoint_age is not None else 1e30, run))
    if not found:
        raise ConfigError("resume", f"no stopped or interrupted {config.task} run with a "
                          f"checkpoint in {config.runs_dir}: pass run_dir='...' (the run "
                          "folder; `ctui ls` lists them), or leave out resume=True to start a "
                          "new run")
    return min(found, key=lambda entry: entry[0])[1].run_dir


class _Sayer:
    """train()'s own notes, on the notebook's stdout, unless quiet."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stdout, flush=True)


class _Relay:
    """Hands events to the caller's callback; its first exception stops the run. A failed
    checkpoint pauses an engine until someone resumes it; in a blocking train() nobody can,
    so it stops the run instead and train() raises."""

    name = "on_event"

    def __init__(self, engine: Engine, on_event: Callable[[Event], None] | None) -> None:
        self.engine = engine
        self.on_event = on_event
        self.error: Exception | None = None
        self.save_failed = False

    def __call__(self, event: Event) -> None:
        if isinstance(event, StateChanged) and event.state == State.PAUSED and \
                self.engine.save_error and not self.save_failed:
            self.save_failed = True
            self.engine.stop(f"checkpoint failed: {self.engine.save_error}")
        if self.on_event is None or self.error is not None:
            return
        try:
            self.on_event(event)
        except Exception as error:
            self.error = error
            self.engine.stop(f"on_event raised {type(error).__name__}: {error}")


@contextlib.contextmanager
def _interrupt_stops(engine: Engine, on_main_thread: bool) -> Iterator[list[int]]:
    """While training on the main thread, Ctrl-C (SIGINT) asks for a clean stop."""
    interrupted: list[int] = []
    if not on_main_thread:
        yield interrupted  # Python delivers signals to the main thread only
        return

    def handle(signum, frame) -> None:
        if interrupted:
            raise KeyboardInterrupt  # the second one: leave now, as Python would
        interrupted.append(signum)
        engine.stop("interrupted from the keyboard")

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)
