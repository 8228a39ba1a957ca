"""What a supervised program logs itself, picked up live: the scalars of the TensorBoard event
files it writes under its working folder, and the numbers it logs to wandb, sent on as
ScriptScalars events (to metrics.jsonl and the panel).

Found by a bounded walk of the working folder (at most ENTRIES_PER_SCAN entries a scan, the
walk continuing where it stopped at the next one; never through a link, never outside it;
hidden folders, `__pycache__` and `wandb/`, where wandb's copies of TensorBoard files live,
are skipped). A file counts when it is a regular file of this user changed since the program
started: older ones are earlier runs'. Each is read incrementally by tensorboard's own
EventFileLoader, through /proc/self/fd so the file read is the one checked, never a link
planted there later.

What the program logs to wandb comes another way: wandb's run files (`wandb/*/run-*.wandb`)
are not read, as wandb 0.31, installed here, ships no Python reader for them (the writer is the
Go `wandb-core`), ctui does not parse that format itself, and an offline run's file holds only
its header until wandb flushes it (7 bytes after six logged steps, measured), so nothing could
be shown live. Instead the observer inside the program (engine/observe/hook.py), once the
program imports wandb, wraps wandb's Run.log (which wandb.log reaches too): after each call
returns, the numbers logged are kept, the latest per tag, and written as `scalar` records a few
times a second and at exit. LoaderBridge reads them with the DataLoader records and hands them
to RecordedScalars here, which makes the same ScriptScalars events as TensorBoard's, with
source "wandb" and path "wandb" (`wandb/rank1` for another rank). A script logging every step
is sampled: metrics.jsonl gets each tag's latest value about twice a second, not every step;
its TensorBoard files, where it writes them, keep every step.

Torch-free; tensorboard is imported only once an event file is found.
"""

from __future__ import annotations

import logging
import math
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..events import Event, LogLine, ScriptScalars, ScriptScalarsLatest
from ..safefs import open_regular

TENSORBOARD_PREFIX = "events.out.tfevents."
SKIP_FOLDERS = frozenset({"__pycache__", "node_modules", "site-packages", "wandb"})
MAX_DEPTH = 8  # folders below the working folder
ENTRIES_PER_SCAN = 20_000  # directory entries looked at per scan: a dataset folder stays cheap
MAX_FILES = 64  # event files followed at once
EVENTS_PER_POLL = 5_000  # records read per file per poll; the rest at the next poll
SCALARS_PER_EVENT = 1_000
MAX_TAG = 120
MAX_LATEST = 200  # tags whose latest value is kept for ScriptScalarsLatest; the first seen stay
LATEST_EVERY = 5.0  # seconds between two ScriptScalarsLatest, when something changed
MTIME_SLACK = 2.0  # seconds: a file the program made in its first moments still counts
POLL_EVERY = 1.0
SCAN_EVERY = 5.0

Scalar = tuple[str, int, float | None]


def _tensorboard() -> tuple[Any, Callable[[Any], Any]]:
    """(EventFileLoader, make_ndarray) from the installed tensorboard; ImportError without."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util.tensor_util import make_ndarray

    logging.getLogger("tensorboard").setLevel(logging.ERROR)  # not its debug lines in host.log
    return EventFileLoader, make_ndarray


def _walk(root: Path, exclude: tuple[Path, ...]) -> Iterator[os.DirEntry]:
    """Every TensorBoard event file entry under root, depth first, no link followed."""
    stack: list[tuple[str, int]] = [(str(root), 0)]
    excluded = {str(path) for path in exclude}
    while stack:
        folder, depth = stack.pop()
        try:
            with os.scandir(folder) as entries:
                listed = list(entries)
        except OSError:
            continue
        for entry in listed:
            yield entry  # every entry, so the caller can count them against its budget
            try:
                if entry.is_dir(follow_symlinks=False):
                    if (depth < MAX_DEPTH and not entry.name.startswith(".")
                            and entry.name not in SKIP_FOLDERS and entry.path not in excluded):
                        stack.append((entry.path, depth + 1))
            except OSError:
                continue


class _EventFile:
    """One TensorBoard event file, read from where the last poll stopped."""

    def __init__(self, fd: int, relative: str, loader_class: Any) -> None:
        self.fd = fd
        self.relative = relative
        # The reader opens a path at each read: one that is this descriptor, not a name that
        # could be swapped for a link (/dev/fd where there is no /proc, as on macOS).
        folder = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
        self.loader = loader_class(f"{folder}/{fd}")
        self.events: Iterator[Any] | None = None

    def read(self, make_ndarray: Callable[[Any], Any]) -> list[Scalar]:
        scalars: list[Scalar] = []
        for _ in range(EVENTS_PER_POLL):
            if self.events is None:
                self.events = self.loader.Load()
            event = next(self.events, None)
            if event is None:  # the end of what is written so far: a new Load() next poll
                self.events = None
                break
            for value in event.summary.value:
                scalar = _scalar(value, int(event.step), make_ndarray)
                if scalar is not None:
                    scalars.append(scalar)
        return scalars

    def close(self) -> None:
        self.events = None
        os.close(self.fd)


def _scalar(value: Any, step: int, make_ndarray: Callable[[Any], Any]) -> Scalar | None:
    """(tag, step, value) for a scalar summary value (after tensorboard's own migration of
    old-style simple values), else None. A value that is not finite is None: a diverged loss
    shows as such, and the JSON stays JSON."""
    if value.metadata.plugin_data.plugin_name != "scalars" or not value.HasField("tensor"):
        return None
    array = make_ndarray(value.tensor)
    if array.size != 1:
        return None
    number = float(array.reshape(-1)[0])
    tag = "".join(char if char.isprintable() else "?" for char in value.tag[:MAX_TAG])
    return tag, step, number if math.isfinite(number) else None


class LatestScalars:
    """The latest value of each (folder, tag), for ScriptScalarsLatest: sent when something
    changed, at most every LATEST_EVERY seconds (and when final)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.values: dict[tuple[str, str], tuple[int, float | None]] = {}
        self._changed = False
        self._sent = float("-inf")

    def remember(self, folder: str, scalars: list[Scalar]) -> None:
        for tag, step, value in scalars:
            key = (folder, tag)
            if key in self.values or len(self.values) < MAX_LATEST:
                self.values[key] = (step, value)
                self._changed = True

    def event(self, final: bool = False) -> list[Event]:
        now = time.monotonic()
        if not self._changed or (now - self._sent < LATEST_EVERY and not final):
            return []
        self._changed, self._sent = False, now
        return [ScriptScalarsLatest(source=self.source, scalars=tuple(
            (folder, tag, step, value) for (folder, tag), (step, value) in self.values.items()))]


