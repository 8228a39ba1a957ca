"""The observer inside a supervised Python program: times each pass over each DataLoader and
applies live num_workers / batch_size, without any edit to the program.

boot/sitecustomize.py loads this file by path (the program's Python may not have ctui
installed) once the program imports torch.utils.data.dataloader, and calls install(). It
patches DataLoader.__init__ (to remember where a loader was made: `train.py:57`) and
DataLoader.__iter__ (to start a pass and move the returned iterator into a subclass of its own
class whose __next__ adds two perf_counter reads). Nothing here draws random numbers, reorders
samples or holds a batch, so the program computes exactly what it computes bare.

A pass ends when its iterator is exhausted (complete), dropped, replaced by a new pass of the
same loader, or at exit (incomplete). One `pass_started` record is appended when iter() starts
it and one `pass` record when it ends, never one per batch (the supervisor tells a training
epoch's evaluation from the starts of the passes around it).

Live settings (settings.json, written by the supervisor) are read at the start of a pass and
apply from that pass on; inside a pass they are looked at every CHECK_EVERY seconds (one float
comparison per batch otherwise) and applied at once where the loader can continue the pass's
order exactly (resume_pass.py: a map-style dataset with in-order batches; batch_size also needs
torch's BatchSampler without drop_last), else left to its next pass with a `deferred` record.
They are refused, with a record naming the loader and why, for an iterable dataset
(its own __iter__ splits the work among workers), for batch_size with a custom batch sampler or
batch_size=None, and for batch_size when several ranks train (each rank would see the change at
its own moment, and ranks with different batch counts hang in their collectives).

Once the program imports wandb (wandb.sdk.wandb_run), install_wandb() wraps Run.log, which
wandb.log reaches too: ScalarTap keeps the latest value of each number logged and a thread of
its own writes them as `scalar` records a few times a second and at exit. The original call
runs first, with the same arguments, and what it returns or raises is the program's; a failure
of the tap's own is one `disabled` record and the tap stops. Reading wandb's own `.wandb` files
instead is not possible live (see engine/program/script_logs.py).

Standard library only at import; torch and wandb are only ever reached through the module
passed in, or, for a number logged to wandb, through the program's own sys.modules.
"""

from __future__ import annotations

import atexit
import functools
import json
import math
import os
import sys
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from time import perf_counter
from typing import Any

try:
    from ..safefs import check_private_dir, open_append, read_bounded
    from .resume_pass import (
        CHECK_EVERY,
        Recorder,
        iterate_recorded,
        make_iterator,
        mid_pass_reason,
        rebatched,
        shut_down,
    )
except ImportError:  # loaded by boot/sitecustomize.py, outside the ctui package
    from _ctui_observe_resume_pass import (  # type: ignore[no-redef]
        CHECK_EVERY,
        Recorder,
        iterate_recorded,
        make_iterator,
        mid_pass_reason,
        rebatched,
        shut_down,
    )
    from _ctui_observe_safefs import (  # type: ignore[no-redef]
        check_private_dir,
        open_append,
        read_bounded,
    )

ENV_DIR = "CTUI_OBSERVE_DIR"
SETTINGS_FILE = "settings.json"
RECORDS_PREFIX = "passes-"
RECORDS_SUFFIX = ".jsonl"
MAX_NUM_WORKERS = 1024
MAX_BATCH_SIZE = 1 << 24
_PASS_ENDS = ("exhausted", "abandoned", "restarted", "exit")

_SUBCLASSES: dict[type, type] = {}


class _Pass:
    """One pass over a loader: counters bumped by the iterator's __next__ (the hot path)."""

    __slots__ = ("loader", "index", "wall", "start", "last", "wait", "batches", "samples",
                 "done", "batch_size", "num_workers", "cap", "plain", "tensor", "recorder",
                 "replacement", "base", "check_at")

    def __init__(self, loader: _Logical, index: int, start: float, batch_size: int | None,
                 num_workers: int, cap: int | None, plain: bool, tensor: type) -> None:
        self.loader = loader
        self.index = index
        self.wall = time.time()
        self.start = self.last = start
        self.wait = 0.0
        self.batches = 0
        self.samples = 0
        self.done = False
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.cap = cap  # no batch holds more samples than this (an exact BatchSampler's size)
        self.plain = plain  # batches come from default_collate
        self.tensor = tensor
        # A pass that can change inside: its Recorder, the iterator continuing it after a
        # change, `batches` at that change, and when next to look at the live settings.
        self.recorder: Recorder | None = None
        self.replacement: Any = None
        self.base = 0
        self.check_at = float("inf")

    def count(self, batch: Any) -> int:
        """Samples in a batch: the leading size of its first tensor (batches may be tuples,
        lists, dicts, nested), else the loader's batch size."""
        size = _leading_size(batch, self.tensor, self.plain)
        if size is None:
            return self.batch_size or 1
        return min(size, self.cap) if self.cap else size


