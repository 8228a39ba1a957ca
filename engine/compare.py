"""Comparing runs: what `ctui compare` prints and the panel's runs view draws.

Each run is read through the run-folder readers (registry.run_info for status, epochs and
best.json; config.json through read_json), and its epoch records from metrics.jsonl are
streamed with every line and the whole read bounded. Nothing in a run folder is trusted: a
folder that is not the user's own, or that others can write into, is shown as unreadable
with the reason, and every field is type-checked. Standard library and psutil only.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .host.registry import (
    UNREADABLE,
    RunInfo,
    check_regular_files,
    count_field,
    list_runs,
    read_json,
    resolve_run,
    run_info,
    unreadable_run,
)
from .runs import BEST_FILE, CONFIG_FILE, METRICS_FILE
from .safefs import UnsafePathError, check_private_dir, open_regular

# Settings that name where a run lives, not what it did: never a difference worth showing.
NOT_COMPARED = frozenset({"run_dir", "runs_dir"})
MAX_SETTINGS = 200  # a config.json with more keys than RunConfig has is not ours
MAX_TEXT = 80  # a setting's value as shown; longer is cut
MAX_EPOCHS = 100_000
MAX_METRICS_READ = 256 << 20  # bytes of metrics.jsonl read per run; epochs past it are left out
_LONGEST_LINE = 1 << 14  # an epoch record is under 1 KiB: a longer line is skipped unparsed
_EPOCH_RECORD = re.compile(rb'"type"\s*:\s*"epoch"')


@dataclass(frozen=True)
class EpochPoint:
    """One epoch's figures, as the overlay plots them."""

    epoch: int
    seconds: float  # train + eval, as the panel's epoch plot
    samples_per_second: float
    test_loss: float | None
    accuracy: float | None  # a fraction
    batch_size: int = 0
    num_workers: int = 0


@dataclass(frozen=True)
class RunSummary:
    """One run's line in the comparison, with its epochs. Plain values only."""

    name: str
    run_dir: str
    status: str
    kind: str = "train"  # "program": a `ctui run -- CMD` run
    task: str = ""
    settings: tuple[tuple[str, str], ...] = ()  # every recorded setting, as text
    epochs_done: int = 0
    epochs_planned: int = 0  # 0: unknown
    best: tuple[str, float, int] | None = None  # (figure, value, epoch)
    points: tuple[EpochPoint, ...] = ()
    reason: str = ""  # why an unreadable run could not be read

    @property
    def mean_epoch_seconds(self) -> float | None:
        return _mean([point.seconds for point in self.points])

    @property
    def samples_per_second(self) -> float | None:
        return _mean([point.samples_per_second for point in self.points
                      if point.samples_per_second > 0])

    def setting(self, name: str) -> str:
        return dict(self.settings).get(name, "-")


@dataclass(frozen=True)
class Comparison:
    runs: tuple[RunSummary, ...]
    differing: tuple[str, ...]  # settings whose values are not the same in every run

    def differing_settings(self, run: RunSummary) -> tuple[tuple[str, str], ...]:
        return tuple((name, run.setting(name)) for name in self.differing)


class UnknownRun(LookupError):
    """A RUN argument names no run; the message says which runs there are."""


# ---------------------------------------------------------------- building a comparison


def compare(runs: list[RunSummary]) -> Comparison:
    """The settings that differ between these runs: two runs that record one hold different
    values (a program run records no learning rate: that is no difference)."""
    values: dict[str, set[str]] = {}
    for run in runs:
        if run.status != UNREADABLE:
            for name, value in run.settings:
                values.setdefault(name, set()).add(value)
    differing = tuple(name for name, seen in values.items() if len(seen) > 1)
    return Comparison(runs=tuple(runs), differing=differing)


def summarize_all(runs_dir: str | os.PathLike[str]) -> list[RunSummary]:
    """Every run in the runs folder, in `ctui ls` order (oldest first)."""
    return [summarize(info) for info in list_runs(runs_dir)]


