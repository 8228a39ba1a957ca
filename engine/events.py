"""The engine's vocabulary: commands in, events out.

Both are frozen dataclasses of plain values (numbers, strings, None) so they can cross a thread,
a process or a socket unchanged: `to_dict()` / `from_dict()` give the JSON form.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

# ---------------------------------------------------------------- states


class State:
    """Run states as plain strings, so they travel as they are."""

    IDLE = "idle"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    ENDED = frozenset({FINISHED, STOPPED, FAILED, INTERRUPTED})


# ---------------------------------------------------------------- commands

COMMANDS: dict[str, type[Command]] = {}
EVENTS: dict[str, type[Event]] = {}


@dataclass(frozen=True)
class Message:
    kind: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        # Fields are plain values, so a shallow copy is the JSON form; dataclasses.asdict's deep
        # copy cost more than the rest of a logged step's bookkeeping.
        return {"type": self.kind, **self.__dict__}


def _from_dict(registry: dict[str, type], data: dict[str, Any]) -> Any:
    kind = data.get("type")
    cls = registry.get(kind)
    if cls is None:
        raise ValueError(f"unknown message type {kind!r}; known: {', '.join(sorted(registry))}")
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{key: value for key, value in data.items() if key in names})


@dataclass(frozen=True)
class Command(Message):
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        COMMANDS[cls.kind] = cls

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Command:
        return _from_dict(COMMANDS, data)


@dataclass(frozen=True)
class Start(Command):
    kind: ClassVar[str] = "start"


@dataclass(frozen=True)
class Pause(Command):
    kind: ClassVar[str] = "pause"


@dataclass(frozen=True)
class Resume(Command):
    kind: ClassVar[str] = "resume"


@dataclass(frozen=True)
class Stop(Command):
    """Checkpoint, then stop at the next step boundary."""

    kind: ClassVar[str] = "stop"
    reason: str = "stop requested"


@dataclass(frozen=True)
class SetBatchSize(Command):
    kind: ClassVar[str] = "set_batch_size"
    batch_size: int = 0


@dataclass(frozen=True)
class SetNumWorkers(Command):
    kind: ClassVar[str] = "set_num_workers"
    num_workers: int = 0


@dataclass(frozen=True)
class CheckpointNow(Command):
    kind: ClassVar[str] = "checkpoint"


@dataclass(frozen=True)
class Tune(Command):
    """Time short trials of num_workers and batch size inside the live run, then put the model,
    optimizer and sample order back as they were. Answered by a TuneReport."""

    kind: ClassVar[str] = "tune"
    budget_seconds: float = 60.0


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class Event(Message):
    time: float = field(default_factory=time.time, kw_only=True)
    rank: int = field(default=0, kw_only=True)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        EVENTS[cls.kind] = cls

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Event:
        return _from_dict(EVENTS, data)


@dataclass(frozen=True)
class Answer(Event):
    """The engine's answer to one command: applied or refused, and why, in words for people.
    Clients (the CLI, the panel) read this, never the wording of log lines."""

    kind: ClassVar[str] = "answer"
    command: str = ""  # the command's kind: "set_batch_size", "pause", ...
    accepted: bool = True
    message: str = ""
    setting: str = ""  # for a live setting: its name and the value now in force
    value: int | None = None


@dataclass(frozen=True)
class StateChanged(Event):
    kind: ClassVar[str] = "state"
    state: str = State.IDLE
    reason: str = ""


@dataclass(frozen=True)
class Settings(Event):
    """The settings in force now: sent at start and after every accepted change."""

    kind: ClassVar[str] = "settings"
    batch_size: int = 0
    num_workers: int = 0
    lr: float = 0.0
    device: str = ""
    precision: str = ""
    epochs: int = 0
    steps_per_epoch: int = 0
    task: str = ""
    run_dir: str = ""


@dataclass(frozen=True)
class StepLogged(Event):
    """Every log_interval steps: figures averaged over the steps since the last one."""

    kind: ClassVar[str] = "step"
    epoch: int = 0
    step: int = 0  # 1-based step inside the epoch
    steps_in_epoch: int = 0
    global_step: int = 0
    samples_seen: int = 0  # of this epoch
    loss: float = 0.0
    samples_per_second: float = 0.0
    data_wait_fraction: float = 0.0
    lr: float = 0.0


@dataclass(frozen=True)
class Position(Event):
    """Where training is, a few times a second between logged steps: counters only, read
    without a device sync (the loss and speeds come with StepLogged)."""

    kind: ClassVar[str] = "position"
    epoch: int = 0
    step: int = 0  # optimizer steps done in this epoch (a resumed epoch counts its earlier ones)
    steps_in_epoch: int = 0
    samples_seen: int = 0  # of this epoch
    samples_in_epoch: int = 0


@dataclass(frozen=True)
class RankStats(Event):
    """A data-parallel job's ranks at each logged step: one row per rank, (rank, samples/s,
    data-wait share), so a slow rank stands out; the global batch is batch_size * world_size."""

    kind: ClassVar[str] = "ranks"
    world_size: int = 1
    global_batch_size: int = 0
    rows: tuple[tuple[int, float, float], ...] = ()
    restarts: int = 0  # times the launcher restarted the ranks from a checkpoint


@dataclass(frozen=True)
class EpochEnded(Event):
    kind: ClassVar[str] = "epoch"
    epoch: int = 0
    epochs: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    samples_per_second: float = 0.0
    data_wait_fraction: float = 0.0
    train_loss: float | None = 0.0  # None: not known (a supervised program's epoch)
    test_loss: float | None = 0.0  # None: not evaluated this epoch, or the task reports no loss
    test_accuracy: float | None = None
    lr: float = 0.0
    peak_gpu_memory_mb: float | None = None
    batch_size: int = 0
    num_workers: int = 0
    settings_changed: bool = False  # batch size or workers changed during this epoch
    global_step: int = 0
    # The task's own figures (its step's extra outputs, its evaluate()), in the task's order:
    # (name, value) pairs, so the event stays immutable and JSON-shaped.
    metrics: tuple[tuple[str, float], ...] = ()
    compile_seconds: float = 0.0  # torch.compile's first-step cost, apart from train_seconds

    def __post_init__(self) -> None:  # pairs arrive as lists from JSON: keep them immutable
        object.__setattr__(self, "metrics", tuple((str(k), v) for k, v in self.metrics))


@dataclass(frozen=True)
class LogLine(Event):
    kind: ClassVar[str] = "log"
    level: str = "info"  # info | warning | error
    message: str = ""


@dataclass(frozen=True)
class CheckpointSaved(Event):
    kind: ClassVar[str] = "checkpoint"
    path: str = ""
    epoch: int = 0
    step: int = 0
    blocked_seconds: float = 0.0


@dataclass(frozen=True)
class Advice(Event):
    """The bottleneck advisor's current verdict, one plain line."""

    kind: ClassVar[str] = "advice"
    verdict: str = ""  # "input-bound", "compute-bound", "gpu-underused" or "" (not enough data)
    message: str = ""


