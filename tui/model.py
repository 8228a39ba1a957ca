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
    CheckpointSaved,
    EpochEnded,
    Event,
    Failed,
    LoggersInfo,
    LogLine,
    Settings,
    State,
    StateChanged,
    StepLogged,
    TuneReport,
)
from ctui.engine.telemetry import Snapshot

LIVE_STATES = frozenset({State.IDLE, State.RUNNING, State.PAUSED, State.STOPPING})
HISTORY_LENGTH = 60  # telemetry samples kept per GPU for the sparkline


@dataclass
class RunModel:
    name: str = ""
    run_dir: str = ""
    connected: bool = False
    state: str = ""  # "" until the first StateChanged: nothing attached yet
    reason: str = ""
    settings: Settings | None = None
    step: StepLogged | None = None
    epochs: list[EpochEnded] = field(default_factory=list)
    last_checkpoint: CheckpointSaved | None = None
    advice: Advice | None = None
    loggers: LoggersInfo | None = None
    tune_report: TuneReport | None = None
    failure: Failed | None = None
    new_log: list[LogLine] = field(default_factory=list)  # not yet shown in the log pane
    telemetry: Snapshot | None = None
    gpu_history: dict[int, deque] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        """The host is there and the run has not ended: commands will be acted on."""
        return self.connected and self.state in LIVE_STATES

    def apply(self, event: Event) -> None:
        if isinstance(event, StepLogged):
            self.step = event
        elif isinstance(event, StateChanged):
            self.state, self.reason = event.state, event.reason
        elif isinstance(event, Settings):
            self.settings = event
            self.run_dir = event.run_dir or self.run_dir
        elif isinstance(event, EpochEnded):
            # A resumed run repeats epochs after its checkpoint: the latest figures win.
            self.epochs = [e for e in self.epochs if e.epoch < event.epoch] + [event]
        elif isinstance(event, CheckpointSaved):
            self.last_checkpoint = event
        elif isinstance(event, Advice):
            self.advice = event
        elif isinstance(event, LoggersInfo):
            self.loggers = event
        elif isinstance(event, TuneReport):
            self.tune_report = event
        elif isinstance(event, Failed):
            self.failure = event
            self.new_log.append(LogLine(level="error", message=event.message, time=event.time))
        if isinstance(event, LogLine):
            self.new_log.append(event)
        elif isinstance(event, Answer):  # the run's own answer to a key or a command
            self.new_log.append(LogLine(level="info" if event.accepted else "warning",
                                        message=event.message, time=event.time))

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

    def epoch_seconds_left(self) -> float | None:
        """Seconds to the end of the current epoch's training, from the latest step figures."""
        step, settings = self.step, self.settings
        if step is None or settings is None or step.samples_per_second <= 0:
            return None
        remaining_steps = max(step.steps_in_epoch - step.step, 0)
        return remaining_steps * settings.batch_size / step.samples_per_second

    def run_seconds_left(self) -> float | None:
        """Seconds to the end of the run: this epoch's rest plus the mean finished epoch."""
        this_epoch = self.epoch_seconds_left()
        if this_epoch is None or self.settings is None or self.step is None:
            return None
        later = self.settings.epochs - self.step.epoch
        if later <= 0:
            return this_epoch
        if not self.epochs:
            return None
        recent = self.epochs[-3:]
        mean = sum(e.train_seconds + e.eval_seconds for e in recent) / len(recent)
        return this_epoch + later * mean

    @property
    def current_epoch(self) -> int:
        if self.step is not None:
            return self.step.epoch
        return self.epochs[-1].epoch if self.epochs else 0
