"""A scripted stand-in for the run host: replays recorded events and answers commands the way
the engine does (pause -> paused, stop -> stopping, checkpoint, stopped...), with no process,
socket or torch. Also a fixed telemetry source with recorded readings."""

from __future__ import annotations

import dataclasses
import json
import queue
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ctui.engine.config import RunConfig
from ctui.engine.events import (
    Answer,
    CheckpointNow,
    CheckpointSaved,
    Command,
    Event,
    Pause,
    Resume,
    Settings,
    StateChanged,
    Stop,
)
from ctui.engine.host.registry import RunInfo
from ctui.engine.live_settings import setting_of
from ctui.engine.telemetry import Snapshot

DATA = Path(__file__).parent / "data"
TRAIN_SIZE = 1437  # the recorded run's training set (digits)
RUN_NAME = "digits-20250101-120000"
_END = object()


def recorded_events() -> list[Event]:
    """A real 3-epoch digits run on the CPU, recorded from the engine (see data/README)."""
    lines = (DATA / "digits_run.jsonl").read_text().splitlines()
    return [Event.from_dict(json.loads(line)) for line in lines]


def events_until(predicate: Callable[[Event], bool]) -> list[Event]:
    """The recorded events up to and including the first one matching predicate."""
    events = []
    for event in recorded_events():
        events.append(event)
        if predicate(event):
            break
    return events


def mid_run_events() -> list[Event]:
    """Running, in epoch 3 (two epochs in the table), before the run ends."""
    return events_until(lambda e: e.kind == "step" and e.epoch == 3 and e.step == 15)


def snapshot(name: str) -> Snapshot:
    return Snapshot.from_dict(json.loads((DATA / f"{name}.json").read_text()))


class ScriptedConnection:
    """events(): the script, then whatever the reactions emit, until close()."""

    def __init__(self, script: list[Event], react: bool = True) -> None:
        self.sent: list[Command] = []
        self.closed = False
        self.react = react
        self._queue: queue.Queue = queue.Queue()
        self.settings = next((e for e in reversed(script) if isinstance(e, Settings)), None)
        self.state = next((e.state for e in reversed(script) if isinstance(e, StateChanged)),
                          "running")
        for event in script:
            self._queue.put(event)

    def events(self) -> Iterator[Event]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            yield item

    def emit(self, *events: Event) -> None:
        for event in events:
            self._queue.put(event)

    def end(self) -> None:
        """The host goes away."""
        self._queue.put(_END)

    def send(self, command: Command) -> None:
        self.sent.append(command)
        if self.react:
            self.emit(*self._reaction(command))

    def _reaction(self, command: Command) -> list[Event]:
        """What the engine answers (tests/test_command_contract.py holds the two to it)."""
        if isinstance(command, Pause):
            if self.state == "paused":
                return [Answer(command="pause", message="already paused")]
            return self._to("paused", "paused by request",
                            Answer(command="pause", message="paused at this step"))
        if isinstance(command, Resume):
            if self.state != "paused":
                return [Answer(command="resume", accepted=False,
                               message="the run is not paused: nothing to resume")]
            return self._to("running", "resumed",
                            Answer(command="resume", message="resumed at this step"))
        if isinstance(command, CheckpointNow):
            return [Answer(command="checkpoint", message="saving a checkpoint at this step"),
                    CheckpointSaved(path="ckpt.pt", epoch=3, step=60)]
        if isinstance(command, Stop):
            return [Answer(command="stop", message=f"stopping ({command.reason}): a checkpoint "
                           "at this step, then the run ends"),
                    StateChanged(state="stopping", reason=command.reason),
                    CheckpointSaved(path="ckpt.pt", epoch=3, step=61),
                    StateChanged(state="stopped", reason=command.reason)]
        setting = setting_of(command)
        if setting is not None and self.settings is not None:
            name, value = setting.name, getattr(command, setting.name)
            current = getattr(self.settings, name)
            problem = setting.problem(value, TRAIN_SIZE)
            if problem:
                return [Answer(command=command.kind, accepted=False, message=problem,
                               setting=name, value=current)]
            if value == current:
                return [Answer(command=command.kind, message=f"{name} is already {value}",
                               setting=name, value=value)]
            self.settings = dataclasses.replace(self.settings, **{name: value})
            return [Answer(command=command.kind, setting=name, value=value,
                           message=f"{name} {current} -> {value} from the next step"),
                    self.settings]
        return []

    def _to(self, state: str, reason: str, answer: Answer) -> list[Event]:
        self.state = state
        return [answer, StateChanged(state=state, reason=reason)]

    def close(self) -> None:
        self.closed = True
        self._queue.put(_END)


@dataclass
class ScriptedBackend:
    """The runs folder and the host, scripted: `runs` to list, a connection per run."""

    runs: list[RunInfo] = field(default_factory=list)
    scripts: dict[str, list[Event]] = field(default_factory=dict)
    started: list[tuple[RunConfig, str | None]] = field(default_factory=list)
    connections: list[ScriptedConnection] = field(default_factory=list)

    def list_runs(self, runs_dir: Path) -> list[RunInfo]:
        return list(self.runs)

    def start(self, config: RunConfig, resume: str | None = None) -> RunInfo:
        self.started.append((config, resume))
        name = Path(config.run_dir).name if config.run_dir else f"new-{len(self.started)}"
        return RunInfo(name=name, run_dir=Path(config.runs_dir) / name, status="live")

    def connect(self, run: RunInfo) -> ScriptedConnection:
        connection = ScriptedConnection(self.scripts.get(run.name, []))
        self.connections.append(connection)
        return connection

    @property
    def connection(self) -> ScriptedConnection:
        return self.connections[-1]


class FixedTelemetry:
    """Emits one recorded snapshot when started; nothing samples the machine."""

    def __init__(self, emit: Callable[[Snapshot], None], sample: Snapshot | None) -> None:
        self.emit = emit
        self.sample = sample
        self.pid = None
        self.closed = False

    def start(self) -> FixedTelemetry:
        if self.sample is not None:
            self.emit(self.sample)
        return self

    def close(self) -> None:
        self.closed = True


def live_run(name: str = RUN_NAME) -> RunInfo:
    return RunInfo(name=name, run_dir=Path("runs") / name, status="live", pid=None, epoch=3,
                  epochs=3)
