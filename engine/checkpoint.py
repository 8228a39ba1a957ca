"""Checkpoints: atomic writes off the training thread, safe loading, finding the newest good one.

A checkpoint is a plain dict (model, optimizer, scheduler, scaler, RNG states, progress, settings,
config). It is written to a temporary file in the same folder, fsynced, renamed over its name and
the folder fsynced, so a crash at any moment leaves either the old set or the new one.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import pickle
import re
import threading
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# Naming lives in the torch-free runs module so `ctui ls` and the panel can list checkpoints.
from .errors import CheckpointError, first_line
from .runs import checkpoint_dir, checkpoint_name, list_checkpoints
from .safefs import TEMP_SUFFIX, open_regular, write_atomically_with

__all__ = ["CheckpointError", "checkpoint_dir", "checkpoint_name", "list_checkpoints"]

FORMAT_VERSION = 2  # 2: with a payload checksum
READABLE_VERSIONS = (1, 2)


# What resume needs, by type; a loadable file that lacks one is refused, not trained on.
CHECKPOINT_FIELDS: dict[str, type] = {
    "task": str, "config": dict, "model": dict, "optimizer": dict, "scheduler": dict,
    "scaler": dict, "rng": dict, "progress": dict, "history": list, "settings": dict,
}


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Half-written files left by a crash; never a committed checkpoint."""
    removed = []
    if folder.is_dir():
        for path in folder.iterdir():
            if path.name.endswith(TEMP_SUFFIX):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


class StagingBuffers:
    """CPU copies of a state's tensors in buffers kept from one save to the next.

    Reusing warm (and, for CUDA tensors, pinned) buffers makes the copy a plain memcpy or DMA:
    that copy is all the training loop waits for. Only one save may use them at a time, which
    CheckpointWriter guarantees by waiting for the previous save before staging the next.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple, torch.Tensor] = {}

    def copy(self, value: Any, path: tuple = ()) -> Any:
        if isinstance(value, torch.Tensor):
            return self._copy_tensor(value, path)
        if isinstance(value, dict):
            return {key: self.copy(item, (*path, key)) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.copy(item, (*path, i)) for i, item in enumerate(value))
        return value

    def _copy_tensor(self, tensor: torch.Tensor, path: tuple) -> torch.Tensor:
        tensor = tensor.detach()
        buffer = self._buffers.get(path)
        if buffer is None or buffer.shape != tensor.shape or buffer.dtype != tensor.dtype:
            pin = tensor.device.type == "cuda"
            buffer = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=pin)
            self._buffers[path] = buffer
        buffer.copy_(tensor, non_blocking=tensor.device.type == "cuda")
        return buffer

    def copy_and_sync(self, state: dict) -> dict:
        staged = self.copy(state)
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()  # the non-blocking device-to-host copies have landed
        return staged


def write_atomically(state: dict, path: Path) -> bool:
    """checksum -> temp file (O_EXCL, unguessable name) -> fsync -> rename -> fsync folder.
    Raises OSError on a full disk; a planted link is never written through. False when the
    filesystem cannot fsync the folder (a FUSE or network mount): the file itself was."""
    state = {**state, "checksum": payload_checksum(state)}
    return write_atomically_with(path, lambda handle: torch.save(state, handle))


def payload_checksum(state: Any) -> int:
    """CRC-32 of everything in a checkpoint but its checksum: tensors' bytes, dtypes and
    shapes, and every other value. A flipped byte in the weights loads without an error from
    torch.load; this finds it."""
    crc = 0

    def add(value: Any) -> None:
        nonlocal crc
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous().reshape(-1)
            crc = zlib.crc32(f"T{tensor.dtype}{tuple(value.shape)}".encode(), crc)
            crc = zlib.crc32(tensor.view(torch.uint8).numpy(), crc)
        elif isinstance(value, dict):
            crc = zlib.crc32(b"{", crc)
            for key in sorted(value, key=lambda k: (type(k).__name__, repr(k))):
                if key == "checksum" and value is state:
                    continue
                crc = zlib.crc32(repr(key).encode(), crc)
                add(value[key])
            crc = zlib.crc32(b"}", crc)
        elif isinstance(value, (list, tuple)):
            crc = zlib.crc32(b"[", crc)
            for item in value:
                add(item)
            crc = zlib.crc32(b"]", crc)
        else:
            crc = zlib.crc32(repr(value).encode(), crc)

    add(state)
    return crc


def _lower_this_threads_priority() -> None:
    """On Linux a thread has its own nice value: the writer yields the CPU to training."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass


def _reason(failure: BaseException) -> str:
    """The OS's words for why a write failed ("No space left on device"), if it gave any."""
    seen: BaseException | None = failure
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    return first_line(failure)