def _leading_size(batch: Any, tensor: type, plain: bool) -> int | None:
    for _ in range(8):
        kind = type(batch)  # exact types first: an ABC isinstance costs more than the rest
        if kind is tensor or isinstance(batch, tensor):
            shape = batch.shape
            return shape[0] if shape else None
        if kind is list or kind is tuple or (kind is not dict and isinstance(batch, (list, tuple))):
            if not batch:
                return None
            first = batch[0]
            # default_collate turns a batch of strings or numbers into a list of them; a custom
            # collate_fn that returns a list of samples has non-tensors first
            if isinstance(first, (str, bytes, int, float)) or (
                    not plain and kind is list and not isinstance(first, tensor)):
                return len(batch)
            batch = first
        elif kind is dict or isinstance(batch, Mapping):
            if not batch:
                return None
            batch = next(iter(batch.values()))
        else:
            return None
    return None


class _Logical:
    """A loader as the program sees it: made at one place, perhaps a new object each epoch."""

    def __init__(self, label: str, dataset: str) -> None:
        self.label = label
        self.dataset = dataset
        self.owner: weakref.ref | None = None
        self.passes = 0
        self.current: _Pass | None = None
        self.announced: tuple | None = None
        self.refused: set[tuple[str, int]] = set()


class _Tracked:
    __slots__ = ("ref", "site", "logical", "size", "recorder")

    def __init__(self, ref: weakref.ref, site: str) -> None:
        self.ref = ref
        self.site = site
        self.logical: _Logical | None = None
        self.size: int | None = None  # len(dataset), read only when settings need a target
        self.recorder: Recorder | None = None