def scalar_events(source: str, folder: str, scalars: list[Scalar]) -> list[Event]:
    """ScriptScalars of at most SCALARS_PER_EVENT scalars each."""
    return [ScriptScalars(source=source, path=folder,
                          scalars=tuple(scalars[start:start + SCALARS_PER_EVENT]))
            for start in range(0, len(scalars), SCALARS_PER_EVENT)]


class RecordedScalars:
    """The `scalar` records of the observer inside the program (what it logs to wandb) as
    ScriptScalars and ScriptScalarsLatest events, like TensorBoard's. Their fields were checked
    by records.py; text is cut to printable MAX_TAG characters here again."""

    def __init__(self) -> None:
        self._new: dict[tuple[str, str], list[Scalar]] = {}  # (source, folder) -> scalars
        self._latest: dict[str, LatestScalars] = {}

    def add(self, record: dict[str, Any]) -> None:
        source, tag = record.get("source"), record.get("tag")
        step, value = record.get("step"), record.get("value")
        if not isinstance(source, str) or not isinstance(tag, str) or not tag:
            return
        rank = record.get("rank")
        folder = source if not rank or not isinstance(rank, int) else f"{source}/rank{rank}"
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            step = 0  # wandb named none: the panel and metrics.jsonl want a number
        if not isinstance(value, (int, float)) or isinstance(value, bool) or \
                not math.isfinite(value):
            value = None
        text = "".join(char if char.isprintable() else "?" for char in tag[:MAX_TAG])
        self._new.setdefault((source[:40], folder[:60]), []).append((text, step, value))

    def events(self, final: bool = False) -> list[Event]:
        """The scalars added since the last call, and now and then each tag's latest."""
        new, self._new = self._new, {}
        events: list[Event] = []
        for (source, folder), scalars in new.items():
            latest = self._latest.get(source)
            if latest is None:
                latest = self._latest[source] = LatestScalars(source)
            latest.remember(folder, scalars)
            events.extend(scalar_events(source, folder, scalars))
        for latest in self._latest.values():
            events.extend(latest.event(final))
        return events


