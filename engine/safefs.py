"""Files and folders someone else may have crafted: read bounded, write without following links.

ctui runs as root on rented boxes and in shared folders such as /tmp, so a run folder's files
are never trusted: a file read here must be a regular file of bounded size (never a FIFO that
blocks, never /dev/zero through a link); a file written here is opened with O_NOFOLLOW (a
planted symlink is an error, never a write elsewhere), temporaries with O_EXCL under names
nobody can predict; a folder is adopted only when it is the user's own and nobody else can
write into it (as git's safe.directory and OpenSSH's StrictModes do). Standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

MAX_SMALL_FILE = 1 << 20  # config.json, host.json, end.json: a few KiB in practice
TEMP_SUFFIX = ".tmp"

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class UnsafePathError(OSError):
    """A path ctui will not read, write or adopt; the message says which and why."""


def read_bounded(path: str | os.PathLike[str], limit: int = MAX_SMALL_FILE) -> bytes:
    """The bytes of a regular file of at most `limit` bytes. Never follows a symlink, never
    blocks on a FIFO or device: raises UnsafePathError for those, OSError when missing."""
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePathError(errno.EINVAL, "not a regular file", str(path))
        if info.st_size > limit:
            raise UnsafePathError(errno.EFBIG, f"larger than {limit} bytes", str(path))
        chunks, left = [], limit + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 16))):
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:  # grew while we read it
            raise UnsafePathError(errno.EFBIG, f"larger than {limit} bytes", str(path))
        return data
    finally:
        os.close(fd)


def open_regular(path: str | os.PathLike[str], flags: int = os.O_RDONLY) -> int:
    """A file descriptor on a regular file, opened without following a symlink and without
    blocking on a FIFO. For large files read incrementally (metrics.jsonl); the caller closes."""
    fd = os.open(path, flags | _NOFOLLOW | _NONBLOCK | _CLOEXEC, 0o600)  # private if created
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafePathError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_append(path: str | os.PathLike[str], mode: int = 0o600) -> int:
    """An O_APPEND descriptor on a regular file (created private if missing). A symlink, a FIFO
    or a file of another user in its place is an error."""
    fd = open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    if not _owned(os.fstat(fd)):
        os.close(fd)
        raise UnsafePathError(errno.EPERM, "belongs to another user", str(path))
    os.fchmod(fd, mode)
    return fd


def create_temp(final: Path, mode: int = 0o600) -> tuple[Path, int]:
    """A fresh temporary beside `final`, named `final.<random>.tmp`, opened O_EXCL|O_NOFOLLOW:
    nobody can plant a link or file under a name they cannot guess."""
    for _ in range(100):
        temp = final.with_name(f"{final.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, mode)
        except FileExistsError:
            continue
        return temp, fd
    raise UnsafePathError(errno.EEXIST, "cannot create a temporary file", str(final))


def write_atomically(path: Path, data: bytes, mode: int = 0o600, durable: bool = True) -> None:
    """temp (O_EXCL, random name) -> write -> fsync -> rename over `path` -> fsync the folder.
    rename() replaces a planted symlink at `path` itself; it never writes through it."""
    write_atomically_with(path, lambda handle: handle.write(data), mode, durable)


def write_atomically_with(path: Path, write: Callable[[BinaryIO], object], mode: int = 0o600,
                          durable: bool = True) -> bool:
    """write_atomically, with `write(handle)` writing the contents (torch.save, say). Returns
    False when the folder could not be fsynced (see fsync_dir): the file itself was."""
    temp, fd = create_temp(path, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return fsync_dir(path.parent) if durable else True


def fsync_dir(folder: Path) -> bool:
    """fsync a folder so a rename in it is durable. False where the filesystem cannot do it
    (FUSE and network mounts answer EINVAL or ENOTSUP): the file itself was fsynced."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF):
            return False
        raise
    finally:
        os.close(fd)
    return True


def check_private_dir(path: Path, what: str = "run folder") -> None:
    """Refuse a folder ctui must not adopt: a symlink, not a folder, owned by another user, or
    writable by group or others. One line naming the folder and the fix."""
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise UnsafePathError(errno.ENOENT, f"{what} {path} does not exist", str(path)) from None
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePathError(errno.ELOOP, f"{what} {path} is a symbolic link; ctui follows no "
                              "links in run folders: give the real folder", str(path))
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePathError(errno.ENOTDIR, f"{what} {path} is not a folder", str(path))
    if not _owned(info):
        raise UnsafePathError(errno.EPERM, f"{what} {path} belongs to uid {info.st_uid}, not to "
                              f"you (uid {os.geteuid()}); ctui adopts only your own folders",
                              str(path))
    if info.st_mode & 0o022:
        raise UnsafePathError(errno.EPERM, f"{what} {path} is writable by other users (mode "
                              f"{stat.S_IMODE(info.st_mode):o}); `chmod go-w {path}` if it is "
                              "yours and trusted", str(path))


def make_private_dir(path: Path, what: str = "run folder") -> bool:
    """Create `path` mode 0700 (parents as mkdir -p would), or check the existing one with
    check_private_dir. True when it was created now."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UnsafePathError(errno.ENOTDIR, f"{what} {path}: {path.parent} is not a folder",
                              str(path)) from None
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        check_private_dir(path, what)
        return False
    os.chmod(path, 0o700)  # mkdir's mode is masked by the umask
    return True


def make_unique_dir(parent: Path, base: str) -> Path:
    """A new private folder `parent/base-XXXXXX` that no one could have created beforehand:
    O_EXCL-like mkdir under a random suffix."""
    for _ in range(100):
        path = parent / f"{base}-{secrets.token_hex(3)}"
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        os.chmod(path, 0o700)
        return path
    raise UnsafePathError(errno.EEXIST, f"cannot make a new folder in {parent}", str(parent))


def _owned(info: os.stat_result) -> bool:
    return info.st_uid == os.geteuid()
