"""Which runs exist under a runs folder, and which of them a live host serves.

A host holds an exclusive flock on RUN_DIR/host.lock for its whole life and records its pid and
process start time in host.json; it is live while both hold. A socket file proves nothing (a
killed host leaves it behind), and a pid alone may have been reused. Only stdlib and psutil
here: the panel's run picker uses this before torch loads.

Run folders may sit in a shared folder, so nothing in one is trusted: files are read only when
they are regular and small (never through a link, never blocking on a FIFO), every field is
type-checked, and one folder that cannot be read is one "unreadable" line, never an error that
hides the others.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..run_folder import owner_alive
from ..runs import CONFIG_FILE, METRICS_FILE, checkpoint_dir, list_checkpoints, read_best
from ..safefs import (
    MAX_SMALL_FILE,
    UnsafePathError,
    open_regular,
    read_bounded,
    write_atomically,
)
from .errors import RunNotFound
from .protocol import END_FILE, HOST_FILE, LOCK_NAME

UNREADABLE = "unreadable"  # a folder ctui could not read: RunInfo.reason says why
STATUSES = ("live", "finished", "stopped", "failed", "interrupted", UNREADABLE)
END_STATES = ("finished", "stopped", "failed", "interrupted")  # what end.json may record

MAX_COUNT = 10**9  # epochs beyond this are a tampered file, not a run
MAX_PID = 2**31 - 1  # pid_t; larger (or 1e400, a float inf) is no pid

# last_epoch reads metrics.jsonl from its end in blocks, and no further back than TAIL_SCAN:
# the engine appends an epoch record after every epoch, and between two of them only that
# epoch's step records (one per log_interval steps, about 300 bytes each). 8 MiB holds some
# 28,000 of them: 280,000 steps in one epoch at the default log_interval of 10. Past that the
# newest step record's epoch tells the epochs done just as well (see last_epoch).
_BLOCK = 1 << 16
TAIL_SCAN = 8 << 20
_LONGEST_LINE = 1 << 14  # a record is under 1 KiB: a longer line is skipped, never parsed
_MAX_PARSED = 1000  # lines that look like records but fail to parse: a file we did not write
_RECORD = re.compile(rb'"type"\s*:\s*"(epoch|step)"')
_EPOCH_RECORD = re.compile(rb'"type"\s*:\s*"(epoch)"')  # once a step record has been seen


@dataclass(frozen=True)
class RunInfo:
    name: str
    run_dir: Path
    status: str  # one of STATUSES
    epoch: int = 0  # epochs completed
    epochs: int = 0  # epochs planned; 0 when unknown
    last_checkpoint: Path | None = None
    checkpoint_age: float | None = None  # seconds since the last checkpoint was written
    pid: int | None = None  # the host's pid while live
    reason: str = ""  # why an "unreadable" run could not be read
    kind: str = "train"  # "program": a `ctui run -- CMD` run
    exit_code: int | None = None  # a program run's last exit code, once it has ended
    signal: str = ""  # ... or the signal that ended it ("SIGKILL")
    best: tuple[str, float, int] | None = None  # --monitor: (figure, value, epoch)

    @property
    def age(self) -> float | None:
        """checkpoint_age, under the name the panel's run picker reads."""
        return self.checkpoint_age


def read_json(path: Path) -> dict[str, Any]:
    """A small JSON object from a run folder, or {} for anything else: missing, torn, not an
    object, over MAX_SMALL_FILE, a link, a FIFO or device, or not ours to read."""
    try:
        data = json.loads(read_bounded(path, MAX_SMALL_FILE))
    except (OSError, ValueError, RecursionError):  # RecursionError: [[[[... nested too deep
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically (an unguessable O_EXCL temp + rename), private to the user: a link planted
    at any name is replaced, never written through."""
    write_atomically(path, json.dumps(data).encode())


# ---------------------------------------------------------------- fields read from run files


def count_field(value: Any) -> int | None:
    """An epoch count from a run file: an int (not a bool) from 0 to MAX_COUNT, else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT:
        return value
    return None


