"""The supervisor's side of the DataLoader observer (engine/observe): the child's environment
that installs it, its records turned into events, and `num_workers` / `batch_size` changes
written for it to apply inside a loader's current pass where it can, else at its next.

An epoch is a complete pass of the training loader (the one over the most samples). Its row
(EpochEnded) waits until that loader's next pass starts, or the program ends, so that its
eval_seconds can be the time of the passes over the program's other loaders in between, its
evaluation; records of an observer that does not say when passes start (no `pass_started`)
give rows at once, with eval_seconds 0. The numbers the program logs to wandb come with the
same records and leave as ScriptScalars (script_logs.RecordedScalars).

The records come from a program ctui did not write: every field is type-checked again here,
and text is cut short, before it becomes an event.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..events import (
    Answer,
    Command,
    EpochEnded,
    Event,
    LoaderPass,
    LogLine,
    SetBatchSize,
    Settings,
)
from .script_logs import RecordedScalars

OBSERVE_FOLDER = "observe"  # inside the run folder
SCALARS_OFF = "wandb scalars off"  # how the hook's wandb tap says it stopped (observe/hook.py)


def _observer() -> Any:
    """engine.observe, or None while it is missing or broken (the program still runs)."""
    try:
        from .. import observe
    except Exception:
        return None
    needed = ("child_environment", "write_settings", "RecordFollower")
    return observe if all(hasattr(observe, name) for name in needed) else None


class LoaderBridge:
    """One per run host. `folder` None: no observer (events and changes say so)."""

    def __init__(self, folder: Path | None, epochs_before: int = 0) -> None:
        self.folder = folder
        self.run_dir = str(Path(folder).parent) if folder is not None else ""
        self._observe = _observer() if folder is not None else None
        self._follower = None
        if self._observe is not None:
            with contextlib.suppress(OSError):
                from ..safefs import make_private_dir

                make_private_dir(Path(folder), "observer folder")
            try:
                self._follower = self._observe.RecordFollower(folder)
                self._follower.poll()  # records of earlier hosts of this run: already counted
            except Exception:
                self._observe = None
        self.loaders: dict[str, dict[str, Any]] = {}  # label -> its latest loader record
        self._epoch_loader = ""  # the loader whose complete passes are the epochs
        self._epoch_samples = -1
        self._epochs_before = epochs_before  # epochs of earlier attempts and hosts
        self._epochs = 0  # complete passes of the epoch loader in this attempt
        self._passes: dict[str, int] = {}
        self._switched: set[tuple[str, int]] = set()  # (loader, pass) changed inside the pass
        self._starts: set[Any] = set()  # pids whose observer records when a pass starts
        self._held: dict[str, Any] | None = None  # the last epoch's row, until its eval is over
        self._held_pid: Any = None
        self._held_eval = 0.0  # seconds of other loaders' passes since that epoch's end
        self._scalars = RecordedScalars()
        self.disabled = ""

    @property
    def available(self) -> bool:
        return self._observe is not None

    def child_environment(self, env: Mapping[str, str]) -> dict[str, str]:
        if self._observe is None:
            return dict(env)
        try:
            return dict(self._observe.child_environment(self.folder, env))
        except Exception as error:
            self.disabled = f"the DataLoader observer could not be set up: {error}"
            return dict(env)

    def new_attempt(self) -> None:
        """A restart: pass counts start again in the new process."""
        self._epochs_before += self._epochs
        self._epochs = 0
        self._passes = {}
        self._switched = set()

    def settings(self) -> dict[str, int]:
        """batch_size and num_workers of the main loader, for the Settings event."""
        record = self.loaders.get(self._epoch_loader) or next(iter(self.loaders.values()), {})
        return {"batch_size": _count(record.get("batch_size")) or 0,
                "num_workers": _count(record.get("num_workers")) or 0}

    def settings_event(self) -> Settings:
        return Settings(task="program", run_dir=self.run_dir, **self.settings())

    # ------------------------------------------------------------ records -> events

    def poll(self, final: bool = False) -> list[Event]:
        """Events for the records appended since the last poll. `final` once the program has
        ended: the last epoch's row is not held any longer, nor the latest scalars."""
        events: list[Event] = []
        if self._follower is not None:
            try:
                records = self._follower.poll()
            except Exception as error:
                self._follower = None
                records = []
                events.append(LogLine(level="warning", message=f"stopped reading the "
                                      f"DataLoader observer's records: {error}"))
            for record in records:
                if isinstance(record, dict):
                    events.extend(self._events_for(record))
        events.extend(self._scalars.events(final))
        if final:
            events.extend(self._release())
        return events

    def _events_for(self, record: dict[str, Any]) -> list[Event]:
        kind = record.get("kind")
        label = _text(record.get("loader"))
        if kind == "loader" and label:
            first = label not in self.loaders
            before = self.settings()
            self.loaders[label] = record
            changed = [self.settings_event()] if self.settings() != before else []
            if first:
                dataset = _text(record.get("dataset"))
                return [LogLine(message=f"DataLoader {label}{f' ({dataset})' if dataset else ''}:"
                                f" batch_size {record.get('batch_size')}, num_workers "
                                f"{record.get('num_workers')}{self._fixed(record)}")] + changed
            return changed
        if kind == "pass" and label:  # rank 0 speaks for all ranks: one epoch, not one each
            return self._pass(label, record) if not record.get("rank") else []
        if kind == "pass_started" and label and not record.get("rank"):
            self._starts.add(record.get("pid"))
            return self._release() if label == self._epoch_loader else []
        if kind == "scalar":
            self._scalars.add(record)
            return []
        if kind == "applied":
            return [LogLine(message=f"DataLoader {label}: {_text(record.get('setting'))} is "
                            f"now {record.get('value')} (from its next pass)")]
        if kind == "switched" and not record.get("rank"):
            self._switched.add((label, _count(record.get("pass")) or 0))
            return [LogLine(message=f"DataLoader {label}: {_text(record.get('setting'))} is "
                            f"now {record.get('value')} (was {record.get('previous')}), from "
                            f"batch {record.get('batch')} of this pass on; the pass goes on "
                            "in the same order, each sample once")]
        if kind == "deferred" and not record.get("rank"):
            return [LogLine(message=f"DataLoader {label}: {_text(record.get('setting'))}="
                            f"{record.get('value')} applies from its next pass, not inside "
                            f"this one: {_text(record.get('reason'), 300)}")]
        if kind == "refused":
            return [LogLine(level="warning", message=f"DataLoader {label or '?'}: "
                            f"{_text(record.get('setting'))}={record.get('value')} not applied: "
                            f"{_text(record.get('reason'), 300)}; nothing was changed")]
        if kind == "disabled" and _text(record.get("reason")).startswith(SCALARS_OFF):
            return [LogLine(level="warning", message="stopped reading what the program logs to "
                            f"wandb: {_text(record.get('reason'), 300)}")]
        if kind == "disabled":
            self.disabled = _text(record.get("reason"), 300)
            return [LogLine(level="warning", message=f"the DataLoader observer switched itself "
                            f"off: {self.disabled}")]
        return []

    def _pass(self, label: str, record: dict[str, Any]) -> list[Event]:
        seconds = _number(record.get("seconds"))
        samples = _count(record.get("samples")) or 0
        complete = record.get("complete") is True
        changed = (label, _count(record.get("pass")) or 0) in self._switched
        index = self._passes.get(label, 0) + 1
        self._passes[label] = index
        values = dict(seconds=seconds, batches=_count(record.get("batches")) or 0,
                      samples=samples,
                      samples_per_second=_number(record.get("samples_per_second")),
                      data_wait_fraction=min(1.0, _number(record.get("data_wait_fraction"))),
                      batch_size=_count(record.get("batch_size")) or 0,
                      num_workers=_count(record.get("num_workers")) or 0)
        events: list[Event] = [LoaderPass(loader=label, pass_index=index, complete=complete,
                                          **values)]
        pid = record.get("pid")
        if complete and samples > self._epoch_samples and label != self._epoch_loader:
            # The loader that goes over the most samples is the training set's.
            events.extend(self._release())
            self._epoch_loader, self._epochs = label, 0
            events.append(self.settings_event())
        elif label != self._epoch_loader and self._held is not None and pid == self._held_pid:
            self._held_eval += seconds  # evaluation (or any other loader) after the epoch
        if complete and label == self._epoch_loader:
            events.extend(self._release())  # (one whose next pass never said it started)
            self._epoch_samples = max(self._epoch_samples, samples)
            self._epochs += 1
            row = dict(
                epoch=self._epochs_before + self._epochs, epochs=0,
                train_seconds=seconds, samples_per_second=values["samples_per_second"],
                data_wait_fraction=values["data_wait_fraction"], train_loss=None,
                test_loss=None, batch_size=values["batch_size"],
                num_workers=values["num_workers"], settings_changed=changed)
            if pid in self._starts:  # its evaluation is known once the next pass starts
                self._held, self._held_pid, self._held_eval = row, pid, 0.0
            else:
                events.append(EpochEnded(**row))
        return events

    def _release(self) -> list[Event]:
        """The held epoch row, with the seconds of the other loaders' passes since its end."""
        if self._held is None:
            return []
        row, self._held = self._held, None
        return [EpochEnded(**row, eval_seconds=round(self._held_eval, 6))]

    @staticmethod
    def _fixed(record: dict[str, Any]) -> str:
        why = record.get("why_not")
        if not isinstance(why, dict) or not why:
            return ""
        return "; cannot change " + "; ".join(f"{_text(name)}: {_text(reason, 200)}"
                                              for name, reason in why.items())

    # ------------------------------------------------------------ commands

    def change(self, command: Command) -> Answer:
        name = "batch_size" if isinstance(command, SetBatchSize) else "num_workers"
        value = getattr(command, name)
        low = 1 if name == "batch_size" else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            return _refuse(command, f"{name}={value!r} refused: use a whole number >= {low}")
        if self._observe is None:
            why = self.disabled or "the DataLoader observer is not available in this ctui"
            return _refuse(command, f"{name} cannot change: {why}")
        if self.disabled:
            return _refuse(command, f"{name} cannot change: {self.disabled}")
        # The epoch loader once known; before, the observer picks the loader of the largest
        # dataset, and only a setting no known loader can take is refused now.
        target = self._epoch_loader
        candidates = [target] if target else list(self.loaders)
        reasons = [(label, _why_not(self.loaders.get(label, {}), name)) for label in candidates]
        if reasons and all(why for _, why in reasons):
            label, why = reasons[0]
            return _refuse(command, f"DataLoader {label}: {name} cannot change: {why}; "
                           "nothing was changed")
        try:
            self._observe.write_settings(self.folder, **{name: value},
                                         **({"loader": target} if target else {}))
        except Exception as error:
            return _refuse(command, f"{name}={value} not applied: {error}")
        where = f"DataLoader {target}" if target else "the DataLoader of the largest dataset"
        return Answer(command=command.kind, accepted=True, setting=name, value=value,
                      message=f"{name}={value} applies to {where} within a second, inside its "
                      "current pass where it can go on in the same order (else from its next "
                      "pass)")


def _why_not(record: dict[str, Any], name: str) -> str:
    why = record.get("why_not")
    return _text(why.get(name), 300) if isinstance(why, dict) else ""


def _refuse(command: Command, message: str) -> Answer:
    return Answer(command=command.kind, accepted=False, message=message)


def _text(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else ""
    return "".join(char if char.isprintable() else "?" for char in text[:limit])


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53:
        return value
    return None


def _number(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
            and value >= 0:
        return float(value)
    return 0.0


def observe_folder(run_dir: Path) -> Path:
    return Path(run_dir) / OBSERVE_FOLDER

