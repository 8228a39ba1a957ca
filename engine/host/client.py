"""A client of a run host: the panel and every `ctui` command talk to a run through this.

    client = RunClient.connect(run_dir)
    for event in client.events():      # the run's history first, then live events
        ...
    client.send(Pause())               # from any thread, while another iterates events()

Imports neither torch nor Textual: the panel attaches before torch would have loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..events import Command, Event
from .errors import HostError, HostStartError, HostUnavailable, RunNotFound
from .launch import start_host
from .protocol import (
    HISTORY_END,
    HOST_FILE,
    SOCKET_NAME,
    decode_event,
    encode,
    peer_credentials,
    socket_address,
)
from .registry import (
    RunInfo,
    find_live_run,
    host_is_live,
    list_runs,
    read_json,
    resolve_run,
    run_info,
)

__all__ = ["HostError", "HostStartError", "HostUnavailable", "RunClient", "RunInfo",
           "RunNotFound", "find_live_run", "list_runs", "resolve_run", "start_host"]


class RunClient:
    """One connection to a live run host. One thread may iterate `events()` (or call
    `history()` / `wait_for()`) while others `send()`; `close()` from any thread ends it."""

    def __init__(self, sock: socket.socket, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._sock = sock
        self._send_lock = threading.Lock()
        self._buffer = bytearray()
        self._caught_up = False
        self._closed = False

    @classmethod
    def connect(cls, run_dir: str | Path, timeout: float = 5.0) -> RunClient:
        """Connect to the run's host, waiting up to timeout for one that is starting or busy.
        Refuses (HostUnavailable) a control.sock that is not a socket, or is served by another
        user: a listener planted there would be told our commands and answer them."""
        run_dir = Path(run_dir)
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            _wait_for_room(sock, max(0.1, deadline - time.monotonic()))
            try:
                with socket_address(run_dir) as address:
                    _check_socket_file(run_dir, address)
                    sock.connect(address)
                _check_server(sock, run_dir)
            except HostUnavailable:
                sock.close()
                raise
            except OSError as error:
                sock.close()
                headless = read_json(run_dir / HOST_FILE).get("headless")
                if headless or not host_is_live(run_dir) or time.monotonic() >= deadline:
                    raise HostUnavailable(_unavailable(run_dir, error)) from None
                time.sleep(0.05)
                continue
            _wait_for_room(sock, 0.0)
            return cls(sock, run_dir)

    @property
    def caught_up(self) -> bool:
        """True once the history has been read and events are live."""
        return self._caught_up

    def events(self) -> Iterator[Event]:
        """The run's history, then live events, until the host goes away or close()."""
        while (event := self._next(None)) is not None:
            yield event

    def history(self, timeout: float = 10.0) -> list[Event]:
        """The events of the run so far (call before `events()`); afterwards events are live."""
        deadline = time.monotonic() + timeout
        past = []
        while not self._caught_up:
            event = self._next(deadline, until_caught_up=True)
            if event is None:
                if self._caught_up:
                    break
                raise HostUnavailable(f"run {self.run_dir.name}: the host went away or sent "
                                      f"no history within {timeout:.0f}s")
            past.append(event)
        return past

    def wait_for(self, wanted: Callable[[Event], bool], timeout: float) -> Event | None:
        """The next event for which wanted(event) is true, or None after timeout seconds (or
        when the host goes away)."""
        deadline = time.monotonic() + timeout
        while (event := self._next(deadline)) is not None:
            if wanted(event):
                return event
        return None

    def send(self, command: Command) -> None:
        data = encode(command)
        try:
            with self._send_lock:
                self._sock.sendall(data)
        except OSError as error:
            raise HostUnavailable(f"run {self.run_dir.name}: the host is gone "
                                  f"({error.strerror or error})") from None

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked reading
        self._sock.close()

    def __enter__(self) -> RunClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ reading

    def _next(self, deadline: float | None, until_caught_up: bool = False) -> Event | None:
        """The next event, or None at the end of the stream, at the deadline, or (with
        until_caught_up) at the end of the history. Skips kinds this client does not know."""
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if not self._receive(deadline):
                    return None
                continue
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if not isinstance(data, dict):
                continue
            if data.get("type") == HISTORY_END:
                self._caught_up = True
                if until_caught_up:
                    return None
                continue
            event = decode_event(data)
            if event is not None:
                return event

    def _receive(self, deadline: float | None) -> bool:
        """Read more into the buffer; False at end of stream, close() or the deadline."""
        if self._closed:
            return False
        try:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([self._sock], [], [], remaining)[0]:
                    return False
            data = self._sock.recv(65536)
        except (OSError, ValueError):  # reset, or closed by another thread
            return False
        self._buffer += data
        return bool(data)


def _wait_for_room(sock: socket.socket, seconds: float) -> None:
    """How long a blocking connect() waits for room in the host's queue of new connections
    (SO_SNDTIMEO; 0: no limit). In a connection flood the queue is full; a waiting connect is
    woken by the kernel when the host takes one, where one that retries would mostly find it
    full again. Linux; elsewhere a full queue fails at once and connect() tries again."""
    whole = int(seconds)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                        struct.pack("ll", whole, int((seconds - whole) * 1e6)))


def _check_socket_file(run_dir: Path, address: str) -> None:
    """control.sock must be a socket itself, not a link to one or anything else. A missing one
    is left to connect() (a host that is starting)."""
    try:
        mode = os.lstat(address).st_mode
    except OSError:
        return
    if stat.S_ISLNK(mode) or not stat.S_ISSOCK(mode):
        what = "a symbolic link" if stat.S_ISLNK(mode) else "not a socket"
        raise HostUnavailable(f"run {run_dir.name}: {run_dir / SOCKET_NAME} is {what}: refusing "
                              "to connect (a run host makes it a socket)")


def _check_server(sock: socket.socket, run_dir: Path) -> None:
    """The process serving the socket runs as this user, as the host checks of its clients."""
    pid, uid = peer_credentials(sock)
    if uid is not None and uid != os.geteuid():
        raise HostUnavailable(f"run {run_dir.name}: {run_dir / SOCKET_NAME} is served by uid "
                              f"{uid} (pid {pid}), not by this user (uid {os.geteuid()}): "
                              "refusing to connect")


def _unavailable(run_dir: Path, error: OSError) -> str:
    try:
        status = run_info(run_dir).status
    except OSError:
        status = "unknown"
    if status == "live" and read_json(run_dir / HOST_FILE).get("headless"):
        pid = read_json(run_dir / HOST_FILE).get("pid")
        return (f"run {run_dir.name} trains headless in process {pid}, which takes no commands; "
                f"stop it with Ctrl-C in its terminal or `kill -TERM {pid}`")
    if status == "live":
        return f"run {run_dir.name} is starting or busy; try again ({error.strerror or error})"
    return f"run {run_dir.name} has no live host ({status or 'not a run'})"
