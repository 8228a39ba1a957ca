"""Observe the DataLoaders of an unmodified Python training script, from outside it.

The supervisor (`ctui run -- CMD`) starts CMD with child_environment(): a start-up hook
(boot/sitecustomize.py, coverage.py's precedent) that, in every Python process of CMD which
imports torch (torchrun's ranks included; DataLoader workers stay silent), times each pass over
each DataLoader, and in every one which imports wandb, reads the numbers it logs there; both
append records to `<observe_dir>/passes-<rank>-<pid>.jsonl`:

    loader    loader, dataset, batch_size, num_workers, persistent_workers,
              can_change {setting: bool}, why_not {setting: reason}
    pass_started  loader, pass, started   (when iter() starts a pass)
    pass      loader, pass, started, seconds, wait_seconds, batches, samples,
              samples_per_second, data_wait_fraction, batch_size, num_workers,
              complete, ended (exhausted | abandoned | restarted | exit)
    applied   loader, setting, value, previous, from_pass
    refused   loader, setting, value, reason
    switched  loader, setting, value, previous, pass, batch   (applied inside a pass)
    deferred  loader, setting, value, reason   (not inside this pass: from the next one)
    scalar    source ("wandb"), tag, step (or null), value (null: not finite)
              (the latest of each tag, a few times a second: not every call)
    process   world_size, argv0          (first line of each file)
    disabled  reason                     (the observer stopped; the script runs on)

and every record has kind, time, pid and rank. RecordFollower reads them back, checked.
write_settings() changes num_workers and batch_size inside the current pass where the loader
can continue its order exactly (resume_pass.py), else from its next pass.

Importing this package loads neither torch, wandb nor Textual.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from ..safefs import read_bounded, write_atomically
from .hook import ENV_DIR, MAX_BATCH_SIZE, MAX_NUM_WORKERS, SETTINGS_FILE
from .records import SCHEMA, RecordFollower, parse_record

BOOT_DIR = Path(__file__).resolve().parent / "boot"

__all__ = ["BOOT_DIR", "ENV_DIR", "SCHEMA", "RecordFollower", "child_environment",
           "parse_record", "read_settings", "write_settings"]


def child_environment(observe_dir: Path, env: Mapping[str, str]) -> dict[str, str]:
    """`env` for a supervised program: the start-up hook first on PYTHONPATH and the observe
    folder (absolute: the program may change directory) in CTUI_OBSERVE_DIR."""
    result = dict(env)
    boot = str(BOOT_DIR)
    rest = [entry for entry in result.get("PYTHONPATH", "").split(os.pathsep)
            if entry and entry != boot]
    result["PYTHONPATH"] = os.pathsep.join([boot, *rest])
    result[ENV_DIR] = str(Path(observe_dir).absolute())
    return result


def read_settings(observe_dir: Path) -> dict[str, int | str]:
    """The live settings last written, {} when none (or the file is not a valid one)."""
    try:
        data = json.loads(read_bounded(Path(observe_dir) / SETTINGS_FILE, 4096))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    settings: dict[str, int | str] = {}
    for name in ("num_workers", "batch_size", "loader"):
        value = data.get(name)
        if (name == "loader" and type(value) is str) or (name != "loader" and type(value) is int):
            settings[name] = value
    return settings


def write_settings(observe_dir: Path, *, num_workers: int | None = None,
                   batch_size: int | None = None, loader: str | None = None) -> None:
    """Ask the observed script to use these values from each loader's next pass; values not
    given keep what was asked before. `loader` (a label such as `train.py:57`, from a `loader`
    record) picks the loader; without it they go to the loader of the largest dataset.
    ValueError for a value out of range."""
    for name, value, low, high in (("num_workers", num_workers, 0, MAX_NUM_WORKERS),
                                   ("batch_size", batch_size, 1, MAX_BATCH_SIZE)):
        if value is not None and (type(value) is not int or not low <= value <= high):
            raise ValueError(f"{name}={value!r}: use a whole number from {low} to {high}")
    settings = read_settings(observe_dir)
    for name, value in (("num_workers", num_workers), ("batch_size", batch_size),
                        ("loader", loader)):
        if value is not None:
            settings[name] = value
    write_atomically(Path(observe_dir) / SETTINGS_FILE,
                     json.dumps(settings, sort_keys=True).encode(), durable=False)