def load_checkpoint(path: str | os.PathLike[str]) -> dict:
    """Load with weights_only=True and nothing else (a file that would run code is refused),
    from a regular file only, and check its checksum and its fields. CheckpointError.corrupt
    says whether the file itself is bad (a format error or a checksum mismatch) or it could not
    be used now (out of memory, an I/O error): only a bad file may be moved aside."""
    path = Path(path)
    try:
        fd = open_regular(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.EINVAL):  # a link or a FIFO: not a checkpoint
            raise CheckpointError(f"{path}: not a regular file (ctui follows no links: give "
                                  "the file itself)", corrupt=True) from None
        raise CheckpointError(f"{path}: cannot open it: {error.strerror or error}") from None
    try:
        with os.fdopen(fd, "rb") as handle:
            state = torch.load(handle, map_location="cpu", weights_only=True)
    except Exception as error:
        raise _load_error(path, error) from None
    if not isinstance(state, dict) or state.get("format_version") not in READABLE_VERSIONS:
        raise CheckpointError(f"{path}: not a ctui checkpoint of format {FORMAT_VERSION}",
                              corrupt=True)
    if state["format_version"] >= 2 and state.get("checksum") != payload_checksum(state):
        raise CheckpointError(f"{path}: its checksum does not match its contents (a damaged "
                              "file)", corrupt=True)
    problem = schema_problem(state)
    if problem:
        raise CheckpointError(f"{path}: not a usable ctui checkpoint: {problem}")
    return state


def _load_error(path: Path, error: Exception) -> CheckpointError:
    text, first = str(error).strip(), first_line(error)
    if "weights_only" in text or "Unsupported global" in text:
        return CheckpointError(f"{path}: refused, it contains objects that would run code when "
                               f"loaded ({_unsafe_global(text)}); ctui only loads plain tensors "
                               "and values", corrupt=True)
    format_error = isinstance(error, (EOFError, ValueError, pickle.UnpicklingError,
                                      zipfile.BadZipFile)) or (
        isinstance(error, RuntimeError) and any(
            word in text for word in ("PytorchStreamReader", "zip archive", "central directory",
                                      "invalid header", "storage has wrong byte size")))
    if format_error:
        return CheckpointError(f"{path}: unreadable or truncated ({first})", corrupt=True)
    # Out of memory, an I/O error, anything else: the file may well be fine.
    return CheckpointError(f"{path}: could not be loaded now ({type(error).__name__}: {first}); "
                           "the file was left as it is")


def schema_problem(state: dict) -> str:
    """'' when a loaded checkpoint has every field resume needs, with the right types."""
    for key, kind in CHECKPOINT_FIELDS.items():
        if not isinstance(state.get(key), kind):
            return (f"field {key!r} is missing" if key not in state else
                    f"field {key!r} is a {type(state[key]).__name__}, not a {kind.__name__}")
    progress = state["progress"]
    for key, low in (("epoch", 1), ("position", 0), ("global_step", 0)):
        value = progress.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            return f"progress.{key} is {value!r}, not a whole number >= {low}"
    for key, low in (("batch_size", 1), ("num_workers", 0)):
        value = state["settings"].get(key, low)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            return f"settings.{key} is {value!r}, not a whole number >= {low}"
    if not all(isinstance(value, torch.Tensor) for value in state["model"].values()):
        return "model holds something other than tensors"
    if not all(isinstance(record, dict) for record in state["history"]):
        return "history holds something other than epoch records"
    rng = state["rng"]
    if not (isinstance(rng.get("python"), (list, tuple)) and isinstance(rng.get("numpy"), dict)
            and isinstance(rng.get("torch"), torch.Tensor)
            and isinstance(rng.get("loader"), torch.Tensor)):
        return "rng is incomplete"
    return ""


def _unsafe_global(message: str) -> str:
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    return match.group(1) if match else "unsupported global"


@dataclass(frozen=True)
class ResumePoint:
    """A loaded checkpoint to continue from, and what was noticed finding it."""

    path: Path | None  # None: nothing to resume, start fresh
    state: dict | None
    notes: tuple[str, ...] = ()


def find_resume_point(resume: str | os.PathLike[str], run_dir: str | os.PathLike[str],
                      move_aside: bool = True) -> ResumePoint:
    """resume == "latest": the newest checkpoint of run_dir that loads. Newer ones that are
    damaged are renamed *.corrupt (kept for inspection, out of the way of the next save) when
    move_aside is true: only the process holding the run's lock may. A checkpoint that cannot
    be loaded for another reason (out of memory, I/O) raises: nothing is touched.
    Otherwise resume is a checkpoint file, which must load."""
    if str(resume) != "latest":
        return ResumePoint(Path(resume), load_checkpoint(resume))
    folder = checkpoint_dir(run_dir)
    notes = []
    for path in reversed(list_checkpoints(folder)):
        try:
            return ResumePoint(path, load_checkpoint(path), tuple(notes))
        except CheckpointError as error:
            if not error.corrupt:
                raise
            if move_aside:
                aside = path.with_name(path.name + ".corrupt")
                path.rename(aside)
                notes.append(f"{error}; moved aside as {aside.name}, using the previous "
                             "checkpoint")
            else:
                notes.append(f"{error}; using the previous checkpoint")
    notes.append(f"no usable checkpoint in {folder}: starting fresh")
    return ResumePoint(None, None, tuple(notes))


