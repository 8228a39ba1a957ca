"""The control panel: a client of a run host, showing the run and the machine, taking keys.

Threads never touch widgets: the event reader and the telemetry sampler post messages; handlers
fold them into the RunModel and mark it dirty; a timer redraws a few times a second at most,
whatever the step rate (or however fast a program run prints).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App, ComposeResult
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches

from ctui.engine.config import RunConfig, default_runs_dir
from ctui.engine.errors import first_line
from ctui.engine.events import (
    CheckpointNow,
    CheckpointSaved,
    Command,
    EpochEnded,
    Failed,
    LogLine,
    Pause,
    Position,
    Resume,
    ScriptScalars,
    ScriptScalarsLatest,
    SetBatchSize,
    SetNumWorkers,
    Settings,
    Start,
    State,
    StateChanged,
    StepLogged,
    Stop,
    Tune,
    TuneReport,
)
from ctui.engine.host.registry import RunInfo, host_is_live
from ctui.engine.live_settings import LIVE_SETTINGS
from ctui.engine.runs import NOT_NEXT, clear_next_settings, write_next_settings
from ctui.engine.telemetry import Snapshot, Telemetry

from .commands import PanelCommands
from .confirm_screen import ChoiceScreen
from .connection import Backend, HostBackend, saved_config
from .edit_screen import EditScreen
from .epoch_plot import EpochPlot
from .epoch_table import EpochTable
from .gpu_panel import GpuPanel
from .help_screen import HelpScreen
from .host_panel import HostPanel
from .keys import bindings
from .keys_bar import KeysBar
from .log_pane import LogPane
from .messages import ConnectionEnded, RunEvent, TelemetrySampled
from .model import RunModel
from .picker_screen import PickerScreen
from .process_panel import ProcessPanel
from .program_run import ProgramRunMixin
from .ranks import reattach_after_restart
from .reader import EventReader
from .runs_view import RunsScreen
from .script_logs import ScriptLogsPanel
from .terminal_view import TerminalView
from .training_panel import TrainingPanel
from .tune_screen import TuneScreen

SEVERITY = {"info": "information", "warning": "warning", "error": "error"}
TelemetryFactory = Callable[[Callable[[Snapshot], None]], Any]  # emit -> .start() .close() .pid

# The panel's own CPU time is taken from the training on the same cores, and each frame costs the
# compositor, the terminal (or a browser's websocket) the same whatever it holds. So the figures
# that change several times a second (progress, step figures, checkpoints, epochs, settings, the
# gauges) are drawn together, in one frame at most this often: once a second, as the gauges are
# sampled (and as nvidia-smi -l 1 or htop refresh). Anything else (a state change, a log line,
# an answer to a key, the program's output) is drawn at the next tick.
ROUTINE_SECONDS = 1.0
ROUTINE_EVENTS = (Position, StepLogged, CheckpointSaved, EpochEnded, Settings)
CLOCK_SECONDS = 1.0  # the training pane's clocks and the checkpoint's age


@dataclass(frozen=True)
class Launch:
    """What `ctui` was asked to do when the panel opens."""

    mode: str = "auto"  # auto: attach, offer a resume, or start | attach | pick | start | run
    runs_dir: Path = field(default_factory=lambda: Path(default_runs_dir()))
    run: RunInfo | None = None  # attach: the run, already found
    config: RunConfig | None = None  # start: the settings, or
    build_config: Callable[[], tuple[RunConfig, str | None]] | None = None  # ...(may load torch)
    resume: str | None = None  # start: "latest" or a checkpoint file
    start_program: Callable[[], RunInfo] | None = None  # run: starts `ctui run`'s host
    # auto with nothing live: wait for `s` rather than start a run (a browser tab: opening a
    # URL, a reload or a phone's visit must not start training on the box)
    start_on_request: bool = False


class NothingLive(Exception):
    """No live run to attach to, and this panel starts one only when asked."""


class CtuiApp(ProgramRunMixin, App[None]):
    CSS_PATH = "ctui.tcss"
    TITLE = "ctui"
    BINDINGS = bindings()
    COMMANDS = App.COMMANDS | {PanelCommands}
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (34, "-tall")]

    def __init__(self, launch: Launch | None = None, backend: Backend | None = None,
                 telemetry: TelemetryFactory | None = None, clock: Callable[[], float] = time.time,
                 redraw_seconds: float = 0.25, sample_seconds: float = 1.0) -> None:
        super().__init__()
        self.launch = launch or Launch()
        self.backend: Backend = backend or HostBackend()
        make_telemetry = telemetry or (lambda emit: Telemetry(emit=emit, interval=sample_seconds))
        self.telemetry = make_telemetry(lambda snapshot: self.post_message(
            TelemetrySampled(snapshot)))
        self.clock = clock
        self.redraw_seconds = redraw_seconds
        # Gauges read more often than once a second are drawn as often (CTUI_SAMPLE_SECONDS).
        self.routine_seconds = min(ROUTINE_SECONDS, sample_seconds)
        self.monotonic = time.monotonic  # the redraw schedule's clock (tests set their own)
        self.model = RunModel()
        self.current_run: RunInfo | None = None
        self.next_config: RunConfig | None = None  # settings for the next start or resume
        self.exit_note = ""  # printed by `ctui` once the panel has closed
        self._reader: EventReader | None = None
        self._generation = 0
        self._dirty = True  # redraw at the next tick
        self._routine_dirty = False  # redraw at the next tick routine_seconds after the last
        self._drawn = 0.0  # time.monotonic() of the last redraw
        self._opening = False  # a start or attach is under way
        self._tune_asked = False  # this panel sent Tune on this connection: offer its result
        self._init_program_run()

    def compose(self) -> ComposeResult:
        with Horizontal(id="top"):
            with Vertical(id="left"):
                yield TrainingPanel(self.clock, id="training")
                yield ProcessPanel(id="processes")  # a program run's
                yield ScriptLogsPanel(id="script-logs")  # a program run's TensorBoard scalars
            with Vertical(id="gauges"):
                yield GpuPanel(id="gpu")
                yield HostPanel(id="host")
        with Horizontal(id="middle"):
            yield EpochTable(id="epochs")
            yield EpochPlot(id="plot")
            yield TerminalView(id="terminal")  # a program run's
        yield LogPane(id="log")
        yield KeysBar(id="keys")

    def on_mount(self) -> None:
        self.set_interval(self.redraw_seconds, self.redraw)
        self.telemetry.start()
        self.open_run()

    def on_unmount(self) -> None:
        self.close_connections()

    def close_connections(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self.telemetry.close()

    # ------------------------------------------------------------ redraw

    def redraw(self, force: bool = False) -> None:
        """Push the model into the widgets, when something changed since the last time (each
        pane is repainted only when what it shows changed)."""
        now = self.monotonic()
        since = now - self._drawn
        if not (force or self._dirty or (self._routine_dirty and since >= self.routine_seconds)):
            if since >= CLOCK_SECONDS:  # nothing new: the clocks move on
                self._drawn = now
                with suppress(NoMatches):
                    self.query_one(TrainingPanel).show(self.model)
            return
        model = self.model
        try:
            training = self.query_one(TrainingPanel)
            terminal = self.query_one(TerminalView)
        except NoMatches:  # the screen is being built, swapped or torn down: the next tick
            return
        self._dirty = self._routine_dirty = False
        self._drawn = now
        self._draw_program(terminal)
        training.show(model)
        if model.program_run:
            self.query_one(ProcessPanel).show(model)
        self.query_one(KeysBar).show_mode(self.keys_mode())
        self.query_one(GpuPanel).show(model)
        self.query_one(HostPanel).show(model)
        self.query_one(EpochTable).show_epochs(model.epochs)
        plot = self.query_one(EpochPlot)
        if plot.display:
            plot.show_epochs(model.epochs)
        log = self.query_one(LogPane)
        for line in model.take_log():
            log.add(line)

    def on_resize(self) -> None:
        self._dirty = True

    def say(self, message: str, level: str = "info", toast: bool = True) -> None:
        """Tell the user: a toast now (unless not wanted) and a line in the log pane."""
        if toast:
            self.notify(message, severity=SEVERITY[level], markup=False,
                        timeout=6 if level != "info" else 3)
        self.model.new_log.append(LogLine(level=level, message=message, time=self.clock()))
        self._dirty = True

    # ------------------------------------------------------------ messages from threads

    def on_run_event(self, message: RunEvent) -> None:
        if message.generation != self._generation:
            return  # from a connection the panel has since left
        event = message.event
        before, before_program = self.model.state, self.model.program_run
        self.model.apply(event)
        if isinstance(event, ROUTINE_EVENTS) and self.model.program_run == before_program:
            self._routine_dirty = True
            return
        self._dirty = True
        if isinstance(event, (ScriptScalars, ScriptScalarsLatest)):
            self.query_one(ScriptLogsPanel).add(event)
        elif isinstance(event, TuneReport):
            self._offer_tune(event)
        elif isinstance(event, Failed):
            self.notify(event.message, severity="error", markup=False, timeout=10)
        elif isinstance(event, StateChanged) and event.state != before:
            self._announce(event)

    def _announce(self, event: StateChanged) -> None:
        if self.model.program_run:
            if event.state in State.ENDED:
                self.notify(f"The program's run has {event.state}. `ctui run --resume "
                            f"{self.model.name}` runs it again; q quits.", markup=False)
        elif event.state == State.FINISHED:
            self.notify("Training finished. s starts a new run, q quits.", markup=False)
        elif event.state == State.STOPPED:
            self.notify("Stopped with a checkpoint. r resumes it, q quits.", markup=False)

    def on_connection_ended(self, message: ConnectionEnded) -> None:
        if message.generation != self._generation:
            return
        was_live = self.model.live
        self.model.host_gone()
        if was_live and self.current_run is not None and host_is_live(self.current_run.run_dir):
            # a data-parallel job restarting its ranks (rank 0 serves): attach to the new one
            self.run_worker(reattach_after_restart(self, self.current_run, message.generation),
                            exclusive=True, group="reattach")
        elif was_live:
            self.say("the run host went away before the run ended (killed, or the machine "
                     "restarted?); r resumes from the last checkpoint", "warning")
        if message.error:
            self.say(f"connection lost: {message.error}", "warning")
        self._dirty = True

    def on_telemetry_sampled(self, message: TelemetrySampled) -> None:
        self.model.apply_telemetry(message.snapshot)
        self._routine_dirty = True

    # ------------------------------------------------------------ opening a run

    @work(exclusive=True, group="open")
    async def open_run(self) -> None:
        """Find what to show (after the first frame is drawn), then attach to it."""
        self._opening = True
        try:
            run = await self._choose_run(self.launch)
            if run is None:
                self.exit()
                return
            await self.attach(run)
        except NothingLive as nothing:
            self.model.waiting = "No run is training.\ns starts a new one.\nl lists the runs."
            self.say(str(nothing), toast=False)
        except Exception as error:  # a host that cannot start: say why, keep the panel usable
            self.say(f"could not open a run: {first_line(error)}", "error")
        finally:
            self._opening = False

    async def _choose_run(self, launch: Launch) -> RunInfo | None:
        if launch.mode == "attach" and launch.run is not None:
            return launch.run
        if launch.mode == "run" and launch.start_program is not None:
            self.say("starting the program's run host…")
            return await asyncio.to_thread(launch.start_program)
        if launch.mode == "start":
            config, resume = launch.config, launch.resume
            if config is None and launch.build_config is not None:
                config, resume = await asyncio.to_thread(launch.build_config)
            return await self._start(config or RunConfig(runs_dir=str(launch.runs_dir)), resume)
        runs = await asyncio.to_thread(self.backend.list_runs, launch.runs_dir)
        live = [run for run in runs if run.status == "live"]
        if len(live) == 1:
            return live[0]
        if live:
            return await self.push_screen_wait(PickerScreen(live))
        if launch.mode == "pick":
            raise LookupError(f"no live run in {launch.runs_dir} any more")
        interrupted = [run for run in runs if run.status == "interrupted"]
        if interrupted:
            run = min(interrupted, key=lambda r: r.age if r.age is not None else float("inf"))
            answer = await self.push_screen_wait(ChoiceScreen(
                "Interrupted run",
                f"{run.name} stopped without finishing at epoch {run.epoch}/{run.epochs}. "
                "Resume it from its last checkpoint?",
                [("resume", "r", "Resume"), ("new", "n", "New run"), ("quit", "q", "Quit")]))
            if answer == "resume":
                try:
                    config = await asyncio.to_thread(saved_config, run.run_dir)
                except (OSError, ValueError) as error:  # a damaged or foreign config.json
                    self.say(f"cannot resume {run.name}: {error}")
                    return None
                started = await self._start(config, "latest")
                await asyncio.to_thread(clear_next_settings, run.run_dir)  # now its own
                return started
            if answer != "new":
                return None
        elif launch.start_on_request:
            raise NothingLive(f"No run is training in {launch.runs_dir}. s starts a new one; "
                              "l lists the runs and compares them.")
        return await self._start(RunConfig(runs_dir=str(launch.runs_dir)), None)

    async def _start(self, config: RunConfig, resume: str | None) -> RunInfo:
        verb = "resuming" if resume else "starting"
        self.say(f"{verb} a run of {config.task}…")
        self.next_config = config
        return await asyncio.to_thread(self.backend.start, config, resume)

    async def attach(self, run: RunInfo) -> None:
        connection = await asyncio.to_thread(self.backend.connect, run)
        if self._reader is not None:
            self._reader.close()
        self._generation += 1
        generation = self._generation
        self._tune_asked = False  # a report in the history was offered (or not) before
        self.current_run = run
        self.model = RunModel(name=run.name, run_dir=str(run.run_dir), connected=True,
                              telemetry=self.model.telemetry, gpu_history=self.model.gpu_history)
        self._reset_program_run()
        self.telemetry.pid = run.pid
        if self.next_config is None or self.next_config.run_dir not in (None, str(run.run_dir)):
            try:
                self.next_config = await asyncio.to_thread(saved_config, run.run_dir)
            except (OSError, ValueError):
                self.next_config = None  # the host has not written it yet: defaults will do
        self._reader = EventReader(
            connection,
            on_event=lambda event: self.post_message(RunEvent(event, generation)),
            on_end=lambda error: self.post_message(ConnectionEnded(generation, error)),
        ).start()
        self._dirty = True

    def send(self, command: Command) -> None:
        if self._reader is None:
            self.say("not connected to a run", "warning")
            return
        try:
            self._reader.send(command)
        except Exception as error:
            self.say(f"could not send {command.kind}: {first_line(error)}", "error")

    # ------------------------------------------------------------ keys

    def _refuse_unless_live(self, what: str) -> bool:
        """True when the run takes commands; else say why `what` cannot happen."""
        if self.model.live:
            return False
        if not self.model.connected:
            self.say(f"{what}: no run attached yet", "warning")
        else:
            self.say(f"{what}: the run has {self.model.state}; r resumes it, s starts a new "
                     "one", "warning")
        return True

    def action_start_run(self) -> None:
        if self._refuse_for_program("start"):
            return
        model = self.model
        if model.live:
            if model.state == State.IDLE:
                self.send(Start())
                self.say("starting training")
            elif model.state == State.PAUSED:
                self.say("the run is paused: p resumes it", "warning")
            else:
                self.say(f"the run is already {model.state}", "warning")
            return
        if self._opening:
            self.say("still opening a run", "warning")
            return
        self._restart(resume=None)

    def action_resume_run(self) -> None:
        if self._refuse_for_program("resume"):
            return
        model = self.model
        if model.live:
            self.say("the run is live: nothing to resume (p pauses and resumes it)", "warning")
        elif self.current_run is None:
            self.say("no run to resume yet", "warning")
        elif model.state == State.FINISHED:
            self.say("the run finished all its epochs; s starts a new one", "warning")
        else:
            self._restart(resume="latest")

    @work(exclusive=True, group="open")
    async def _restart(self, resume: str | None) -> None:
        config = self._current_config()
        if resume:
            config = config.replace(run_dir=str(self.current_run.run_dir))
        else:
            config = config.replace(run_dir=None)
        self._opening = True
        try:
            run = await self._start(config, resume)
            if resume:  # the resumed run records them as its own settings now
                await asyncio.to_thread(clear_next_settings, config.run_dir)
            await self.attach(run)
        except Exception as error:
            self.say(f"could not start the run: {first_line(error)}", "error")
        finally:
            self._opening = False

    def action_toggle_pause(self) -> None:
        if self._refuse_unless_live("pause"):
            return
        if self.model.state == State.PAUSED:
            self.send(Resume())
            self.say("resuming at the next step")
        elif self.model.state == State.RUNNING:
            self.send(Pause())
            self.say("pausing at the next step")
        else:
            self.say(f"cannot pause: the run is {self.model.state}", "warning")

    def action_stop_run(self) -> None:
        if self._refuse_unless_live("stop"):
            return
        if self.model.state == State.STOPPING:
            self.say("already stopping", "warning")
            return
        self.send(Stop("stopped from the panel"))
        if self.model.program_run:
            self.say("stopping the program: SIGINT, then SIGTERM and SIGKILL if it has not "
                     "ended after a grace period")
        else:
            self.say("stopping: a checkpoint is saved first")

    def action_checkpoint(self) -> None:
        if self._refuse_for_program("checkpoint") or self._refuse_unless_live("checkpoint"):
            return
        self.send(CheckpointNow())
        self.say("checkpoint requested: saved at the next step")

    def _live_settings(self, what: str):
        """The batch size and workers in force (for a program: of its observed DataLoader,
        from the host's Settings or else its latest pass), or None, saying why."""
        if self._refuse_unless_live(what):
            return None
        model = self.model
        if model.program_run:
            if model.settings is not None and model.settings.batch_size:
                return model.settings
            if model.loader is None:
                self.say(f"{what}: no DataLoader of the program seen yet; it can be changed "
                         "once its first pass has begun", "warning")
            return model.loader
        if model.settings is None:
            self.say(f"{what}: the run has not reported its settings yet", "warning")
        return model.settings

    def _set_live(self, name: str, change) -> None:
        """A key's change of a live setting: checked against the one table of live settings,
        then sent; the run's answer (applied or refused) shows in the log."""
        setting = LIVE_SETTINGS[name]
        settings = self._live_settings(setting.label)
        if settings is None:
            return
        current = getattr(settings, name)
        new = change(current)
        if new < setting.low:
            self.say(f"{name} is already {current}, the smallest allowed", "warning")
            return
        problem = setting.problem(new)
        if problem:
            self.say(problem, "warning")
            return
        self.send(setting.command_for(new))

    def action_halve_batch(self) -> None:
        self._set_live("batch_size", lambda current: current // 2)

    def action_double_batch(self) -> None:
        self._set_live("batch_size", lambda current: current * 2)

    def action_fewer_workers(self) -> None:
        self._set_live("num_workers", lambda current: current - 1)

    def action_more_workers(self) -> None:
        self._set_live("num_workers", lambda current: current + 1)

    def _current_config(self) -> RunConfig:
        config = self.next_config or RunConfig(runs_dir=str(self.launch.runs_dir))
        settings = self.model.settings
        if settings is not None and self.model.live:
            config = config.replace(**{name: getattr(settings, name) for name in LIVE_SETTINGS})
        return config

    def action_edit_settings(self) -> None:
        if self.model.program_run:
            self._edit_program_loader()
            return
        self.push_screen(EditScreen(self._current_config(), live=self.model.live),
                         self._apply_edits)

    def _apply_edits(self, changes: dict | None) -> None:
        if not changes:
            return
        live = self.model.live
        for name, setting in LIVE_SETTINGS.items():
            if live and name in changes:
                self.send(setting.command_for(changes[name]))
        later = {k: v for k, v in changes.items() if not live or k not in LIVE_SETTINGS}
        self.next_config = self._current_config().replace(**changes)
        # The live ones are told by the run's answers: one line per change, not two.
        if later:
            self.say("for the next run (s) or resume (r): "
                     + ", ".join(f"{k}={v}" for k, v in later.items()))
            if self.current_run is not None:
                self._keep_for_next(self.current_run.run_dir, later)

    @work(thread=True, group="keep")
    def _keep_for_next(self, run_dir: Path, changes: dict) -> None:
        """Keep the edits with the run (next.json), so a detach, reattach or resume keeps
        them; the task is not kept (a file in the run folder never chooses code to run)."""
        kept = {k: v for k, v in changes.items() if k not in NOT_NEXT}
        try:
            if kept:
                write_next_settings(run_dir, kept)
        except (OSError, ValueError) as error:
            self.call_from_thread(self.say, f"could not keep the edits with the run: "
                                  f"{first_line(error)}", "warning")

    def action_autotune(self) -> None:
        if self._refuse_for_program("autotune") or self._refuse_unless_live("autotune"):
            return
        if self.model.state != State.RUNNING:
            self.say(f"autotune needs a running run; it is {self.model.state}", "warning")
            return
        self.send(Tune())
        self._tune_asked = True
        self.say("autotune: timing short trials of workers and batch size (up to 60 s)")

    def _offer_tune(self, report: TuneReport) -> None:
        """The result dialog, only for a tune this panel asked for on this connection: a
        report in the history of a reattached run (applied or not), or from `ctui tune` or
        another panel, stays in the log, where the run says what it found."""
        if not self._tune_asked or not self.model.live:
            return
        self._tune_asked = False
        self.push_screen(TuneScreen(report), self._apply_tune)

    def _apply_tune(self, apply: bool | None) -> None:
        report, settings = self.model.tune_report, self.model.settings
        if not apply or report is None:
            return
        if not self.model.live:
            self.say("the run is no longer live; nothing applied", "warning")
            return
        changes = []
        if settings is None or report.best_batch_size != settings.batch_size:
            changes.append(SetBatchSize(batch_size=report.best_batch_size))
        if settings is None or report.best_num_workers != settings.num_workers:
            changes.append(SetNumWorkers(num_workers=report.best_num_workers))
        if not changes:  # autotune kept the current settings: nothing to apply, nothing to say
            self.say("the current settings stay: nothing to apply")
            return
        for command in changes:
            self.send(command)
        self.say(f"applying batch size {report.best_batch_size}, "
                 f"{report.best_num_workers} workers")

    def action_toggle_plot(self) -> None:
        if self.model.program_run:
            self._cycle_program_view()
            return
        self.screen.toggle_class("show-plot")
        self._dirty = True

    def action_show_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_show_runs(self) -> None:
        self.push_screen(RunsScreen(self.launch.runs_dir))

    def action_request_quit(self) -> None:
        model = self.model
        if not (model.live and model.state in (State.RUNNING, State.PAUSED, State.IDLE)):
            self._leave("")
            return
        what = "The program" if model.program_run else "Training"
        self.push_screen(ChoiceScreen(
            "Quit", f"{model.name} is {model.state}. {what} goes on without the panel "
            "unless you stop it.",
            [("detach", "d", "Detach"),
             ("stop", "s", "Stop it" if model.program_run else "Stop and save"),
             ("cancel", "c", "Cancel")]), self._quit_answer)

    def _quit_answer(self, answer: str | None) -> None:
        name, run_dir = self.model.name, self.model.run_dir
        if self.model.program_run and answer in ("detach", "stop"):
            if answer == "stop":
                self.send(Stop("stopped from the panel"))
            self._leave(f"stopping {name}: its program gets SIGINT (then SIGTERM, SIGKILL)"
                        if answer == "stop" else f"detached from {name}: its program keeps "
                        f"running. Watch it again with `ctui attach {name}`")
        elif answer == "detach":
            self._leave(f"detached from {name}: it keeps training. Watch it again with "
                        f"`ctui attach {name}`")
        elif answer == "stop":
            self.send(Stop("stopped from the panel"))
            self._leave(f"stopping {name} with a checkpoint. Continue it later with "
                        f"`ctui train --resume --run-dir {run_dir}`")

    def _leave(self, note: str) -> None:
        self.exit_note = note
        self.exit()

