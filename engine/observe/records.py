"""Reading what observed processes append to the observe folder, trusting none of it.

Each observed process appends JSON lines to its own `passes-<rank>-<pid>.jsonl`. The folder is
the run's, but a record is still checked field by field before anyone reads it: a file may be
half written, truncated, replaced, a link, or crafted. Torch-free.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..safefs import open_regular
from .hook import RECORDS_PREFIX, RECORDS_SUFFIX

MAX_LINE = 64 * 1024
MAX_READ = 4 << 20  # per file per poll; the rest comes at the next poll
MAX_FILES = 512
MAX_TEXT = 1000
SETTINGS = ("num_workers", "batch_size")
PASS_ENDS = ("exhausted", "abandoned", "restarted", "exit")

_INT, _FLOAT, _TEXT, _BOOL = "int", "float", "text", "bool"
_OPT_INT = "int?"
_OPT_NUMBER = "number?"  # a finite number of either sign, or null (not finite where logged)
_TAG = "tag"  # text of 1 to MAX_TAG characters
MAX_TAG = 200
SCALAR_SOURCES = ("wandb",)
_FLAGS, _REASONS = "flags", "reasons"

COMMON = {"kind": _TEXT, "time": _FLOAT, "pid": _INT, "rank": _INT}
# kind -> field -> type; every field is required and nothing else is kept
SCHEMA: dict[str, dict[str, str]] = {
    "process": {"world_size": _INT, "argv0": _TEXT},
    "loader": {"loader": _TEXT, "dataset": _TEXT, "batch_size": _OPT_INT,
               "num_workers": _INT, "persistent_workers": _BOOL, "can_change": _FLAGS,
               "why_not": _REASONS},
    "pass_started": {"loader": _TEXT, "pass": _INT, "started": _FLOAT},
    "pass": {"loader": _TEXT, "pass": _INT, "started": _FLOAT, "seconds": _FLOAT,
             "wait_seconds": _FLOAT, "batches": _INT, "samples": _INT,
             "samples_per_second": _FLOAT, "data_wait_fraction": _FLOAT,
             "batch_size": _OPT_INT, "num_workers": _INT, "complete": _BOOL, "ended": _TEXT},
    "applied": {"loader": _TEXT, "setting": _TEXT, "value": _INT, "previous": _OPT_INT,
                "from_pass": _INT},
    "refused": {"loader": _TEXT, "setting": _TEXT, "value": _INT, "reason": _TEXT},
    "switched": {"loader": _TEXT, "setting": _TEXT, "value": _INT, "previous": _OPT_INT,
                 "pass": _INT, "batch": _INT},
    "deferred": {"loader": _TEXT, "setting": _TEXT, "value": _INT, "reason": _TEXT},
    "scalar": {"source": _TEXT, "tag": _TAG, "step": _OPT_INT, "value": _OPT_NUMBER},
    "disabled": {"reason": _TEXT},
}


def _valid(kind: str, value: Any) -> bool:
    if kind == _INT:
        return type(value) is int and 0 <= value < 1 << 62
    if kind == _OPT_INT:
        return value is None or _valid(_INT, value)
    if kind == _FLOAT:
        return _finite(value) and value >= 0
    if kind == _OPT_NUMBER:
        return value is None or _finite(value)
    if kind == _TEXT:
        return type(value) is str and len(value) <= MAX_TEXT
    if kind == _TAG:
        return type(value) is str and 0 < len(value) <= MAX_TAG
    if kind == _BOOL:
        return type(value) is bool
    if kind in (_FLAGS, _REASONS):
        leaf = _BOOL if kind == _FLAGS else _TEXT
        return type(value) is dict and all(
            key in SETTINGS and _valid(leaf, item) for key, item in value.items())
    return False


def _finite(value: Any) -> bool:
    """An int or float that a float holds (an int of 400 digits is no float: no OverflowError)."""
    if type(value) is float:
        return math.isfinite(value)
    return type(value) is int and -1e308 < value < 1e308


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number ctui accepts")


def parse_record(line: bytes) -> dict[str, Any] | None:
    """The record on one line, with exactly its schema's fields, or None when it is not one."""
    try:
        data = json.loads(line, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return None
    if type(data) is not dict:
        return None
    fields = SCHEMA.get(data.get("kind"))  # type: ignore[arg-type]
    if fields is None:
        return None
    record = {}
    for name, kind in (*COMMON.items(), *fields.items()):
        if name not in data or not _valid(kind, data[name]):
            return None
        record[name] = data[name]
    if record["kind"] == "pass" and (record["ended"] not in PASS_ENDS
                                     or record["data_wait_fraction"] > 1):
        return None
    if record["kind"] in ("applied", "refused", "switched", "deferred") and \
            record["setting"] not in (*SETTINGS, "settings.json"):
        return None
    if record["kind"] == "scalar" and record["source"] not in SCALAR_SOURCES:
        return None
    return record


@dataclass
class _Followed:
    inode: int
    offset: int = 0
    partial: bytes = b""
    discarding: bool = False  # inside a line longer than MAX_LINE: skip to its end


class RecordFollower:
    """New, checked records from every process file in an observe folder since the last poll.

    Reads regular files of this user only, never through a link; a line longer than MAX_LINE
    or that is not a valid record is skipped (and counted in `skipped`); a file that shrinks or
    is replaced is read again from its start."""

    def __init__(self, observe_dir: Path | str) -> None:
        self.folder = Path(observe_dir)
        self.files: dict[str, _Followed] = {}
        self.skipped = 0

    def poll(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        try:
            names = sorted(name for name in os.listdir(self.folder)
                           if name.startswith(RECORDS_PREFIX) and name.endswith(RECORDS_SUFFIX))
        except OSError:
            return records
        for name in names[:MAX_FILES]:
            records.extend(self._read(name))
        return records

    def _read(self, name: str) -> list[dict[str, Any]]:
        path = self.folder / name
        try:
            info = os.lstat(path)
        except OSError:
            return []
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            return []
        followed = self.files.get(name)
        if followed is None or followed.inode != info.st_ino or info.st_size < followed.offset:
            followed = self.files[name] = _Followed(info.st_ino)
        if info.st_size == followed.offset:
            return []
        try:
            fd = open_regular(path)
        except OSError:
            return []
        try:
            if os.fstat(fd).st_ino != followed.inode:  # replaced between lstat and open
                return []
            os.lseek(fd, followed.offset, os.SEEK_SET)
            data = os.read(fd, min(info.st_size - followed.offset, MAX_READ))
        except OSError:
            return []
        finally:
            os.close(fd)
        followed.offset += len(data)
        return self._lines(followed, data)

    def _lines(self, followed: _Followed, data: bytes) -> list[dict[str, Any]]:
        records = []
        *complete, rest = (followed.partial + data).split(b"\n")
        for line in complete:
            if followed.discarding:
                followed.discarding = False
                continue
            record = parse_record(line) if len(line) <= MAX_LINE else None
            if record is None:
                self.skipped += bool(line.strip())
            else:
                records.append(record)
        if len(rest) > MAX_LINE:
            if not followed.discarding:
                self.skipped += 1
            followed.discarding, rest = True, b""
        followed.partial = rest
        return records