class Observer:
    """The process's observer: owns the patches, the loaders seen, and the records file."""

    def __init__(self, module: Any, folder: str) -> None:
        self.module = module
        self.folder = folder
        self.pid = os.getpid()
        self.file = records_file(folder)
        self.disabled = ""
        self.lock = threading.RLock()
        self.tracked: dict[int, _Tracked] = {}
        self.sites: dict[str, list[_Logical]] = {}
        self.settings: dict[str, Any] = {}
        self.settings_stamp: tuple | None = None
        torch_utils = module._utils
        self.worker_state = torch_utils.worker
        self.default_collate = torch_utils.collate.default_collate
        self.batch_sampler = module.BatchSampler
        self.iterable_kind = module._DatasetKind.Iterable
        self.tensor = module.torch.Tensor
        self.original: dict[str, Any] = {}

    # --- patches -------------------------------------------------------------------------

    def patch(self) -> None:
        loader_class = self.module.DataLoader
        if getattr(loader_class, "_ctui_observer", None) is not None:
            return  # patched already (a second copy of this file)
        self.original = {"__init__": loader_class.__init__, "__iter__": loader_class.__iter__}
        original_init, original_iter = self.original["__init__"], self.original["__iter__"]
        observer = self

        @functools.wraps(original_init)
        def __init__(loader, *args, **kwargs):
            original_init(loader, *args, **kwargs)
            if not observer.disabled:
                try:
                    observer.track(loader, _construction_site(loader, sys._getframe(1)))
                except Exception as error:  # never the program's problem
                    observer.disable("recording a new DataLoader", error)

        @functools.wraps(original_iter)
        def __iter__(loader):
            if observer.disabled or observer.worker_state._worker_info is not None:
                return original_iter(loader)
            start = perf_counter()
            try:
                current = observer.begin_pass(loader, start)
                recorder = observer.recorder_for(loader)
            except Exception as error:
                observer.disable("starting a pass", error)
                return original_iter(loader)
            if recorder is None:
                iterator = original_iter(loader)
            else:  # the program's own errors pass through as they are
                iterator = iterate_recorded(loader, recorder, original_iter)
            try:
                observer.attach(iterator, current, start, recorder)
            except Exception as error:
                observer.disable("watching a pass", error)
            return iterator

        loader_class.__init__ = __init__
        loader_class.__iter__ = __iter__
        loader_class._ctui_observer = self
        atexit.register(self.at_exit)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self.forked)

    def unpatch(self) -> None:
        """Restore DataLoader (for tests); records already written stay."""
        loader_class = self.module.DataLoader
        if getattr(loader_class, "_ctui_observer", None) is self:
            loader_class.__init__ = self.original["__init__"]
            loader_class.__iter__ = self.original["__iter__"]
            del loader_class._ctui_observer
        self.disabled = self.disabled or "uninstalled"
        atexit.unregister(self.at_exit)
        self.close_file()

    # --- loaders and passes --------------------------------------------------------------

    def track(self, loader: Any, site: str) -> _Tracked:
        key = id(loader)

        def forget(ref: weakref.ref, key: int = key) -> None:
            entry = self.tracked.get(key)
            if entry is not None and entry.ref is ref:
                del self.tracked[key]

        entry = _Tracked(weakref.ref(loader, forget), site)
        with self.lock:
            self.tracked[key] = entry
        return entry

    def logical_for(self, loader: Any) -> _Logical:
        entry = self.tracked.get(id(loader))
        if entry is None or entry.ref() is not loader:  # made before install
            entry = self.track(loader, f"<{type(loader.dataset).__name__} loader>")
        if entry.logical is not None:
            return entry.logical
        dataset = type(loader.dataset).__name__
        with self.lock:
            same_site = self.sites.setdefault(entry.site, [])
            for logical in same_site:  # a new object for the same loader (made each epoch)
                gone = logical.owner is None or logical.owner() is None
                if gone and logical.dataset == dataset:
                    break
            else:
                label = entry.site if not same_site else f"{entry.site}#{len(same_site) + 1}"
                logical = _Logical(label, dataset)
                same_site.append(logical)
            logical.owner = entry.ref
            entry.logical = logical
        return logical

    def batch_size(self, loader: Any) -> int | None:
        """The loader's batch size, also when given as torch's own BatchSampler."""
        batch_sampler = loader.batch_sampler
        if loader.batch_size is None and type(batch_sampler) is self.batch_sampler:
            return batch_sampler.batch_size
        return loader.batch_size

    def begin_pass(self, loader: Any, start: float) -> _Pass:
        logical = self.logical_for(loader)
        self.apply_settings(loader, logical)
        with self.lock:
            previous = logical.current
            if previous is not None and not previous.done:
                self.end_pass(previous, "restarted")
            logical.passes += 1
            batch_size = self.batch_size(loader)
            exact = type(loader.batch_sampler) is self.batch_sampler
            current = _Pass(logical, logical.passes, start, batch_size,
                            loader.num_workers, batch_size if exact else None,
                            loader.collate_fn is self.default_collate, self.tensor)
            logical.current = current
            self.announce(loader, logical)
            self.write({"kind": "pass_started", "loader": logical.label, "pass": current.index,
                        "started": round(current.wall, 6)})
        return current

    def attach(self, iterator: Any, current: _Pass, start: float,
               recorder: Recorder | None = None) -> None:
        if recorder is not None and getattr(iterator, "_index_sampler", None) is recorder:
            current.recorder, recorder.current = recorder, current
            current.check_at = start + CHECK_EVERY
        cls = type(iterator)
        observed = cls if cls in _SUBCLASSES.values() else _observed_class(cls)
        first = "_ctui_pass" not in iterator.__dict__
        iterator._ctui_pass = current
        if cls is not observed:
            iterator.__class__ = observed
        if first:  # the same iterator serves every pass of a persistent_workers loader
            box = iterator._ctui_box = [current]
            weakref.finalize(iterator, self.dropped, box).atexit = False  # at_exit ends it
        else:
            iterator._ctui_box[0] = current
        current.wait += perf_counter() - start  # starting workers is waiting for data too

    def dropped(self, box: list) -> None:
        current = box[0]
        if os.getpid() != self.pid:
            return  # a forked worker's copy: nothing of it is this process's to end
        replacement, current.replacement = current.replacement, None
        if replacement is not None and not getattr(replacement, "_persistent_workers", False):
            shut_down(replacement)  # the program let go of the pass: its workers go too
        if not current.done and not self.disabled:
            try:
                with self.lock:
                    self.end_pass(current, "abandoned")
            except Exception as error:
                self.disable("ending a pass", error)

    def end_pass(self, current: _Pass, how: str) -> None:
        """Close a pass and append its record: seconds from iter() to the end of the last
        __next__ (or to now, when it ran out or was dropped)."""
        if current.done:
            return
        current.done = True
        end = perf_counter() if how in ("exhausted", "abandoned") else current.last
        seconds = max(end - current.start, 0.0)
        current.wait = min(current.wait, seconds)
        self.write({
            "kind": "pass", "loader": current.loader.label, "pass": current.index,
            "started": round(current.wall, 6), "seconds": round(seconds, 6),
            "wait_seconds": round(current.wait, 6), "batches": current.batches,
            "samples": current.samples,
            "samples_per_second": round(current.samples / seconds, 3) if seconds > 0 else 0.0,
            "data_wait_fraction": round(current.wait / seconds, 6) if seconds > 0 else 0.0,
            "batch_size": current.batch_size, "num_workers": current.num_workers,
            "complete": how == "exhausted", "ended": how,
        })

    def announce(self, loader: Any, logical: _Logical) -> None:
        why = {name: self.why_not(loader, name) for name in ("num_workers", "batch_size")}
        batch_size = self.batch_size(loader)
        state = (batch_size, loader.num_workers, tuple(why.values()))
        if state == logical.announced:
            return
        logical.announced = state
        self.write({
            "kind": "loader", "loader": logical.label, "dataset": logical.dataset,
            "batch_size": batch_size, "num_workers": loader.num_workers,
            "persistent_workers": bool(loader.persistent_workers),
            "can_change": {name: not reason for name, reason in why.items()},
            "why_not": {name: reason for name, reason in why.items() if reason},
        })

    # --- live settings -------------------------------------------------------------------

    def read_settings(self) -> dict[str, Any]:
        path = os.path.join(self.folder, SETTINGS_FILE)
        try:
            info = os.lstat(path)
            stamp: tuple | None = (info.st_ino, info.st_mtime_ns, info.st_size)
        except OSError:
            stamp = None
        if stamp == self.settings_stamp:
            return self.settings
        self.settings_stamp, self.settings = stamp, {}
        if stamp is None:
            return self.settings
        try:
            data = json.loads(read_bounded(path, 4096))
        except (OSError, ValueError) as error:
            self.write({"kind": "refused", "loader": "", "setting": SETTINGS_FILE, "value": 0,
                        "reason": f"unreadable: {error}"})
            return self.settings
        if isinstance(data, dict):
            for name, high in (("num_workers", MAX_NUM_WORKERS), ("batch_size", MAX_BATCH_SIZE)):
                value = data.get(name)
                low = 0 if name == "num_workers" else 1
                if type(value) is int and low <= value <= high:
                    self.settings[name] = value
            if isinstance(data.get("loader"), str):
                self.settings["loader"] = data["loader"]
        return self.settings

    def is_target(self, loader: Any, logical: _Logical, settings: dict[str, Any]) -> bool:
        """settings.json names a loader, or else means the live loader of the largest dataset
        (the training set, in nearly every script)."""
        if "loader" in settings:
            return settings["loader"] == logical.label
        best, best_size = None, -1
        with self.lock:
            entries = list(self.tracked.values())
        for entry in entries:
            candidate = entry.ref()
            if candidate is None:
                continue
            if entry.size is None:
                try:
                    entry.size = len(candidate.dataset)
                except Exception:
                    entry.size = 0
            if entry.size > best_size:
                best, best_size = candidate, entry.size
        return best is None or best is loader

    def apply_settings(self, loader: Any, logical: _Logical) -> None:
        settings = self.read_settings()
        if not settings or not self.is_target(loader, logical, settings):
            return
        for name in ("num_workers", "batch_size"):
            value = settings.get(name)
            previous = loader.num_workers if name == "num_workers" else self.batch_size(loader)
            if value is None or value == previous:
                continue
            reason = self.why_not(loader, name)
            if reason:
                if (name, value) not in logical.refused:
                    logical.refused.add((name, value))
                    self.write({"kind": "refused", "loader": logical.label, "setting": name,
                                "value": value, "reason": reason})
                continue
            (_set_num_workers if name == "num_workers" else _set_batch_size)(loader, value)
            self.write({"kind": "applied", "loader": logical.label, "setting": name,
                        "value": value, "previous": previous, "from_pass": logical.passes + 1})

    def why_not(self, loader: Any, name: str) -> str:
        """'' when `name` can change on this loader from its next pass, else why not."""
        if loader._dataset_kind == self.iterable_kind:
            return (f"{type(loader.dataset).__name__} is an iterable dataset: its own __iter__ "
                    "decides what each worker reads, so a change could repeat or skip samples")
        if name == "num_workers":
            return ""
        if loader.batch_sampler is None:
            return "batch_size=None: this loader does not batch"
        if type(loader.batch_sampler) is not self.batch_sampler:
            return (f"custom batch sampler {type(loader.batch_sampler).__name__}: it decides the "
                    "batches, so their size is its to change")
        world = _env_int("WORLD_SIZE", 1)
        if world > 1:
            return (f"{world} ranks train: each would change at its own pass and ranks with "
                    "different batch counts hang; set the batch size in the script")
        return ""

    # --- live settings inside a pass (resume_pass.py) -------------------------------------

    def recorder_for(self, loader: Any) -> Recorder | None:
        """The loader's Recorder, made once; None when no setting can change inside its passes."""
        entry = self.tracked.get(id(loader))
        if entry is None or entry.ref() is not loader:
            return None
        if entry.recorder is None or entry.recorder.batch_sampler is not loader.batch_sampler:
            if mid_pass_reason(loader, "num_workers", self.batch_sampler, self.iterable_kind):
                return None
            entry.recorder = Recorder(loader.batch_sampler)
        return entry.recorder

    def live_check(self, iterator: Any, current: _Pass, now: float) -> None:
        """Inside a pass, every CHECK_EVERY seconds: settings asked for since it started are
        applied now where the loader allows, the others are left to its next pass."""
        current.check_at = now + CHECK_EVERY
        logical = current.loader
        loader = logical.owner() if logical.owner is not None else None
        if loader is None or current.recorder is None or logical.current is not current:
            current.check_at = float("inf")
            return
        settings = self.read_settings()
        if not settings or not self.is_target(loader, logical, settings):
            return
        changes: dict[str, int] = {}
        for name in ("num_workers", "batch_size"):
            value = settings.get(name)
            if value is None or value == getattr(current, name) or self.why_not(loader, name):
                continue  # nothing to do, or refused with its reason at the next pass
            reason = mid_pass_reason(loader, name, self.batch_sampler, self.iterable_kind)
            if not reason:
                changes[name] = value
            elif ("deferred", name, value) not in logical.refused:
                logical.refused.add(("deferred", name, value))
                self.write({"kind": "deferred", "loader": logical.label, "setting": name,
                            "value": value, "reason": reason})
        if changes:
            self.switch(iterator, current, loader, changes)

    def switch(self, iterator: Any, current: _Pass, loader: Any, changes: dict[str, int]) -> None:
        """Continue the pass in a new iterator with the new settings (see resume_pass.py)."""
        recorder = current.recorder
        source = recorder.remaining()
        if "batch_size" in changes:  # the batch sampler itself changes at the next pass
            source = rebatched(source, changes["batch_size"])
        before = (loader.num_workers, loader.prefetch_factor)
        if "num_workers" in changes:
            _worker_settings(loader, changes["num_workers"])
        old = current.replacement if current.replacement is not None else iterator
        # From here the recorder counts the new iterator's batches: its prefetch draws them.
        base, current.base = current.base, current.batches
        try:
            new = make_iterator(loader, recorder, source, self.module.torch)
        except Exception as error:  # e.g. workers that cannot start: the pass goes on as it was
            loader.num_workers, loader.prefetch_factor = before
            current.base = base
            current.recorder, current.check_at = None, float("inf")
            for name, value in changes.items():
                self.write({"kind": "refused", "loader": current.loader.label, "setting": name,
                            "value": value, "reason": f"could not continue the pass with it: "
                            f"{type(error).__name__}: {error}"[:900]})
            return
        shut_down(old)
        if loader.__dict__.get("_iterator") is old:  # persistent workers: the new ones persist
            loader._iterator = new if loader.num_workers > 0 else None
        current.replacement = new
        for name, value in changes.items():
            self.write({"kind": "switched", "loader": current.loader.label, "setting": name,
                        "value": value, "previous": getattr(current, name),
                        "pass": current.index, "batch": current.batches})
            setattr(current, name, value)
        if "batch_size" in changes and current.cap is not None:
            current.cap = changes["batch_size"]

    # --- records -------------------------------------------------------------------------

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(record)

    def disable(self, doing: str, error: BaseException) -> None:
        if self.disabled:
            return
        self.disabled = f"observer disabled while {doing}: {type(error).__name__}: {error}"[:500]
        try:
            self.write({"kind": "disabled", "reason": self.disabled})
        except Exception:
            pass

    def close_file(self) -> None:
        self.file.close()

    def at_exit(self) -> None:
        if self.disabled or os.getpid() != self.pid:
            return
        try:
            with self.lock:
                for logicals in self.sites.values():
                    for logical in logicals:
                        if logical.current is not None and not logical.current.done:
                            self.end_pass(logical.current, "exit")
        except Exception:
            pass

    def forked(self) -> None:
        """In a forked child (a DataLoader worker, or a rank started by fork): a new process
        with its own file and no passes of the parent's."""
        self.pid = os.getpid()  # (the records file forgets the parent's by itself)
        self.lock = threading.RLock()
        for logicals in self.sites.values():
            for logical in logicals:
                logical.current = None