def find_runs(runs_dir: str | os.PathLike[str], names: list[str]) -> list[RunSummary]:
    """The runs the names (or folders) stand for, each once, in the order given. UnknownRun
    naming the runs that exist when one is not there."""
    found: list[RunSummary] = []
    for name in names:
        try:
            folder = resolve_run(runs_dir, name)
        except LookupError:
            raise UnknownRun(f"no run '{printable(name)}' in {runs_dir}; "
                             f"{_existing(runs_dir)}") from None
        if all(run.run_dir != str(folder) for run in found):
            try:
                info = run_info(folder)
            except Exception as error:  # as list_runs does: one line, never a traceback
                info = unreadable_run(folder, error)
            found.append(summarize(info))
    return found


def summarize(info: RunInfo) -> RunSummary:
    """A run's summary; a folder ctui will not read (not the user's, writable by others, a
    field it cannot use) is an unreadable summary with the reason, never an error."""
    if info.status == UNREADABLE:
        return _unreadable(info)
    try:
        check_private_dir(Path(info.run_dir))
        check_regular_files(Path(info.run_dir), (CONFIG_FILE, METRICS_FILE, BEST_FILE))
        return _summarize(info)
    except UnsafePathError as error:
        reason = error.strerror if error.filename and error.filename in error.strerror \
            else None  # the message names the folder already: no "name: name: ..."
        info = unreadable_run(Path(info.run_dir), error)
        return _unreadable(info if reason is None else replace(info, reason=reason))
    except Exception as error:  # whatever one folder holds, the other runs still compare
        return _unreadable(unreadable_run(Path(info.run_dir), error))


def _summarize(info: RunInfo) -> RunSummary:
    run_dir = Path(info.run_dir)
    record = read_json(run_dir / CONFIG_FILE)
    points = read_epochs(run_dir)
    if info.kind == "program":
        task, settings = "ctui run", _program_settings(record)
    else:
        config = record.get("config")
        settings = _config_settings(config if isinstance(config, dict) else {})
        task = dict(settings).get("task", "?")
    settings = _with_live_changes(settings, points)
    best = info.best or _best_accuracy(points)
    return RunSummary(name=printable(info.name), run_dir=str(run_dir), status=info.status,
                      kind=info.kind, task=task, settings=settings,
                      epochs_done=max(info.epoch, points[-1].epoch if points else 0),
                      epochs_planned=info.epochs, best=best, points=points)


def _unreadable(info: RunInfo) -> RunSummary:
    return RunSummary(name=printable(info.name), run_dir=str(info.run_dir), status=UNREADABLE,
                      reason=printable(info.reason))


