"""What the panel knows about the run it watches: the engine's events folded into plain fields.

Owned by the UI thread only. The widgets read it when the screen is redrawn (a few times a
second), so a burst of events costs one redraw.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ctui.engine.events import (
    Advice,
    Answer,
    BestCheckpoint,
    CheckpointSaved,
    EpochEnded,
    Event,
    Failed,
    LoaderPass,
    LoggersInfo,
    LogLine,
    Position,
    ProcessTree,
    ProgramExited,
    ProgramOutput,
    ProgramStarted,
    RankStats,
    ResizeTerminal,
    Settings,
    State,
    StateChanged,
    StepLogged,
    TuneReport,
    TypeInput,
)
from ctui.engine.telemetry import Snapshot

LIVE_STATES = frozenset({State.IDLE, State.RUNNING, State.PAUSED, State.STOPPING})
HISTORY_LENGTH = 60  # telemetry samples kept per GPU for the sparkline
# Program output waiting to be drawn, at most: a program printing faster than the panel can
# emulate loses its oldest unseen output (the newest screen is what matters), and we say so.
OUTPUT_WAITING = 256 * 1024
# Commands whose accepted answers stay out of the log: one comes for every few keys typed and
# every resize ("typed 3 bytes"); a refusal still shows.
QUIET = frozenset({TypeInput.kind, ResizeTerminal.kind})
PROGRAM_TASK = "program"  # a program run's Settings.task (batch size 0: no DataLoader seen)
PROGRAM_EVENTS = (ProgramStarted, ProgramOutput, ProgramExited, ProcessTree, LoaderPass)


@dataclass
class RunModel:
    name: str = ""
    run_dir: str = ""
    connected: bool = False
    state: str = ""  # "" until the first StateChanged: nothing attached yet
    waiting: str = ""  # nothing attached, and what the panel waits for (a key to start one)
    reason: str = ""
    settings: Settings | None = None
    step: StepLogged | None = None  # the latest logged figures (loss, speed, lr)
    at: StepLogged | Position | None = None  # where training is: the newer of the two
    samples_in_epoch: int = 0  # from Position events; 0 until one came
    lr: float | None = None  # the rate in force: of the latest step logged or settings sent
    epochs: list[EpochEnded] = field(default_factory=list)
    last_checkpoint: CheckpointSaved | None = None
    best: BestCheckpoint | None = None  # --monitor's best epoch so far
    advice: Advice | None = None
    loggers: LoggersInfo | None = None
    tune_report: TuneReport | None = None
    failure: Failed | None = None
    ranks: RankStats | None = None  # a data-parallel job's ranks, at the latest logged step
    new_log: list[LogLine] = field(default_factory=list)  # not yet shown in the log pane
    telemetry: Snapshot | None = None
    gpu_history: dict[int, deque] = field(default_factory=dict)
    # A program run (`ctui run -- CMD`): the program in a terminal instead of built-in training.
    program_run: bool = False
    program: ProgramStarted | None = None  # its latest start
    exits: list[ProgramExited] = field(default_factory=list)  # every attempt that ended
    processes: ProcessTree | None = None
    loader: LoaderPass | None = None  # the latest pass over one of its DataLoaders
    new_output: list[str] = field(default_factory=list)  # not yet fed to the terminal view
    output_waiting: int = 0  # characters in new_output
    output_skipped: int = 0  # characters dropped since the last take_output

    @property
    def live(self) -> bool:
        """The host is there and the run has not ended: commands will be acted on."""
        return self.connected and self.state in LIVE_STATES

    def apply(self, event: Event) -> None:
        if isinstance(event, StepLogged):
            self.step = self.at = event
            self.lr = event.lr
        elif isinstance(event, Position):
            self.at = event
            self.samples_in_epoch = event.samples_in_epoch
        elif isinstance(event, StateChanged):
            self.state, self.reason = event.state, event.reason
        elif isinstance(event, Settings):
            self.settings = event
            self.lr = event.lr  # sent at start, after a change, and when an epoch's decay applies
            self.run_dir = event.run_dir or self.run_dir
            self.program_run = self.program_run or event.task == PROGRAM_TASK
        elif isinstance(event, EpochEnded):
            # A resumed run repeats epochs after its checkpoint: the latest figures win.
            self.epochs = [e for e in self.epochs if e.epoch < event.epoch] + [event]
        elif isinstance(event, CheckpointSaved):
            self.last_checkpoint = event
        elif isinstance(event, BestCheckpoint):
            self.best = event
        elif isinstance(event, Advice):
            self.advice = event
        elif isinstance(event, LoggersInfo):
            self.loggers = event
        elif isinstance(event, TuneReport):
            self.tune_report = event
        elif isinstance(event, Failed):
            self.failure = event
            self.new_log.append(LogLine(level="error", message=event.message, time=event.time))
        elif isinstance(event, RankStats):
            self.ranks = event
        elif isinstance(event, PROGRAM_EVENTS):
            self._apply_program(event)
        if isinstance(event, LogLine):
            self.new_log.append(event)
        elif isinstance(event, Answer) and not (event.accepted and event.command in QUIET):
            # the run's own answer to a key or a command
            self.new_log.append(LogLine(level="info" if event.accepted else "warning",
                                        message=event.message, time=event.time))

    def _apply_program(self, event: Event) -> None:
        self.program_run = True
        if isinstance(event, ProgramOutput):
            self.add_output(event.data)
        elif isinstance(event, ProcessTree):
            self.processes = event
        elif isinstance(event, LoaderPass):
            self.loader = event
            if event.complete:
                self._note(loader_line(event), event.time)
        elif isinstance(event, ProgramStarted):
            self.program = event
            if event.attempt > 1:
                self._note(f"restart: attempt {event.attempt} started (pid {event.pid})",
                           event.time)
            else:
                self._note(f"started {' '.join(event.argv)} (pid {event.pid})", event.time)
        elif isinstance(event, ProgramExited):
            self.exits.append(event)
            line = exit_line(event)
            self._note(line, event.time, "info" if event.exit_code == 0 else "warning")
            # The terminal shows the end too, where the program's last words are.
            self.add_output(f"\x1b[0m\r\n\x1b[1m[ctui] {line}\x1b[0m\r\n")

    def _note(self, message: str, when: float, level: str = "info") -> None:
        self.new_log.append(LogLine(level=level, message=message, time=when))

    def add_output(self, data: str) -> None:
        self.new_output.append(data)
        self.output_waiting += len(data)
        if self.output_waiting > OUTPUT_WAITING:  # keep the newest half: a join per 128 KiB
            kept, skipped = newest_output("".join(self.new_output), OUTPUT_WAITING // 2)
            self.new_output, self.output_waiting = [kept], len(kept)
            self.output_skipped += skipped

    def take_output(self, limit: int) -> tuple[str, int]:
        """(output to draw, characters skipped): the newest, about `limit` characters at most."""
        text, skipped = newest_output("".join(self.new_output), limit)
        skipped += self.output_skipped
        self.new_output, self.output_waiting, self.output_skipped = [], 0, 0
        return text, skipped

    @property
    def program_ended(self) -> ProgramExited | None:
        """How the latest attempt ended, or None while it runs (or none has started)."""
        if not self.exits:
            return None
        last = self.exits[-1]
        if self.program is not None and self.program.attempt > last.attempt:
            return None
        return last

    def apply_telemetry(self, snapshot: Snapshot) -> None:
        self.telemetry = snapshot
        for gpu in snapshot.gpus:
            history = self.gpu_history.setdefault(gpu.index, deque(maxlen=HISTORY_LENGTH))
            history.append(gpu.utilization_percent)

    def take_log(self) -> list[LogLine]:
        lines, self.new_log = self.new_log, []
        return lines

    def host_gone(self) -> None:
        """The connection ended: a run that had not ended was interrupted (host killed)."""
        self.connected = False
        if self.state in LIVE_STATES:
            self.state, self.reason = State.INTERRUPTED, "the run host went away"

    # ------------------------------------------------------------ derived figures

    @property
    def fraction(self) -> float | None:
        """How much of the current epoch is trained, from the latest position."""
        at = self.at
        if isinstance(at, Position) and at.samples_in_epoch:
            return at.samples_seen / at.samples_in_epoch
        if at is not None and at.steps_in_epoch:
            return at.step / at.steps_in_epoch
        return None

    def epoch_seconds_left(self) -> float | None:
        """Seconds to the end of the current epoch's training: the samples left at the
        latest logged speed."""
        at, step, settings = self.at, self.step, self.settings
        if at is None or step is None or settings is None or step.samples_per_second <= 0:
            return None
        if self.samples_in_epoch:
            left = max(self.samples_in_epoch - at.samples_seen, 0)
        else:  # no Position yet: count the steps left at the batch size in force
            left = max(at.steps_in_epoch - at.step, 0) * settings.batch_size
        return left / step.samples_per_second

    def run_seconds_left(self) -> float | None:
        """Seconds to the end of the run: this epoch's rest plus the mean finished epoch."""
        this_epoch = self.epoch_seconds_left()
        if this_epoch is None or self.settings is None or self.at is None:
            return None
        later = self.settings.epochs - self.at.epoch
        if later <= 0:
            return this_epoch
        if not self.epochs:
            return None
        recent = self.epochs[-3:]
        mean = sum(e.train_seconds + e.eval_seconds for e in recent) / len(recent)
        return this_epoch + later * mean

    @property
    def current_epoch(self) -> int:
        if self.at is not None:
            return self.at.epoch
        return self.epochs[-1].epoch if self.epochs else 0