class RecordsFile:
    """This process's records file, `passes-<rank>-<pid>.jsonl`, shared by the DataLoader
    observer and the wandb tap: opened at the first record (a `process` line first), appended
    one line per write(2) (O_APPEND keeps lines whole), never written by a forked child."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.pid = os.getpid()
        self.fd: int | None = None
        self.lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        if os.getpid() != self.pid:
            return
        with self.lock:
            rank = _rank()
            if self.fd is None:
                path = os.path.join(self.folder, f"{RECORDS_PREFIX}{rank}-{self.pid}"
                                    f"{RECORDS_SUFFIX}")
                self.fd = open_append(path)
                self._write_line({"kind": "process", "world_size": _env_int("WORLD_SIZE", 1),
                                  "argv0": os.path.basename(sys.argv[0])[:200] if sys.argv
                                  else ""}, rank)
            self._write_line(record, rank)

    def _write_line(self, record: dict[str, Any], rank: int) -> None:
        line = {**record, "time": round(time.time(), 6), "pid": self.pid, "rank": rank}
        os.write(self.fd, (json.dumps(line, separators=(",", ":")) + "\n").encode())

    def close(self) -> None:
        with self.lock:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None

    def forked(self) -> None:
        """In a forked child: a file of its own, opened at its first record."""
        self.pid = os.getpid()
        self.fd = None  # the parent's descriptor stays the parent's
        self.lock = threading.Lock()


_FILE: RecordsFile | None = None
_FORK_HANDLER = False


def records_file(folder: str) -> RecordsFile:
    """The process's records file in `folder` (one, whoever writes to it)."""
    global _FILE, _FORK_HANDLER
    if _FILE is None or _FILE.folder != folder:
        _FILE = RecordsFile(folder)
    if not _FORK_HANDLER and hasattr(os, "register_at_fork"):
        _FORK_HANDLER = True
        os.register_at_fork(after_in_child=_file_forked)
    return _FILE


