"""Run folders: where a run keeps its settings, metrics, checkpoints and logs."""


from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from .config import RunConfig
from .safefs import open_regular, read_bounded, write_atomically

CHECKPOINT_NAME = re.compile(r"^ckpt-e(\d+)-s(\d+)\.pt$")
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
HOST_FILE = "host.json"  # the process that owns (or last owned) the folder: pid, start time
END_FILE = "end.json"  # how that process's run ended: finished, stopped or failed
BEST_FILE = "best.json"  # --monitor: the best epoch's figure, for `ctui ls` without torch
# Settings edited in the panel for the run's next start or resume, kept with the run so a
# detach, reattach or resume keeps them; never the run's folder names.
NEXT_FILE = "next.json"
NOT_NEXT = ("run_dir", "runs_dir", "task")  # task: a file's contents never choose code to run
STATE_FILE = "state.json"  # a live host's latest state (running, paused...), for `ctui ls`


def new_run_name(config: RunConfig) -> str:
    task = config.task
    if ":" in task:  # user task: the file or module name reads better than the full spec
        task = Path(task.rpartition(":")[0]).stem.split(".")[-1]
    return f"{task}-{time.strftime('%Y%m%d-%H%M%S')}"



def write_config(run_dir: Path, config: RunConfig, extra: dict) -> None:
    """config.json, atomically, never through a planted link."""
    data = {"config": config.to_dict(), **extra}
    write_atomically(run_dir / CONFIG_FILE, (json.dumps(data, indent=2) + "\n").encode())


def recorded_settings(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings config.json records (its "config"), read bounded and never through a link.
    FileNotFoundError when there is no config.json; ValueError when it holds no settings."""
    path = Path(run_dir) / CONFIG_FILE
    data = json.loads(read_bounded(path))
    settings = data.get("config") if isinstance(data, dict) else None
    if not isinstance(settings, dict):
        raise ValueError(f"{path} holds no settings")
    return dict(settings)


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict]:
    """Every record of a run's metrics.jsonl (epochs and logged steps), skipping torn lines."""
    path = Path(run_dir) / METRICS_FILE
    records = []
    try:
        handle = os.fdopen(open_regular(path), "rb")  # no link, no FIFO
    except OSError:
        return records
    with handle:
        for line in handle:
            try:
                record = json.loads(line)
            except ValueError:  # torn by a crash, or not text
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def checkpoint_dir(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_name(epoch: int, global_step: int) -> str:
    """Named for the last epoch trained into it and the global step."""
    return f"ckpt-e{epoch:04d}-s{global_step:09d}.pt"


def list_checkpoints(folder: Path) -> list[Path]:
    """Committed checkpoints, oldest first (by global step, then epoch)."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    found = [((int(match.group(2)), int(match.group(1))), folder / entry)
             for entry in entries if (match := CHECKPOINT_NAME.match(entry))]
    return [path for _, path in sorted(found)]


def write_best(run_dir: Path, monitor: str, mode: str, value: float, epoch: int) -> None:
    data = {"monitor": monitor, "mode": mode, "value": value, "epoch": epoch}
    write_atomically(run_dir / BEST_FILE, (json.dumps(data) + "\n").encode())


def read_best(run_dir: str | os.PathLike[str]) -> tuple[str, float, int] | None:
    """(monitor, value, epoch) from best.json, type-checked; None when absent or not ours."""
    try:
        data = json.loads(read_bounded(Path(run_dir) / BEST_FILE))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    monitor, value, epoch = data.get("monitor"), data.get("value"), data.get("epoch")
    if not isinstance(monitor, str) or len(monitor) > 64 or isinstance(value, bool) or \
            not isinstance(value, (int, float)) or isinstance(epoch, bool) or \
            not isinstance(epoch, int) or not 0 < epoch < 2**31:
        return None
    return monitor, float(value), epoch


def write_next_settings(run_dir: str | os.PathLike[str], changes: dict[str, Any]) -> None:
    """Record settings for the run's next start or resume (merged over those already kept),
    atomically and never through a link. Raises ConfigError for a bad one, as RunConfig does."""
    kept = {**read_next_settings(run_dir), **changes}
    bad = sorted(set(kept) & set(NOT_NEXT))
    if bad:
        raise ValueError(f"{bad[0]} cannot be kept for the next run")
    RunConfig().replace(**_typed(kept))  # checked as a whole before it is written
    data = {name: list(value) if isinstance(value, tuple) else value
            for name, value in kept.items()}
    write_atomically(Path(run_dir) / NEXT_FILE, (json.dumps({"next": data}) + "\n").encode())


def read_next_settings(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The kept settings, each a known setting with a valid value; {} when there are none or
    the file is not one ctui wrote (a crafted one never reaches a run)."""
    try:
        data = json.loads(read_bounded(Path(run_dir) / NEXT_FILE))
    except (OSError, ValueError):
        return {}
    kept = data.get("next") if isinstance(data, dict) else None
    if not isinstance(kept, dict) or set(kept) & set(NOT_NEXT):
        return {}
    try:
        RunConfig().replace(**_typed(kept))
    except (TypeError, ValueError):  # ConfigError is a ValueError; an unknown name a TypeError
        return {}
    return _typed(kept)


def clear_next_settings(run_dir: str | os.PathLike[str]) -> None:
    """Once a resume has taken them, they are the run's own settings (config.json)."""
    try:
        os.unlink(Path(run_dir) / NEXT_FILE)
    except FileNotFoundError:
        pass


def _typed(kept: dict[str, Any]) -> dict[str, Any]:
    """JSON's lists back to the tuples RunConfig keeps (fake_image_shape)."""
    return {name: tuple(value) if isinstance(value, list) else value
            for name, value in kept.items()}


def record_state(run_dir: str | os.PathLike[str], state: str) -> None:
    """A live host's state as it changes (state.json, with the host's pid so a stale one is
    known), for `ctui ls` to tell a paused run from a running one. Best effort: a full disk
    costs the line in `ctui ls`, never the run."""
    try:
        write_atomically(Path(run_dir) / STATE_FILE,
                         json.dumps({"state": state, "pid": os.getpid()}).encode(),
                         durable=False)
    except OSError:
        pass


def recorded_state(run_dir: str | os.PathLike[str], pid: int | None) -> str:
    """The state the live host `pid` recorded last, or '' (none, another host's, not ours)."""
    try:
        data = json.loads(read_bounded(Path(run_dir) / STATE_FILE))
    except (OSError, ValueError):
        return ""
    if not isinstance(data, dict) or pid is None or data.get("pid") != pid:
        return ""
    state = data.get("state")
    return state if state in ("idle", "running", "paused", "stopping") else ""