def pid_field(value: Any) -> int | None:
    """A process id from a run file, or None (a float, a string, 0, negative, too large)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_PID:
        return value
    return None


def time_field(value: Any) -> float | None:
    """A timestamp from a run file: a finite number (not a bool), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def planned_epochs(run_dir: Path) -> int:
    """config.json's config.epochs, or 0 (unknown) when it is missing or not a count."""
    config = read_json(run_dir / CONFIG_FILE).get("config")
    return (count_field(config.get("epochs")) or 0) if isinstance(config, dict) else 0


# ---------------------------------------------------------------- live or not


def host_is_live(run_dir: Path) -> bool:
    """True while the host recorded in host.json runs and holds the run's lock. Both: a
    DataLoader worker forked by a killed host inherits the lock for a few seconds."""
    return _lock_held(Path(run_dir)) and owner_alive(Path(run_dir))


def _lock_held(run_dir: Path) -> bool:
    try:  # a FIFO or a link planted as host.lock would block us, or lock something else
        fd = open_regular(run_dir / LOCK_NAME)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # also releases our shared lock, if we got it
    return False


# ---------------------------------------------------------------- one run


def is_run_dir(path: Path) -> bool:
    """A real folder (not a link) holding config.json or host.json. lstat only: nothing is
    followed or opened, so a planted FIFO or a link cannot block or mislead it."""
    try:
        return _is_run_dir(Path(path))
    except OSError:
        return False


def _is_run_dir(path: Path) -> bool:
    """is_run_dir, but an error other than "not there" (EACCES on another user's private
    folder) is raised: list_runs shows that folder as unreadable."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return False
    except (FileNotFoundError, NotADirectoryError):
        return False
    return any(_exists(path / name) for name in (CONFIG_FILE, HOST_FILE))


def _exists(path: Path) -> bool:
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def run_status(run_dir: Path) -> tuple[str, int | None]:
    """(status, host pid while live). The end record counts only if it belongs to the host
    that last started here, so a resumed run is live again while a new host runs it."""
    host = read_json(run_dir / HOST_FILE)
    end = read_json(run_dir / END_FILE)
    ended_here = not host or time_field(end.get("host_started")) == time_field(
        host.get("started"))
    state = end.get("state")
    if isinstance(state, str) and state in END_STATES and ended_here:
        return state, None
    if host_is_live(run_dir):
        return "live", pid_field(host.get("pid"))
    if host:
        return "interrupted", None
    return "", None  # never hosted (a headless or notebook run): the caller decides


def run_info(run_dir: Path) -> RunInfo:
    run_dir = Path(run_dir)
    epochs = planned_epochs(run_dir)
    epoch = last_epoch(run_dir)
    status, pid = run_status(run_dir)
    if not status:  # headless runs leave no end record: judge by the epochs done
        status = "finished" if epochs and epoch >= epochs else "interrupted"
    checkpoint = newest_checkpoint(run_dir)
    age = None
    if checkpoint is not None:
        with contextlib.suppress(OSError):
            age = max(0.0, time.time() - os.lstat(checkpoint).st_mtime)
    kind, exit_code, signal = "train", None, ""
    if run_kind(run_dir) == "program":
        kind = "program"
        if status in END_STATES:
            end = read_json(run_dir / END_FILE)
            code = end.get("exit_code")
            if isinstance(code, int) and not isinstance(code, bool) and -1 < code < 256:
                exit_code = code
            name = end.get("signal")
            signal = name if isinstance(name, str) and re.fullmatch(r"SIG[A-Z0-9]{1,10}",
                                                                    name) else ""
    return RunInfo(name=run_dir.name, run_dir=run_dir, status=status, epoch=epoch, epochs=epochs,
                   last_checkpoint=checkpoint, checkpoint_age=age, pid=pid, kind=kind,
                   exit_code=exit_code, signal=signal, best=read_best(run_dir))


def run_kind(run_dir: Path) -> str:
    """"program" for a `ctui run -- CMD` run (its config.json says so), else "train"."""
    return "program" if read_json(Path(run_dir) / CONFIG_FILE).get("kind") == "program" \
        else "train"


def unreadable_run(run_dir: Path, error: BaseException) -> RunInfo:
    return RunInfo(name=run_dir.name, run_dir=run_dir, status=UNREADABLE, epoch=0, epochs=0,
                   last_checkpoint=None, checkpoint_age=None, pid=None, reason=_reason(error))


def _reason(error: BaseException) -> str:
    """A few words for the listing: "config.json: not a regular file", "permission denied"."""
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror[:1].lower() + error.strerror[1:]
        return f"{Path(str(error.filename)).name}: {text}" if error.filename else text
    return f"{type(error).__name__}: {error}"[:120]


# ---------------------------------------------------------------- every run


def list_runs(runs_dir: str | os.PathLike[str]) -> list[RunInfo]:
    """Every run folder directly under runs_dir, oldest start first. Each is read on its own: one
    that cannot be read is listed as "unreadable" (first) with the reason, the others as usual."""
    folder = Path(runs_dir)
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    found = [entry for name in names if (entry := _list_one(folder / name)) is not None]
    return [info for _, info in sorted(found, key=lambda entry: (entry[0], entry[1].name))]


def _list_one(path: Path) -> tuple[tuple[int, float], RunInfo] | None:
    """(sort key, info) for one entry of the runs folder; None when it is no run folder."""
    try:
        if not _is_run_dir(path):
            return None
        check_regular_files(path)
        return (1, _started(path)), run_info(path)
    except Exception as error:  # whatever one folder holds, the others still list
        return (0, 0.0), unreadable_run(path, error)


RUN_FILES = (CONFIG_FILE, HOST_FILE, END_FILE, METRICS_FILE, LOCK_NAME)


def check_regular_files(run_dir: Path, names: tuple[str, ...] = RUN_FILES) -> None:
    """The run's own files, where present, must be regular files: a FIFO, a device or a link
    in their place is someone's doing, and the run is shown as unreadable, saying which."""
    for name in names:
        try:
            mode = os.lstat(run_dir / name).st_mode
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(mode):
            kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
            raise UnsafePathError(0, kind, str(run_dir / name))