def _file_forked() -> None:
    if _FILE is not None:
        _FILE.forked()


# --- what the program logs to wandb ------------------------------------------------------------

SCALARS_SOURCE = "wandb"
SCALARS_OFF = "wandb scalars off"  # how a `disabled` record of the tap begins (loaders.py)
SCALARS_EVERY = 0.5  # seconds between two writes of the latest values
MAX_SCALAR_TAGS = 200  # tags followed; the first seen stay, as a script's main figures come first
MAX_KEYS_PER_CALL = 256  # entries of one logged dict looked at, nested ones included
MAX_NESTING = 4
MAX_TAG = 200
_SKIP = object()


class ScalarTap:
    """wandb's Run.log, watched. After a call returns normally, the numbers of the dict it
    logged (nested dicts flattened with '/') are kept, the latest per tag; a thread of the
    tap's own writes the tags changed since its last write as `scalar` records at most every
    SCALARS_EVERY seconds, and the rest goes at exit. So the call itself does no I/O, and a
    script logging at 10 kHz writes no more than one that logs twice a second."""

    def __init__(self, file: RecordsFile, source: str = SCALARS_SOURCE) -> None:
        self.file = file
        self.source = source
        self.pid = os.getpid()
        self.disabled = ""
        self.latest: dict[str, tuple[int | None, float | None]] = {}
        self.changed: dict[str, None] = {}  # tags changed since the last write, in order
        self.lock = threading.Lock()  # latest and changed: the program's threads and ours
        self.writing = threading.Lock()  # one write of the latest at a time, in order
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None
        self.owner: Any = None
        self.original: Any = None

    def patch(self, run_class: Any) -> None:
        if getattr(run_class, "_ctui_tap", None) is not None:
            return  # patched already (a second copy of this file)
        original = run_class.log
        tap = self

        @functools.wraps(original)
        def log(run, *args, **kwargs):
            step = None
            if not tap.disabled:
                try:  # the step wandb files these values under when the call names none
                    step = vars(run).get("_local_step")  # a plain read: no code of wandb's runs
                except Exception:
                    pass
            result = original(run, *args, **kwargs)  # the program's call: its errors its own
            if not tap.disabled:
                try:
                    tap.took(args, kwargs, step)
                except Exception as error:  # never the program's problem
                    tap.disable("reading a wandb.log call", error)
            return result

        self.owner, self.original = run_class, original
        run_class.log = log
        run_class._ctui_tap = self
        atexit.register(self.at_exit)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self.forked)

    def unpatch(self) -> None:
        """Restore Run.log (for tests); what was kept is written first."""
        self.at_exit()
        if self.owner is not None and getattr(self.owner, "_ctui_tap", None) is self:
            self.owner.log = self.original
            del self.owner._ctui_tap
        self.disabled = self.disabled or "uninstalled"
        atexit.unregister(self.at_exit)
        self.wake.set()

    def took(self, args: tuple, kwargs: dict[str, Any], run_step: Any) -> None:
        """Keep the numbers of one wandb.log(data, step=None, commit=None) call."""
        data = args[0] if args else kwargs.get("data")
        if not isinstance(data, Mapping):
            return
        step = args[1] if len(args) > 1 else kwargs.get("step")
        if type(step) is not int or step < 0:
            step = run_step if type(run_step) is int and run_step >= 0 else None
        numbers = _numbers(data)
        if not numbers:
            return
        with self.lock:
            latest, changed, wake = self.latest, self.changed, not self.changed
            for tag, value in numbers:
                if tag in latest or len(latest) < MAX_SCALAR_TAGS:
                    latest[tag] = (step, value)
                    changed[tag] = None
            if not (wake and changed):
                return
            if self.thread is None:  # started at the first values: wandb runs threads already
                self.thread = threading.Thread(target=self._run, name="ctui-wandb-scalars",
                                               daemon=True)
                self.thread.start()
        self.wake.set()

    def _run(self) -> None:
        while not self.disabled:
            self.wake.wait()
            time.sleep(SCALARS_EVERY)  # what else comes meanwhile goes in the same write
            if self.disabled:
                break
            try:
                self.flush()
            except Exception as error:
                self.disable("writing wandb scalars", error)

    def flush(self) -> None:
        """Write the tags changed since the last write (the thread, at exit)."""
        if os.getpid() != self.pid:
            return
        with self.writing:
            with self.lock:
                self.wake.clear()  # under the lock: a value kept after this wakes it again
                tags, self.changed = self.changed, {}
                values = [(tag, self.latest[tag]) for tag in tags]
            for tag, (step, value) in values:
                self.file.write({"kind": "scalar", "source": self.source, "tag": tag,
                                 "step": step, "value": value})

    def disable(self, doing: str, error: BaseException) -> None:
        if self.disabled:
            return
        self.disabled = f"{SCALARS_OFF} while {doing}: {type(error).__name__}: {error}"[:500]
        self.wake.set()  # the thread ends
        try:
            self.file.write({"kind": "disabled", "reason": self.disabled})
        except Exception:
            pass

    def at_exit(self) -> None:
        if self.disabled or os.getpid() != self.pid:
            return
        try:
            self.flush()
        except Exception:
            pass

    def forked(self) -> None:
        """In a forked child: its own values and thread, none of the parent's."""
        self.pid = os.getpid()
        self.latest, self.changed = {}, {}
        self.lock, self.writing = threading.Lock(), threading.Lock()
        self.wake, self.thread = threading.Event(), None