def describe_mismatch(saved: dict[str, torch.Tensor], model: dict[str, torch.Tensor]) -> str:
    """'' when the model state fits the saved one, else what differs, for people."""
    differences = []
    for name in sorted(set(saved) | set(model)):
        if name not in model:
            differences.append(f"{name} is in the checkpoint but not in the model")
        elif name not in saved:
            differences.append(f"{name} is in the model but not in the checkpoint")
        elif tuple(saved[name].shape) != tuple(model[name].shape):
            differences.append(f"{name}: checkpoint {list(saved[name].shape)}, "
                               f"model {list(model[name].shape)}")
    if len(differences) > 3:
        differences = differences[:3] + [f"and {len(differences) - 3} more"]
    return "; ".join(differences)


@dataclass(frozen=True)
class SaveResult:
    path: str
    epoch: int
    global_step: int
    blocked_seconds: float  # the training loop's share: copying the state off the device
    seconds: float = 0.0  # the writer's share: serialising, fsync, rename
    error: str = ""
    best: tuple[str, str, float] | None = None  # ckpt-best.pt: (monitor, mode, value)
    note: str = ""  # something to say once about where checkpoints go (not a failure)


class CheckpointWriter:
    """Serialises and commits checkpoints on its own thread, at most one in flight.

    `submit` waits for the previous save to finish (so saves never pile up), then returns
    at once; `wait` blocks until everything submitted is on disk.
    """

    def __init__(self, folder: Path, keep: int, on_done: Callable[[SaveResult], None]) -> None:
        self.folder = folder
        self.keep = keep
        self.on_done = on_done
        self._staging = StagingBuffers()
        self._thread: threading.Thread | None = None
        # Test hook: at the Nth save, wait for a file to appear before writing, with a
        # half-written temporary in place, so a test can kill the process mid-save.
        self._pause_file = os.environ.get("CTUI_TEST_PAUSE_SAVE_UNTIL")
        self._pause_at = int(os.environ.get("CTUI_TEST_PAUSE_SAVE_AT", "1"))
        self._saves = 0
        self._mount_noted = False  # said once that the folder's fsync is not supported

    def stage(self, state: dict) -> dict:
        """Wait for the save in flight, then copy `state` off the device into the buffers."""
        self.wait()
        return self._staging.copy_and_sync(state)

    def submit(self, state: dict, pending: SaveResult) -> None:
        """Write a staged state in the background."""
        self.wait()
        self._thread = threading.Thread(target=self._write, args=(state, pending),
                                        name="ctui-checkpoint-writer", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _write(self, state: dict, pending: SaveResult) -> None:
        _lower_this_threads_priority()
        start = time.perf_counter()
        path = Path(pending.path)
        error = note = ""
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._test_pause(path)
            # A folder fsync the mount does not support (Google Drive on Colab answers EINVAL)
            # is not a failed save: the file was fsynced and renamed; say so once.
            if not write_atomically(state, path) and not self._mount_noted:
                self._mount_noted = True
                note = (f"{self.folder} cannot be fsynced (a network or FUSE mount, such as "
                        "Google Drive): checkpoints are written, fsynced and renamed, but this "
                        "mount cannot promise a rename survives a crash of the machine")
            if pending.best is None:  # the best checkpoint is kept beside the last K
                self._prune(keep_newest=path)
        except Exception as failure:  # torch wraps a full disk's OSError in a RuntimeError
            error = _reason(failure)
        self.on_done(dataclasses.replace(pending, seconds=time.perf_counter() - start,
                                         error=error, note=note))

    def _prune(self, keep_newest: Path) -> None:
        committed = [p for p in list_checkpoints(self.folder) if p != keep_newest]
        for old in committed[: max(0, len(committed) - (self.keep - 1))]:
            old.unlink(missing_ok=True)

    def _test_pause(self, path: Path) -> None:
        self._saves += 1
        if not self._pause_file or self._saves != self._pause_at:
            return
        marker = Path(self._pause_file)
        # Leave a half-written temporary behind, as a crash mid-write would.
        temp = path.with_name(path.name + TEMP_SUFFIX)
        temp.write_bytes(b"partial")
        (marker.parent / (marker.name + ".waiting")).touch()
        while not marker.exists():
            time.sleep(0.01)
        temp.unlink(missing_ok=True)