def resolve_run(runs_dir: str | os.PathLike[str], name_or_path: str) -> Path:
    """A RUN argument -> its folder: a path to a run folder, or a name under runs_dir."""
    candidates = [Path(runs_dir) / name_or_path]
    if os.sep in name_or_path or name_or_path.startswith("."):
        candidates.insert(0, Path(name_or_path))
    else:
        candidates.append(Path(name_or_path))
    for candidate in candidates:
        if is_run_dir(candidate):
            return candidate.resolve()
    raise RunNotFound(f"no run {name_or_path!r} in {runs_dir}; `ctui ls --runs-dir "
                      f"{runs_dir}` lists them")


def find_live_run(runs_dir: str | os.PathLike[str], name_or_path: str | None = None) -> RunInfo:
    """The run a command acts on: the one named, or the only live one when none is named."""
    if name_or_path:
        info = run_info(resolve_run(runs_dir, name_or_path))
        if info.status != "live":
            hint = ""
            if info.kind == "program" and info.status in ("stopped", "interrupted", "failed"):
                hint = f"; run it again with: ctui run --resume {info.run_dir}"
            elif info.status in ("stopped", "interrupted"):
                hint = f"; continue it with: ctui train --detach --resume --run-dir {info.run_dir}"
            raise RunNotFound(f"run {info.name} is not live ({info.status}){hint}")
        return info
    live = [info for info in list_runs(runs_dir) if info.status == "live"]
    if not live:
        raise RunNotFound(f"no live run in {runs_dir}; start one with `ctui train --detach`, "
                          "or name the run (ctui ls lists them)")
    if len(live) > 1:
        raise RunNotFound(f"{len(live)} runs are live in {runs_dir} ("
                          + ", ".join(info.name for info in live) + "); say which one")
    return live[0]