def _numbers(data: Mapping) -> list[tuple[str, float | None]]:
    """(tag, value) for each number in a logged dict, nested dicts' tags joined with '/'; a
    value that is not finite is None (as TensorBoard's in script_logs.py). Bools, strings, media,
    histograms, arrays and tensors of more than one value are left out."""
    found: list[tuple[str, float | None]] = []
    stack: list[tuple[str, Mapping, int]] = [("", data, 0)]
    budget = MAX_KEYS_PER_CALL
    while stack and budget > 0:
        prefix, mapping, depth = stack.pop()
        for key, value in mapping.items():
            budget -= 1
            if budget < 0:
                break
            if type(key) is not str:
                continue
            kind = type(value)
            if kind is float:
                number = value if value - value == 0 else None  # inf - inf and nan are nan
            elif kind is int:
                number = float(value) if -1e300 < value < 1e300 else None
            elif kind is bool or kind is str:
                continue
            elif isinstance(value, Mapping):
                if depth + 1 < MAX_NESTING:
                    stack.append((f"{prefix}{key}/", value, depth + 1))
                continue
            else:
                number = _other_number(value)
                if number is _SKIP:
                    continue
            found.append(((prefix + key)[:MAX_TAG], number))
    return found


def _other_number(value: Any) -> Any:
    """A numpy or torch scalar (or 0-d array) as a float (None when not finite), else _SKIP.
    Only modules the program has imported are looked at; nothing is imported here."""
    try:
        numpy = sys.modules.get("numpy")
        if numpy is not None and isinstance(value, (numpy.generic, numpy.ndarray)):
            if value.ndim != 0 or value.dtype.kind not in "iuf":
                return _SKIP
            number = float(value)
        else:
            torch = sys.modules.get("torch")
            if torch is not None and isinstance(value, torch.Tensor):
                # wandb has just copied it to the host in the same call; this reads that value
                if value.dim() != 0 or value.dtype.is_complex or value.dtype is torch.bool:
                    return _SKIP
                number = float(value.item())
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                number = float(value)
            else:
                return _SKIP
    except Exception:  # a value that will not say what it is: left out
        return _SKIP
    return number if math.isfinite(number) else None