def newest_output(text: str, limit: int) -> tuple[str, int]:
    """(the last `limit` characters of output or fewer, starting at a line so no escape
    sequence is cut in two; characters left out). What is kept starts on a fresh line with
    colours reset, as the part left out may have ended mid-line or in a colour."""
    if len(text) <= limit:
        return text, 0
    tail = text[-limit:]
    start = tail.find("\n") + 1
    return "\x1b[0m\r\n" + tail[start:], len(text) - len(tail) + start


def exit_line(event: ProgramExited) -> str:
    """'attempt 2 exited with code 1; restarting', for the log and the terminal."""
    if event.message:
        return event.message
    if event.signal:
        how = f"was ended by {event.signal}"
    elif event.exit_code is None:
        how = "ended"
    else:
        how = f"exited with code {event.exit_code}"
    return f"attempt {event.attempt} {how}" + ("; restarting" if event.restarting else "")


def loader_line(event: LoaderPass) -> str:
    """One completed pass over a DataLoader, for the log."""
    return (f"loader {event.loader} pass {event.pass_index}: {event.seconds:.1f} s, "
            f"{event.samples_per_second:,.0f} samples/s, data wait "
            f"{event.data_wait_fraction:.0%}, bs {event.batch_size}, "
            f"{event.num_workers} workers")
