"""Serving one run over its private Unix socket: history, then live events, to any number of
clients, and their commands into the engine.

One I/O thread does all socket work with a selector. The engine thread only appends events to a
deque and, at most once per batch, writes a byte to a wake-up socket: it never waits for a client.
Each client has a bounded backlog; one that reads too slowly, writes garbage or floods is
answered with a warning or dropped, never allowed to stall the host.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..events import Command, Event, LogLine, Stop
from .history import History
from .protocol import (
    HISTORY_END,
    MAX_LINE_BYTES,
    SOCKET_NAME,
    ProtocolError,
    decode_command,
    encode,
    peer_credentials,
    socket_address,
)

MAX_CLIENTS = 64
MAX_BACKLOG_BYTES = 8 * 1024 * 1024  # unsent live events per client, on top of its history
MAX_LINES_PER_SECOND = 20  # commands are typed or clicked: more is a runaway script
MAX_BYTES_PER_SECOND = 1024 * 1024
READ_CHUNK = 65536


@dataclass(eq=False)
class _Client:
    sock: socket.socket
    pid: int
    limit: int  # backlog bound in bytes
    out: bytearray = field(default_factory=bytearray)
    inbuf: bytearray = field(default_factory=bytearray)
    reading: bool = True
    window_start: float = 0.0
    window_bytes: int = 0
    window_lines: int = 0
    warned: bool = False


class HostServer:
    """Binds RUN_DIR/control.sock (0600) at construction; `start()` serves it on a thread."""

    def __init__(self, run_dir: Path, on_command: Callable[[Command], None]) -> None:
        self.run_dir = Path(run_dir)
        self.on_command = on_command
        self._listener = bind_private(self.run_dir)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_pending = False
        self._inbox: deque[Event] = deque()  # appended by the engine thread, drained by I/O
        self._history = History()
        self._clients: dict[socket.socket, _Client] = {}
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._deadline: float | None = None  # set by shutdown(): flush until then
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="ctui-host-io", daemon=True)

    # ------------------------------------------------------------ any thread

    def start(self) -> HostServer:
        self._thread.start()
        return self

    def publish(self, event: Event) -> None:
        """The engine's sink: enqueue only, so training never waits on a client."""
        self._inbox.append(event)
        if not self._wake_pending:
            self._wake_pending = True
            self._wake()

    def shutdown(self, flush_seconds: float = 3.0) -> None:
        """Stop accepting, give clients up to flush_seconds to read what is queued, close."""
        self._deadline = time.monotonic() + flush_seconds
        self._wake()
        if self._thread.is_alive():
            self._thread.join(flush_seconds + 2.0)
        else:
            self._close_all()

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # full: a wake-up is pending anyway
            self._wake_w.send(b"\0")

    # ------------------------------------------------------------ I/O thread

    def _serve(self) -> None:
        try:
            while True:
                timeout = None
                if self._deadline is not None:
                    self._stop_accepting()
                    self._deliver()
                    pending = any(client.out for client in self._clients.values())
                    timeout = self._deadline - time.monotonic()
                    if not pending or timeout <= 0:
                        break
                for key, mask in self._selector.select(timeout):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        with contextlib.suppress(BlockingIOError, OSError):
                            while self._wake_r.recv(4096):
                                pass
                    else:
                        client = key.data
                        if mask & selectors.EVENT_READ and client.sock in self._clients:
                            self._read(client)
                        if mask & selectors.EVENT_WRITE and client.sock in self._clients:
                            self._flush(client)
                self._deliver()
        except Exception as error:  # never take the training down with the socket
            _note(f"the control socket stopped serving: {type(error).__name__}: {error}")
        finally:
            self._close_all()

    def _deliver(self) -> None:
        self._wake_pending = False  # before draining: a later event then sends a new wake-up
        while self._inbox:
            event = self._inbox.popleft()
            line = encode(event)
            self._history.add(event.kind, line)
            for client in list(self._clients.values()):
                self._queue(client, line)

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except OSError:
            return
        pid, uid = peer_credentials(sock)
        if uid is not None and uid != os.getuid():
            _note(f"refused a connection from uid {uid} (pid {pid}): this run belongs to uid "
                  f"{os.getuid()}")
            sock.close()
            return
        if len(self._clients) >= MAX_CLIENTS:
            with contextlib.suppress(OSError):
                sock.send(encode(LogLine(level="error", message=f"too many clients "
                                         f"({MAX_CLIENTS}) attached to this run")))
            sock.close()
            return
        sock.setblocking(False)
        self._deliver()  # what was published before this client came is its history
        history = b"".join(self._history.lines()) + encode({"type": HISTORY_END})
        client = _Client(sock, pid or 0, limit=MAX_BACKLOG_BYTES + len(history))
        self._clients[sock] = client
        self._selector.register(sock, selectors.EVENT_READ, client)
        self._queue(client, history)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            self._drop(client, "")
            return
        if not data:  # the client closed its side; a half-sent line is discarded
            client.inbuf.clear()
            client.reading = False
            self._update_interest(client)
            return
        now = time.monotonic()
        if now - client.window_start >= 1.0:
            client.window_start, client.window_bytes, client.window_lines = now, 0, 0
            client.warned = False
        client.window_bytes += len(data)
        if client.window_bytes > MAX_BYTES_PER_SECOND:
            self._drop(client, "sent more than 1 MiB in a second", tell=True)
            return
        client.inbuf += data
        while (end := client.inbuf.find(b"\n")) >= 0:
            line = bytes(client.inbuf[:end]).strip()
            del client.inbuf[: end + 1]
            if line:
                self._handle_line(client, line)
            if client.sock not in self._clients:
                return
        if len(client.inbuf) > MAX_LINE_BYTES:
            self._drop(client, f"sent a line longer than {MAX_LINE_BYTES} bytes", tell=True)

    def _handle_line(self, client: _Client, line: bytes) -> None:
        client.window_lines += 1
        if client.window_lines > MAX_LINES_PER_SECOND:
            if not client.warned:
                client.warned = True
                self._reply(client, f"more than {MAX_LINES_PER_SECOND} messages in a second: "
                            "ignoring the rest of this second's")
            return
        try:
            command = decode_command(line)
        except ProtocolError as error:
            self._reply(client, f"ignored a message: {error}")
            return
        if isinstance(command, Stop):  # the reason is echoed to every client: keep it short
            command = Stop(reason=str(command.reason)[:200])
        try:
            self.on_command(command)
        except Exception as error:
            self._reply(client, f"could not apply {command.kind}: {error}")

    def _reply(self, client: _Client, message: str) -> None:
        self._queue(client, encode(LogLine(level="warning", message=message)))

    def _queue(self, client: _Client, data: bytes) -> None:
        if len(client.out) + len(data) > client.limit:
            self._drop(client, f"fell more than {client.limit // 2**20} MiB behind")
            return
        client.out += data
        self._flush(client)

    def _flush(self, client: _Client) -> None:
        try:
            while client.out:
                sent = client.sock.send(client.out[:READ_CHUNK * 4])
                del client.out[:sent]
        except BlockingIOError:
            pass
        except OSError:  # gone (EPIPE, ECONNRESET)
            self._drop(client, "")
            return
        self._update_interest(client)

    def _update_interest(self, client: _Client) -> None:
        events = (selectors.EVENT_READ if client.reading else 0) | (
            selectors.EVENT_WRITE if client.out else 0)
        key = self._selector.get_map().get(client.sock)
        if key is not None and events:
            if key.events != events:
                self._selector.modify(client.sock, events, client)
        elif key is not None:
            self._selector.unregister(client.sock)
        elif events:
            self._selector.register(client.sock, events, client)

    def _drop(self, client: _Client, reason: str, tell: bool = False) -> None:
        if reason:
            _note(f"disconnected client pid {client.pid}: {reason}")
            if tell:
                with contextlib.suppress(OSError):
                    client.sock.send(encode(LogLine(level="error",
                                                    message=f"disconnected: {reason}")))
        self._clients.pop(client.sock, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(client.sock)
        _close(client.sock)

    def _stop_accepting(self) -> None:
        if self._listener.fileno() >= 0:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(self._listener)
            self._listener.close()
            with contextlib.suppress(OSError):
                os.unlink(self.run_dir / SOCKET_NAME)

    def _close_all(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_accepting()
        for client in list(self._clients.values()):
            self._drop(client, "")
        for sock in (self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()


def bind_private(run_dir: Path) -> socket.socket:
    """A listening socket at RUN_DIR/control.sock, mode 0600 from the moment it exists. The
    caller holds the run's lock, so a socket file already there is stale: replace it."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with socket_address(run_dir) as address:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address)
        old_umask = os.umask(0o177)
        try:
            listener.bind(address)
        finally:
            os.umask(old_umask)
        os.chmod(address, 0o600)
    listener.listen(16)
    listener.setblocking(False)
    return listener


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def _note(message: str) -> None:
    print(f"host: {message}", file=sys.stderr, flush=True)