@dataclass(frozen=True)
class TuneReport(Event):
    """Autotune results: one row per setting timed, (batch_size, num_workers, median
    samples_per_second, note), and its spread over the repeats, (lowest, highest, trials).
    best_*: the setting to use; the current one when the differences were within noise."""

    kind: ClassVar[str] = "tune"
    rows: tuple[tuple[int, int, float, str], ...] = ()
    best_batch_size: int = 0
    best_num_workers: int = 0
    seconds: float = 0.0
    spreads: tuple[tuple[float, float, int], ...] = ()  # parallel to rows; () from old runs
    verdict: str = ""  # the bottleneck verdict the worker counts tried followed
    data_wait_fraction: float = 0.0
    summary: str = ""  # one line: what was chosen and why (apart beyond noise, or within it)

    def __post_init__(self) -> None:  # rows arrive as lists from JSON: keep them immutable
        object.__setattr__(self, "rows", tuple(tuple(row) for row in self.rows))
        object.__setattr__(self, "spreads", tuple(tuple(row) for row in self.spreads))

    def timed(self) -> list[tuple[int, int, float, str, float, float, int]]:
        """Each row with its spread: (batch_size, num_workers, median, note, lowest, highest,
        trials); 0, 0, 0 where the report has no spread for it."""
        spreads = (*self.spreads, *((0.0, 0.0, 0),) * len(self.rows))
        return [(*row, *spread) for row, spread in zip(self.rows, spreads, strict=False)]


