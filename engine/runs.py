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
