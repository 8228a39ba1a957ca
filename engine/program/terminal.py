"""A program in a pseudo-terminal the host owns: a session of its own with the terminal as its
controlling terminal, so tqdm draws bars, colours stay on, `input()` and getpass prompt, and a
typed Ctrl-C reaches the whole foreground process group, as in a real terminal.

One thread reads the terminal's output as fast as the program writes it (so the program never
blocks on a full terminal), hands it to `on_output(bytes)` on that thread, and writes queued
keystrokes when the terminal can take them. `on_idle()` is called on the same thread at least
every `tick` seconds. Standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Callable, Mapping

READ_CHUNK = 1 << 16
MAX_READ_BATCH = 1 << 18  # bytes read in one go before they are handed on
MAX_INPUT_PENDING = 1 << 16  # typed bytes the program has not read yet

# Run as `python -I -S -c EXEC CMD ARGS...` in the new session: take the terminal as the
# controlling one, then become CMD (same pid). A missing command exits 127 and one that cannot
# be executed 126, with a line on the terminal, as a shell does. -I: no PYTHONPATH, no user
# site, so nothing of the program's environment runs in this step.
_EXEC = r"""
import fcntl, os, signal, sys, termios
try:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
except OSError:
    pass
# The host ignores SIGHUP, and an ignored signal stays ignored across exec: the program gets
# it back, so it ends with its terminal when the host dies (SIGKILL), as it would in a shell,
# and never trains on beside the attempt `ctui run --resume` starts.
signal.signal(signal.SIGHUP, signal.SIG_DFL)
name = sys.argv[1]
try:
    os.execvp(name, sys.argv[1:])
except FileNotFoundError:
    sys.stderr.write("ctui: %s: command not found\n" % name)
    os._exit(127)
except OSError as error:
    sys.stderr.write("ctui: %s: cannot run it: %s\n" % (name, error.strerror or error))
    os._exit(126)
"""
EXIT_NOT_FOUND = 127
EXIT_CANNOT_RUN = 126


class Terminal:
    """`start()` the program; `write()`/`resize()`/`signal_group()` from any thread;
    `wait()` for it; `close()` once it has ended and its output is drained."""

    def __init__(self, argv: list[str] | tuple[str, ...], cwd: str, env: Mapping[str, str],
                 on_output: Callable[[bytes], None], columns: int = 120, rows: int = 40,
                 on_idle: Callable[[], None] = lambda: None, tick: float = 0.05,
                 idle_pending: Callable[[], bool] = lambda: True) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        self.env = dict(env)
        self.on_output = on_output
        self.on_idle = on_idle
        self.tick = tick
        # on_idle is due again every `tick` only while this says so (unsent output): otherwise
        # the reader sleeps until output or input comes, so a quiet program's host stays asleep
        self.idle_pending = idle_pending
        self.size = (columns, rows)
        self.process: subprocess.Popen | None = None
        self._master = -1
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._input = bytearray()
        self._input_lock = threading.Lock()
        self._eof = threading.Event()
        self._exited = threading.Event()  # set by the reaper: wait() blocks on it, no polling
        self._closing = False
        self._thread: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    def start(self) -> int:
        """Start the program and the reader; its pid. OSError when the system cannot start
        it at all (no such folder, out of processes): a missing command is exit code 127."""
        master, slave = os.openpty()
        try:
            _set_size(slave, *self.size)
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _EXEC, *self.argv], stdin=slave,
                stdout=slave, stderr=slave, cwd=self.cwd, env=self.env,
                start_new_session=True, close_fds=True)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)  # the program holds it now; ours would keep the terminal open
        os.set_blocking(master, False)
        self._master = master
        self._thread = threading.Thread(target=self._run, name="ctui-terminal", daemon=True)
        self._thread.start()
        threading.Thread(target=self._reap, name="ctui-reaper", daemon=True).start()
        return self.process.pid

    def _reap(self) -> None:
        # Popen.wait(timeout) polls with short sleeps; a blocking wait here wakes only at the end
        try:
            self.process.wait()
        finally:
            self._exited.set()

    # ------------------------------------------------------------ any thread

    def write(self, data: bytes) -> bool:
        """Queue keystrokes; False (nothing queued) while the program has not read
        MAX_INPUT_PENDING bytes already typed, or after it has ended."""
        if self._master < 0 or self._eof.is_set():
            return False
        with self._input_lock:
            if len(self._input) + len(data) > MAX_INPUT_PENDING:
                return False
            self._input += data
        self._wake()
        return True

    def resize(self, columns: int, rows: int) -> None:
        """Set the terminal's size; the kernel tells the program (SIGWINCH)."""
        self.size = (columns, rows)
        if self._master >= 0:
            with contextlib.suppress(OSError):
                _set_size(self._master, columns, rows)

    def signal_group(self, signum: int) -> bool:
        """Send a signal to the program's whole process group; False when none is left."""
        if self.process is None:
            return False
        try:
            os.killpg(self.process.pid, signum)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def group_alive(self) -> bool:
        """Some process of the program's group is left (signal 0 reaches one)."""
        return self.signal_group(0)

    def wait(self, timeout: float | None = None) -> int | None:
        """The program's return code (negative: the signal that ended it), or None."""
        if self.process is None or not self._exited.wait(timeout):
            return None
        return self.process.returncode

    def wait_for_eof(self, timeout: float) -> bool:
        """Until every holder of the terminal has closed it (its output fully read)."""
        return self._eof.wait(timeout)

    def close(self) -> None:
        """Stop reading and release the terminal (after the program has ended)."""
        self._closing = True
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        for fd in (self._master, self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._wake_r = self._wake_w = -1

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")

    # ------------------------------------------------------------ the reader thread

    def _run(self) -> None:
        master = self._master
        try:
            while not self._closing:
                with self._input_lock:
                    typing = bool(self._input)
                readable, writable, _ = select.select(
                    [master, self._wake_r], [master] if typing else [], [],
                    self.tick if self.idle_pending() else None)
                if self._wake_r in readable:
                    with contextlib.suppress(OSError):
                        os.read(self._wake_r, 4096)
                if master in writable:
                    self._send_input(master)
                if master in readable and not self._read(master):
                    break
                self.on_idle()
        finally:
            self._eof.set()
            with contextlib.suppress(Exception):
                self.on_idle()

    def _read(self, master: int) -> bool:
        """Read what there is (up to a batch) and hand it on; False at the end of output."""
        chunks, size = [], 0
        end = False
        while size < MAX_READ_BATCH:
            try:
                data = os.read(master, READ_CHUNK)
            except BlockingIOError:
                break
            except OSError as error:  # EIO: every holder of the terminal has closed it
                if error.errno not in (errno.EIO, errno.EBADF):
                    raise
                end = True
                break
            if not data:
                end = True
                break
            chunks.append(data)
            size += len(data)
        if chunks:
            self.on_output(b"".join(chunks))
        return not end

    def _send_input(self, master: int) -> None:
        with self._input_lock:
            try:
                sent = os.write(master, self._input)
            except BlockingIOError:
                return
            except OSError:
                self._input.clear()
                return
            del self._input[:sent]


def _set_size(fd: int, columns: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