def _observed_class(cls: type) -> type:
    """A subclass of a DataLoader iterator class whose __next__ also times the call."""
    observed = _SUBCLASSES.get(cls)
    if observed is not None:
        return observed
    base_next = cls.__next__

    def __next__(self):
        current = self._ctui_pass
        replacement = current.replacement  # the pass continues there after a live change
        if current.done:
            return base_next(self) if replacement is None else next(replacement)
        began = perf_counter()
        try:
            batch = base_next(self) if replacement is None else next(replacement)
        except StopIteration:
            current.wait += perf_counter() - began
            _exhausted(current)
            raise
        now = perf_counter()
        current.wait += now - began
        current.last = now
        current.batches += 1
        try:
            current.samples += current.count(batch)
        except Exception:
            current.samples += current.batch_size or 1
        if now >= current.check_at:
            _live_check(self, current, now)
        return batch

    observed = type(cls.__name__, (cls,), {"__next__": __next__, "__module__": cls.__module__,
                                            "__qualname__": cls.__qualname__})
    _SUBCLASSES[cls] = observed
    return observed


_OBSERVER: Observer | None = None


def _exhausted(current: _Pass) -> None:
    observer = _OBSERVER
    if observer is None or observer.disabled or os.getpid() != observer.pid:
        current.done = True
        return
    try:
        with observer.lock:
            observer.end_pass(current, "exhausted")
    except Exception as error:
        observer.disable("ending a pass", error)


