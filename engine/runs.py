"""Run folders: where a run keeps its settings, metrics, checkpoints and logs."""


from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .config import RunConfig

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"


def new_run_name(config: RunConfig) -> str:
    task = config.task
    if ":" in task:  # user task: the file or module name reads better than the full spec
        task = Path(task.rpartition(":")[0]).stem.split(".")[-1]
    return f"{task}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_run_dir(path: Path) -> Path:
    """Create the folder (and parents) readable by its owner only."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def write_config(run_dir: Path, config: RunConfig, extra: dict) -> None:
    data = {"config": config.to_dict(), **extra}
    temp = run_dir / (CONFIG_FILE + ".tmp")
    temp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temp, run_dir / CONFIG_FILE)


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict]:
    """Every record of a run's metrics.jsonl (epochs and logged steps), skipping torn lines."""
    path = Path(run_dir) / METRICS_FILE
    records = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records