def _config_settings(config: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    settings = []
    for name, value in list(config.items())[:MAX_SETTINGS]:
        if isinstance(name, str) and len(name) <= 64 and name not in NOT_COMPARED:
            settings.append((printable(name), value_text(value)))
    return tuple(settings)


def _program_settings(record: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    program = record.get("program")
    argv = program.get("argv") if isinstance(program, dict) else None
    if not isinstance(argv, list) or not all(isinstance(arg, str) for arg in argv[:64]):
        return ()
    return (("command", _cut(printable(shlex.join(argv[:64])))),)


def _with_live_changes(settings: tuple[tuple[str, str], ...],
                       points: tuple[EpochPoint, ...]) -> tuple[tuple[str, str], ...]:
    """Batch size and workers as the epochs saw them: changed live (`b`, `ctui set`), they
    read "64→128"; a program run's come from its observed DataLoader alone."""
    shown = dict(settings)
    for name in ("batch_size", "num_workers"):
        seen: list[int] = []
        for point in points:
            value = getattr(point, name)
            if (value or name == "num_workers") and (not seen or seen[-1] != value):
                seen.append(value)
        if seen and (len(seen) > 1 or name not in shown):
            shown[name] = _cut("→".join(str(value) for value in seen))
    return tuple(shown.items())


def _best_accuracy(points: tuple[EpochPoint, ...]) -> tuple[str, float, int] | None:
    """Without --monitor, the best test accuracy and its epoch (the first of equals)."""
    judged = [point for point in points if point.accuracy is not None]
    if not judged:
        return None
    best = max(judged, key=lambda point: (point.accuracy, -point.epoch))
    return "test_accuracy", float(best.accuracy), best.epoch


# ---------------------------------------------------------------- metrics.jsonl


def read_epochs(run_dir: str | os.PathLike[str]) -> tuple[EpochPoint, ...]:
    """The run's epoch records, one per epoch (the newest record of an epoch wins: a resumed
    program run may repeat one), oldest first. Step records are passed over unparsed."""
    try:
        handle = os.fdopen(open_regular(Path(run_dir) / METRICS_FILE), "rb")
    except OSError:
        return ()
    points: dict[int, EpochPoint] = {}
    with handle:
        left = MAX_METRICS_READ
        while left > 0 and (line := handle.readline(min(left, _LONGEST_LINE + 1))):
            left -= len(line)
            if len(line) > _LONGEST_LINE:  # skip the rest of an overlong line, bounded too
                while left > 0 and not line.endswith(b"\n") and (
                        line := handle.readline(min(left, _LONGEST_LINE))):
                    left -= len(line)
                continue
            if _EPOCH_RECORD.search(line) and (point := epoch_point(line)) is not None:
                if point.epoch in points or len(points) < MAX_EPOCHS:
                    points[point.epoch] = point
    return tuple(points[epoch] for epoch in sorted(points))


def epoch_point(line: bytes) -> EpochPoint | None:
    """The figures of one epoch record, each checked; None when the line is not one."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or record.get("type") != "epoch":
        return None
    epoch = count_field(record.get("epoch"))
    seconds = [_number(record.get(name)) for name in ("train_seconds", "eval_seconds")]
    if not epoch or seconds[0] is None:
        return None
    accuracy = _number(record.get("test_accuracy"))
    return EpochPoint(epoch=epoch, seconds=seconds[0] + (seconds[1] or 0.0),
                      samples_per_second=_number(record.get("samples_per_second")) or 0.0,
                      test_loss=_number(record.get("test_loss"), negative=True),
                      accuracy=accuracy if accuracy is None or accuracy <= 1.0 else None,
                      batch_size=count_field(record.get("batch_size")) or 0,
                      num_workers=count_field(record.get("num_workers")) or 0)


# ---------------------------------------------------------------- text


def printable(text: str) -> str:
    """One safe line: control characters (a newline, a terminal escape) shown escaped."""
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


def value_text(value: Any) -> str:
    """A setting's value as `ctui train` flags read: 64, 1.0, true, none, [1, 28, 28]."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return _cut(printable(str(value)))
    if isinstance(value, list) and len(value) <= 16 and all(
            isinstance(item, (int, float, str)) and not isinstance(item, bool) for item in value):
        return _cut(printable("[" + ", ".join(str(item) for item in value) + "]"))
    return "?"


def best_text(best: tuple[str, float, int] | None) -> str:
    """"acc 95.28% @3", or a monitored figure: "f1 0.7778 @3"; "-" when there is none."""
    if best is None:
        return "-"
    name, value, epoch = best
    if name == "test_accuracy" and 0.0 <= value <= 1.0:
        return f"acc {value * 100:.2f}% @{epoch}"
    return f"{printable(name)} {value:.4g} @{epoch}"


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "…"


def _number(value: Any, negative: bool = False) -> float | None:
    """A finite number from a run file (not a bool), >= 0 unless negative is allowed."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
            and (negative or value >= 0):
        return float(value)
    return None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _existing(runs_dir: str | os.PathLike[str]) -> str:
    if not os.path.isdir(runs_dir):
        return "that runs folder does not exist (--runs-dir DIR names another)"
    names = [printable(info.name) for info in list_runs(runs_dir)]
    if not names:
        return "it holds no runs (`ctui ls` lists a runs folder's runs)"
    shown = ", ".join(names[-8:])
    return f"runs there: {shown}" + (f" and {len(names) - 8} older" if len(names) > 8 else "")