# ---------------------------------------------------------------- metrics.jsonl


def last_epoch(run_dir: Path) -> int:
    """The epochs a run has completed: its newest epoch record in metrics.jsonl, looked for in
    the last TAIL_SCAN bytes only, newest block first. Failing that, the newest step record
    says epoch N is under way, so N - 1 are done (each epoch's record follows its steps)."""
    try:
        fd = open_regular(Path(run_dir) / METRICS_FILE)
    except OSError:
        return 0
    try:
        return _newest_epoch(_chunks_from_end(fd, os.fstat(fd).st_size))
    except OSError:
        return 0
    finally:
        os.close(fd)


def _newest_epoch(chunks: Iterator[bytes]) -> int:
    under_way = None  # the epoch of the newest step record
    budget = _MAX_PARSED
    for chunk in chunks:
        line_start = len(chunk) + 1
        pattern = _RECORD if under_way is None else _EPOCH_RECORD
        for match in reversed(list(pattern.finditer(chunk))):
            kind = match.group(1).decode()
            if match.start() >= line_start or (kind == "step" and under_way is not None):
                continue  # a line already looked at, or a step record no longer needed
            if budget <= 0:
                return _done_before(under_way)
            budget -= 1
            line_start, line = _line_at(chunk, match.start())
            epoch = _record_epoch(line, kind)
            if epoch is not None and kind == "epoch":
                return epoch
            if epoch is not None:
                under_way = epoch
    return _done_before(under_way)


def _done_before(under_way: int | None) -> int:
    return max(0, under_way - 1) if under_way is not None else 0


def _record_epoch(line: bytes, kind: str) -> int | None:
    """The "epoch" of a line that is a JSON object of the given type, or None."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or record.get("type") != kind:
        return None
    return count_field(record.get("epoch"))


def _line_at(chunk: bytes, at: int) -> tuple[int, bytes]:
    """(where it starts, the line) for the line holding chunk[at]; b"" if it is overlong."""
    start = chunk.rfind(b"\n", 0, at) + 1
    stop = chunk.find(b"\n", at)
    stop = stop if stop >= 0 else len(chunk)
    return start, chunk[start:stop] if stop - start <= _LONGEST_LINE else b""


def _chunks_from_end(fd: int, size: int) -> Iterator[bytes]:
    """The last TAIL_SCAN bytes of a file as runs of whole lines, the newest run first. Each
    block is read once and searched once (linear time); a line longer than _LONGEST_LINE is
    dropped rather than carried from block to block, which would make the scan quadratic."""
    floor = max(0, size - TAIL_SCAN)
    end, carry, overlong = size, b"", False
    while end > floor:
        start = max(floor, end - _BLOCK)
        block = os.pread(fd, end - start, start)
        if len(block) != end - start:
            return  # the file shrank while we read it (a resume rewrote it)
        data, end = block + carry, start
        if overlong:  # the tail of this block is the start of the overlong line
            cut = data.rfind(b"\n")
            if cut < 0:
                continue
            data, overlong = data[:cut], False
        if start == 0:
            yield data
            return
        cut = data.find(b"\n")  # before it: the end of a line that began in an earlier block
        carry = data if cut < 0 else data[:cut]
        if cut >= 0:
            yield data[cut + 1:]
        if len(carry) > _LONGEST_LINE:
            carry, overlong = b"", True


# ---------------------------------------------------------------- checkpoints and start time


def newest_checkpoint(run_dir: Path) -> Path | None:
    committed = list_checkpoints(checkpoint_dir(run_dir))
    return committed[-1] if committed else None


def _started(run_dir: Path) -> float:
    """When the run started, to sort by: host.json's time, else config.json's (or the
    folder's) modification time; lstat only."""
    started = time_field(read_json(run_dir / HOST_FILE).get("started"))
    if started is not None:
        return started
    for name in (CONFIG_FILE, ""):
        with contextlib.suppress(OSError):
            return os.lstat(run_dir / name).st_mtime
    return 0.0