class ScriptLogReader:
    """Finds and reads the event files; poll() returns the events since the last poll.
    Not thread-safe: ScriptLogWatcher calls it from its own thread."""

    def __init__(self, root: Path, since: float, exclude: tuple[Path, ...] = (),
                 seen: set[tuple[int, int]] | None = None) -> None:
        self.root = Path(root).absolute()
        self.since = since - MTIME_SLACK
        self.exclude = tuple(Path(path).absolute() for path in exclude)
        self.files: dict[str, _EventFile] = {}
        # (device, inode) of the files looked at, taken or not; shared by a run's attempts, so
        # a restart never reads an earlier attempt's file again
        self.seen: set[tuple[int, int]] = set() if seen is None else seen
        self._walker: Iterator[os.DirEntry] | None = None
        self._hot: set[str] = set()  # folders holding event files: listed at every scan
        self._library: tuple[Any, Callable[[Any], Any]] | None = None
        self._missing_library = False
        self._notes: list[Event] = []
        self.latest = LatestScalars("tensorboard")

    def scan(self) -> None:
        """Look at up to ENTRIES_PER_SCAN more entries of the walk, and the hot folders."""
        for folder in list(self._hot):
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        self._consider(entry)
            except OSError:
                self._hot.discard(folder)
        if self._walker is None:
            self._walker = _walk(self.root, self.exclude)
        for _ in range(ENTRIES_PER_SCAN):
            entry = next(self._walker, None)
            if entry is None:
                self._walker = None  # the next scan starts over: new folders get seen
                break
            self._consider(entry)

    def _consider(self, entry: os.DirEntry) -> None:
        if not entry.name.startswith(TENSORBOARD_PREFIX) or len(self.files) >= MAX_FILES:
            return
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            return
        key = (info.st_dev, info.st_ino)
        if key in self.seen or not stat.S_ISREG(info.st_mode):
            return
        self.seen.add(key)
        if info.st_uid != os.geteuid() or info.st_mtime < self.since:
            return  # another user's, or an earlier run's
        self._follow(entry.path, key)

    def _follow(self, path: str, key: tuple[int, int]) -> None:
        relative = os.path.relpath(path, self.root)
        library = self._load_library(relative)
        if library is None:
            return
        try:
            fd = open_regular(path)
        except OSError:
            return
        try:
            info = os.fstat(fd)
            if (info.st_dev, info.st_ino) != key:  # a folder on the way was swapped meanwhile
                raise OSError("the file changed while it was opened")
            self.files[path] = _EventFile(fd, relative, library[0])
        except Exception as error:
            os.close(fd)
            self._note(f"TensorBoard: cannot read {relative}: {error}", "warning")
            return
        self._hot.add(os.path.dirname(path))
        self._note(f"TensorBoard: reading the program's scalars from {relative} (into "
                   "metrics.jsonl and the panel)")

    def _load_library(self, relative: str) -> tuple[Any, Callable[[Any], Any]] | None:
        if self._library is None and not self._missing_library:
            try:
                self._library = _tensorboard()
            except Exception as error:
                self._missing_library = True
                self._note(f"TensorBoard: the program writes {relative}, but ctui cannot read "
                           f"it ({type(error).__name__}: {error}); `pip install tensorboard` "
                           "in ctui's environment shows its scalars", "warning")
        return self._library

    def _note(self, message: str, level: str = "info") -> None:
        self._notes.append(LogLine(level=level, message=message))

    def poll(self, final: bool = False) -> list[Event]:
        """New scalars of every followed file, in ScriptScalars events of at most
        SCALARS_PER_EVENT each, and every LATEST_EVERY seconds (and when `final`) the latest
        value of each tag; a file that cannot be read any more is dropped, with a note."""
        events: list[Event] = []
        make_ndarray = self._library[1] if self._library is not None else None
        for path, file in list(self.files.items()):
            try:
                scalars = file.read(make_ndarray)
            except Exception as error:  # a damaged or crafted file: stop reading it
                file.close()
                del self.files[path]
                self._note(f"TensorBoard: stopped reading {file.relative}: "
                           f"{type(error).__name__}: {str(error)[:200]}", "warning")
                continue
            folder = os.path.dirname(file.relative) or "."
            self.latest.remember(folder, scalars)
            events.extend(scalar_events("tensorboard", folder, scalars))
        notes, self._notes = self._notes, []
        return notes + events + self.latest.event(final)

    def close(self) -> None:
        for file in self.files.values():
            file.close()
        self.files.clear()


class ScriptLogWatcher:
    """A ScriptLogReader on a thread of its own, reporting through `emit` (toolong's watcher:
    its own Thread, an exit Event, close())."""

    def __init__(self, root: Path, since: float, emit: Callable[[Event], None], *,
                 exclude: tuple[Path, ...] = (), seen: set[tuple[int, int]] | None = None,
                 poll_every: float = POLL_EVERY, scan_every: float = SCAN_EVERY) -> None:
        self.reader = ScriptLogReader(root, since, exclude, seen)
        self.emit = emit
        self.poll_every = poll_every
        self.scan_every = scan_every
        self._exit = threading.Event()
        self._lock = threading.Lock()  # one poll at a time: the thread's, or close()'s last
        self._thread = threading.Thread(target=self._run, name="script-logs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        next_scan = 0.0
        while not self._exit.is_set():
            now = time.monotonic()
            self._tick(scan=now >= next_scan)
            if now >= next_scan:
                next_scan = now + self.scan_every
            self._exit.wait(self.poll_every)

    def _tick(self, scan: bool, final: bool = False) -> None:
        with self._lock:
            try:
                if scan:
                    self.reader.scan()
                events = self.reader.poll(final)
            except Exception as error:  # never the supervision's problem
                events = [LogLine(level="warning", message=f"reading the program's TensorBoard "
                                  f"files failed: {error}")]
                self._exit.set()
        for event in events:
            self.emit(event)

    def close(self) -> None:
        """Stop, after a last scan and read: what the program wrote before it ended counts."""
        if self._exit.is_set() and not self._thread.is_alive():
            return
        self._exit.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        self._tick(scan=True, final=True)
        with self._lock:
            self.reader.close()