@dataclass(frozen=True)
class LoggersInfo(Event):
    """Which experiment loggers are on and where to look at them."""

    kind: ClassVar[str] = "loggers"
    tensorboard_dir: str = ""  # "" when TensorBoard is off
    wandb_mode: str = ""  # "", "online" or "offline"
    wandb_url: str = ""
    wandb_sync_command: str = ""  # offline runs: how to upload later


@dataclass(frozen=True)
class Failed(Event):
    """The run stopped on an error; message is one line, for people."""

    kind: ClassVar[str] = "error"
    message: str = ""
    detail: str = ""


@dataclass(frozen=True)
class BestCheckpoint(Event):
    """`--monitor NAME` improved: ckpt-best.pt now holds this epoch's weights."""

    kind: ClassVar[str] = "best"
    monitor: str = ""
    mode: str = "max"
    value: float = 0.0
    epoch: int = 0
    path: str = ""


# ---------------------------------------------------------------- a supervised program
# `ctui run -- CMD`: a program ctui did not write runs in a pseudo-terminal its host owns. The
# same socket, history and clients as a training run; these are the kinds only such runs send.


@dataclass(frozen=True)
class TypeInput(Command):
    """Keystrokes for the program's terminal, as text (escape sequences included)."""

    kind: ClassVar[str] = "input"
    data: str = ""


@dataclass(frozen=True)
class ResizeTerminal(Command):
    kind: ClassVar[str] = "resize"
    columns: int = 80
    rows: int = 24


@dataclass(frozen=True)
class ProgramStarted(Event):
    kind: ClassVar[str] = "program_started"
    argv: tuple[str, ...] = ()
    cwd: str = ""
    pid: int = 0
    attempt: int = 1  # 1 for the first start, one more per restart

    def __post_init__(self) -> None:
        object.__setattr__(self, "argv", tuple(str(arg) for arg in self.argv))


@dataclass(frozen=True)
class ProgramOutput(Event):
    """A chunk of the program's terminal output as text (escape sequences kept)."""

    kind: ClassVar[str] = "output"
    data: str = ""


@dataclass(frozen=True)
class ProgramExited(Event):
    kind: ClassVar[str] = "program_exited"
    attempt: int = 1
    exit_code: int | None = None  # None when a signal ended it
    signal: str = ""  # "SIGKILL", ...
    restarting: bool = False
    message: str = ""  # one line for people


@dataclass(frozen=True)
class ProcessTree(Event):
    """The program's processes now: (pid, name, cpu_percent, rss_mb, gpu_memory_mb or None)."""

    kind: ClassVar[str] = "processes"
    rows: tuple[tuple[int, str, float, float, float | None], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", tuple(tuple(row) for row in self.rows))


@dataclass(frozen=True)
class LoaderPass(Event):
    """One pass over one of the program's DataLoaders, as the observer timed it."""

    kind: ClassVar[str] = "loader_pass"
    loader: str = ""  # where it was made, e.g. "train.py:57 (LevirCD)"
    pass_index: int = 0
    seconds: float = 0.0
    batches: int = 0
    samples: int = 0
    samples_per_second: float = 0.0
    data_wait_fraction: float = 0.0
    batch_size: int = 0
    num_workers: int = 0
    complete: bool = True


@dataclass(frozen=True)
class ScriptScalars(Event):
    """Scalars the program logged itself, as they came: (tag, step, value) triples of one
    TensorBoard file's folder (`runs/exp1`, relative to the program's working folder), or of
    its wandb.log calls (path `wandb`; `wandb/rank1` for another rank; each tag's latest value a
    few times a second); a value that is not finite (a diverged loss) is None."""

    kind: ClassVar[str] = "script_scalars"
    source: str = ""  # "tensorboard" or "wandb"
    path: str = ""
    scalars: tuple[tuple[str, int, float | None], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "scalars", tuple(tuple(item) for item in self.scalars))


@dataclass(frozen=True)
class ScriptScalarsLatest(Event):
    """The latest value of each tag the program logged itself, sent now and then: what a panel
    that attaches later shows at once (the run's history keeps only the newest few of a kind).
    (folder, tag, step, value) quadruples, as in ScriptScalars."""

    kind: ClassVar[str] = "script_latest"
    source: str = ""
    scalars: tuple[tuple[str, str, int, float | None], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "scalars", tuple(tuple(item) for item in self.scalars))