def _live_check(iterator: Any, current: _Pass, now: float) -> None:
    observer = _OBSERVER
    if observer is None or observer.disabled or os.getpid() != observer.pid:
        current.check_at = float("inf")
        return
    try:
        with observer.lock:
            observer.live_check(iterator, current, now)
    except Exception as error:
        current.check_at = float("inf")
        observer.disable("changing a pass's settings", error)
    current.wait += perf_counter() - now  # starting new workers is waiting for data too


def _construction_site(loader: Any, frame: Any) -> str:
    """`file.py:line` of the code that made the loader, past DataLoader subclasses' __init__."""
    while frame is not None and frame.f_code.co_name == "__init__" and \
            frame.f_locals.get("self") is loader:
        frame = frame.f_back
    if frame is None:
        return f"<{type(loader).__name__}>"
    path = frame.f_code.co_filename
    try:
        relative = os.path.relpath(path)
        shown = relative if not relative.startswith("..") else os.path.basename(path)
    except ValueError:
        shown = os.path.basename(path)
    return f"{shown}:{frame.f_lineno}"


def _set_num_workers(loader: Any, value: int) -> None:
    cached = loader.__dict__.get("_iterator")
    if cached is not None:  # persistent workers: stop them so the next pass starts `value`
        shutdown = getattr(cached, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        loader._iterator = None
    _worker_settings(loader, value)


def _worker_settings(loader: Any, value: int) -> None:
    loader.num_workers = value
    if value == 0:
        loader.prefetch_factor = None
    elif loader.prefetch_factor is None:
        loader.prefetch_factor = 2  # DataLoader's own default with workers


def _set_batch_size(loader: Any, value: int) -> None:
    loader.batch_sampler.batch_size = value
    if loader.batch_size is not None:  # None when the script passed its own BatchSampler
        object.__setattr__(loader, "batch_size", value)  # DataLoader guards it after __init__


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _rank() -> int:
    if "RANK" in os.environ:
        return max(_env_int("RANK", 0), 0)
    distributed = sys.modules.get("torch.distributed")  # mp.spawn ranks set no RANK
    try:
        if distributed is not None and distributed.is_available() and \
                distributed.is_initialized():
            return int(distributed.get_rank())
    except Exception:
        pass
    return 0


def install(module: Any, folder: str) -> Observer | None:
    """Observe every DataLoader of `module` (torch.utils.data.dataloader) in this process,
    writing records into `folder`; None (and one line on stderr) when the folder is unsafe."""
    global _OBSERVER
    try:
        check_private_dir(Path(folder), "observe folder")
    except OSError as error:
        sys.stderr.write(f"ctui: not observing DataLoaders: {error}\n")
        return None
    observer = Observer(module, folder)
    observer.patch()
    if getattr(module.DataLoader, "_ctui_observer", None) is observer:
        _OBSERVER = observer
        return observer
    return None


def install_wandb(module: Any, folder: str) -> ScalarTap | None:
    """Record the numbers the program logs through `module.Run.log` (wandb.sdk.wandb_run,
    which wandb.log reaches too) into `folder`; None when the folder is unsafe."""
    global _TAP
    try:
        check_private_dir(Path(folder), "observe folder")
    except OSError as error:
        sys.stderr.write(f"ctui: not reading wandb.log calls: {error}\n")
        return None
    tap = ScalarTap(records_file(folder))
    tap.patch(module.Run)
    if getattr(module.Run, "_ctui_tap", None) is tap:
        _TAP = tap
        return tap
    return None


_TAP: ScalarTap | None = None


def uninstall() -> None:
    global _OBSERVER, _TAP
    if _OBSERVER is not None:
        _OBSERVER.unpatch()
        _OBSERVER = None
    if _TAP is not None:
        _TAP.unpatch()
        _TAP = None
