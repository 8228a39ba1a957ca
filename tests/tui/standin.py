"""A scripted stand-in for the run host: replays recorded events and answers commands the way
the engine does (pause -> paused, stop -> stopping, checkpoint, stopped...), with no process,
socket or torch. Also a fixed telemetry source with recorded readings, and a program run
(`ctui run -- python train.py`) whose host echoes what is typed, as a terminal does."""

from __future__ import annotations

import dataclasses
import json
import queue
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ctui.engine.config import RunConfig
from ctui.engine.events import (
    Advice,
    Answer,
    CheckpointNow,
    CheckpointSaved,
    Command,
    EpochEnded,
    Event,
    LoaderPass,
    LoggersInfo,
    LogLine,
    Pause,
    Position,
    ProcessTree,
    ProgramExited,
    ProgramOutput,
    ProgramStarted,
    ResizeTerminal,
    Resume,
    SetNumWorkers,
    Settings,
    StateChanged,
    Stop,
    TypeInput,
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


LONG_TENSORBOARD_DIR = ("/root/autodl-tmp/projects/handwriting-experiments/runs/"
                        "digits-20250101-120000/tensorboard")


def panel_events() -> list[Event]:
    """Mid-run, with what makes the training pane crowded: the advisor's advice, TensorBoard
    in a deep folder, the learning rate of epoch 3, and a position past the last logged step."""
    events = mid_run_events()
    last = events[-1]
    settings = next(e for e in events if isinstance(e, Settings))
    return [*events,
            dataclasses.replace(settings, lr=0.49, time=last.time),
            LoggersInfo(tensorboard_dir=LONG_TENSORBOARD_DIR, time=last.time),
            Advice(verdict="input-bound", message="input-bound: 41% of step time waits for "
                   "data; raise num_workers (now 0; try 2, this machine has 2 cores)",
                   time=last.time),
            Position(epoch=3, step=18, steps_in_epoch=23, samples_seen=1152,
                     samples_in_epoch=1437, time=last.time + 0.5)]


PROGRAM_RUN = "run-train-20250101-120000"
PROGRAM_ARGV = ("python", "train.py", "--epochs", "3")
PROGRAM_LOADER = "train.py:57 (LevirCD)"
PROGRAM_PID = 4242
T0 = 1795779200.0  # the recorded digits run's clock, so log times read the same everywhere


def tqdm_bar(done: int, total: int = 40, width: int = 10) -> str:
    """A tqdm-like progress bar, redrawn in place with a carriage return."""
    full = done * width // total
    return (f"\r{done * 100 // total:3d}%|{'█' * full}{' ' * (width - full)}| {done}/{total} "
            f"[00:{done // 8:02d}<00:05, 7.9it/s]")


def program_run_events() -> list[Event]:
    """A program run: it asked for a line of notes (answered), trained one epoch with a tqdm
    bar in colour, and is 45% through the second, with a DataLoader of 4 workers."""
    at = iter(T0 + i for i in range(100))
    bar = "".join(tqdm_bar(done) for done in range(0, 41, 4))
    second = "".join(tqdm_bar(done) for done in range(0, 19, 3))
    return [
        StateChanged(state="running", time=next(at)),
        ProgramStarted(argv=PROGRAM_ARGV, cwd="/root/cdlab", pid=PROGRAM_PID, attempt=1,
                       time=next(at)),
        Settings(batch_size=32, num_workers=4, device="cuda", task="program",
                 run_dir=f"runs/{PROGRAM_RUN}", time=next(at)),
        ProgramOutput(data="Notes for this run? ", time=next(at)),
        ProgramOutput(data="baseline, lr 1e-3\r\n", time=next(at)),
        ProgramOutput(data="\x1b[1;32mEpoch 1/3\x1b[0m\r\n" + bar + "\r\n", time=next(at)),
        LoaderPass(loader=PROGRAM_LOADER, pass_index=1, seconds=5.1, batches=40, samples=1280,
                   samples_per_second=251.0, data_wait_fraction=0.31, batch_size=32,
                   num_workers=4, time=next(at)),
        EpochEnded(epoch=1, train_seconds=5.1, samples_per_second=251.0,
                   data_wait_fraction=0.31, train_loss=0.52, test_loss=0.48, batch_size=32,
                   num_workers=4, time=next(at)),
        ProgramOutput(data="val \x1b[33mF1 0.71\x1b[0m  \x1b[31mloss 0.48\x1b[0m\r\n"
                      "\x1b[1;32mEpoch 2/3\x1b[0m\r\n" + second, time=next(at)),
        ProcessTree(rows=((PROGRAM_PID, "python", 98.0, 2310.0, 5120.0),
                          *((4250 + i, "pt_data_worker", 31.0 + i, 820.0, None)
                            for i in range(4))), time=next(at)),
    ]


def snapshot(name: str) -> Snapshot:
    return Snapshot.from_dict(json.loads((DATA / f"{name}.json").read_text()))


def busier_snapshot(name: str = "no_gpu") -> Snapshot:
    """The recorded sample with a load average of 7.25 (no recording has it): on screen, this
    newer sample rather than the recorded one."""
    sample = snapshot(name)
    return dataclasses.replace(sample, host=dataclasses.replace(
        sample.host, load_average=(7.25, 0.5, 0.25)))


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
        self.program = next((e for e in reversed(script) if isinstance(e, ProgramStarted)), None)
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
        if self.program is not None:
            return self._program_reaction(command)
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

    def _program_reaction(self, command: Command) -> list[Event]:
        """A program run's host: typed keys echo back as the program's terminal would (in
        cooked mode); x ends the program with SIGINT; its loader's workers cannot change."""
        if isinstance(command, TypeInput):
            echo = command.data.replace("\r", "\r\n").replace("\x7f", "\b \b")
            return [ProgramOutput(data=echo)]
        if isinstance(command, ResizeTerminal):
            return []
        if isinstance(command, Stop):
            return [Answer(command="stop", message="stopping the program: SIGINT"),
                    StateChanged(state="stopping", reason=command.reason),
                    ProgramExited(attempt=self.program.attempt, signal="SIGINT"),
                    ProcessTree(rows=()),
                    StateChanged(state="stopped", reason=command.reason)]
        if isinstance(command, SetNumWorkers):
            return [Answer(command=command.kind, accepted=False, setting="num_workers",
                           value=4, message=f"{PROGRAM_LOADER}: num_workers cannot change: "
                           "the loader was made with persistent_workers=True")]
        if setting_of(command) is not None:
            name = setting_of(command).name
            value = getattr(command, name)
            self.settings = dataclasses.replace(self.settings, **{name: value})
            return [Answer(command=command.kind, setting=name, value=value,
                           message=f"{PROGRAM_LOADER}: {name} {value} from its next pass"),
                    self.settings]
        return [LogLine(level="warning", message=f"{command.kind}: not for a program run")]

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
