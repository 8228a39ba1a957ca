"""Serving one run over its private Unix socket: history, then live events, to any number of
clients, and their commands into the engine.

One I/O thread does all socket work with a selector. The engine thread only appends events to a
deque and, at most once per batch, writes a byte to a wake-up socket: it never waits for a client.
Each client has a bounded backlog; one that reads too slowly, writes garbage or floods is
answered with a warning or dropped, never allowed to stall the host.

Abuse must not cost the training: the I/O thread runs at a lower priority, accepts connections at
a bounded rate and gives new clients their history at a lower one (the rest wait, in the kernel's
queue or ours), drops a client holding half a line, and when every slot is taken makes room for
a newcomer by dropping the most idle client, so a real command always gets through.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import selectors
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..events import Command, Event, LogLine, StateChanged, Stop
from ..history import History
from ..runs import record_state
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

# Clients. A person has a panel or two and types a command now and then; everything past these
# bounds is a runaway script or an attack, and costs the training only what the bound allows.
MAX_CLIENTS = 64  # attached at once; when full, the most idle one makes room for a newcomer
MAX_BACKLOG_BYTES = 8 * 1024 * 1024  # unsent live events per client, on top of its history
MAX_LINES_PER_SECOND = 20  # commands are typed or clicked: more is a runaway script
MAX_BAD_LINES_PER_SECOND = 10  # a few typos are answered; a stream of non-commands is dropped
MAX_BYTES_PER_SECOND = 256 * 1024  # 20 commands a second are a few KB: 256 KiB is garbage
HALF_LINE_SECONDS = 5.0  # a client sends a line in one write; half of one for 5 s holds a slot
READ_CHUNK = 65536
WRITE_CHUNK = 256 * 1024

# New connections. Each accept costs the I/O thread 10-20 us and each client served its history
# (up to ~1 MB) about a millisecond; a person attaches a few times a minute.
SERVE_PER_SECOND = 20.0  # new clients given their history: beyond this they wait their turn
SERVE_BURST = 20  # ... but this many at once after a quiet while (a test suite, many panels)
ACCEPT_WINDOW = 0.1  # seconds: accepts are counted per window, and paused for its rest ...
ACCEPTS_PER_WINDOW = 100  # ... past 1,000 a second (1-2% of a core); the kernel queues the rest
LISTEN_BACKLOG = 128  # the kernel's queue, a bit more than a window's accepts. When it is full a
#                       client's connect waits for room (RunClient.connect), woken as we accept
MAX_WAITING = 64  # accepted, alive, not yet served: while full, the kernel queues the rest.
#                   (Not: drop the longest waiting. Its client reconnects at once, and a flood
#                   of those pushes data through the host as fast as it accepts.)
SNAPSHOT_TAIL = 1000  # events published since the history was last joined, before a rejoin
NOTE_EVERY = 10.0  # seconds between two notes of one kind in host.log: a flood is one line
IO_THREAD_NICE = 10  # as the checkpoint writer: socket work yields the CPU to training


@dataclass(eq=False)
class _Client:
    sock: socket.socket
    pid: int
    limit: int  # backlog bound in bytes
    connected: float = 0.0
    out: bytearray = field(default_factory=bytearray)
    inbuf: bytearray = field(default_factory=bytearray)
    reading: bool = True
    half_line_since: float | None = None  # when the unfinished line in inbuf began
    commands: int = 0  # applied, all told: a client that sent none is idle
    window_start: float = 0.0
    window_bytes: int = 0
    window_lines: int = 0
    window_bad: int = 0
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
        self._history: History[bytes] = History()
        self._snapshot: bytes | None = None  # the history joined, and the lines since: see
        self._since: list[bytes] = []  # _history_bytes()
        self._clients: dict[socket.socket, _Client] = {}
        self._waiting: deque[tuple[socket.socket, int]] = deque()  # accepted, not yet served
        self._tokens = float(SERVE_BURST)  # new clients that may be served now
        self._tokens_at = time.monotonic()
        self._window_end = 0.0  # the current accept window, and the accepts left in it
        self._accepts_left = ACCEPTS_PER_WINDOW
        self._listening = True  # the listener is polled (not paused for the window's rest)
        self._half_line_check = math.inf  # when a client's half line next times out
        self._notes = _Notes()
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
        _lower_this_threads_priority()
        try:
            while True:
                timeout = self._housekeeping()
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

    def _housekeeping(self) -> float | None:
        """Timed work: reopen the listener, serve waiting clients, drop half lines held too
        long. Returns how long the selector may sleep before more is due (None: no limit)."""
        now = time.monotonic()
        self._serve_waiting(now)
        if not self._listening and now >= self._window_end:
            self._resume_accepting(now)
        self._drop_half_lines(now)
        due = [self._half_line_check]
        if not self._listening:
            due.append(self._window_end)
        if self._waiting:
            due.append(now + (1.0 - self._tokens) / SERVE_PER_SECOND)
        soonest = min(due)
        return None if soonest == math.inf else max(0.0, soonest - now)

    def _deliver(self) -> None:
        self._wake_pending = False  # before draining: a later event then sends a new wake-up
        while self._inbox:
            event = self._inbox.popleft()
            line = encode(event)
            self._history.add(event.kind, line)
            if isinstance(event, StateChanged):  # on this thread: training never waits on it
                record_state(self.run_dir, event.state)
            if self._snapshot is not None:
                self._since.append(line)
                if len(self._since) > SNAPSHOT_TAIL:  # rejoin at the next attach instead
                    self._snapshot, self._since = None, []
            for client in list(self._clients.values()):
                self._queue(client, line)

    def _history_bytes(self) -> bytes:
        """What a new client is sent first. Joining a long history takes milliseconds, so the
        join is kept with the lines published since, and redone once those are many (so a
        client may get up to SNAPSHOT_TAIL frequent events more than History keeps)."""
        if self._snapshot is None:
            self._snapshot, self._since = b"".join(self._history.lines()), []
        return self._snapshot + b"".join(self._since) + _HISTORY_END_LINE

    # ------------------------------------------------------------ new connections

    def _accept(self) -> None:
        """Take what the kernel has queued, up to the window's accepts; then pause the listener
        for the window's rest, leaving the rest queued in the kernel at no cost to us."""
        now = time.monotonic()
        if now >= self._window_end:
            self._window_end, self._accepts_left = now + ACCEPT_WINDOW, ACCEPTS_PER_WINDOW
        while self._accepts_left > 0 and len(self._waiting) < MAX_WAITING:
            try:
                sock, _ = self._listener.accept()
            except OSError:  # BlockingIOError: none left
                break
            self._accepts_left -= 1
            self._admit(sock)
        self._serve_waiting(now)
        if self._accepts_left <= 0 or len(self._waiting) >= MAX_WAITING:
            self._listening = False
            self._selector.unregister(self._listener)

    def _resume_accepting(self, now: float) -> None:
        """At the end of a paused window: poll the listener again, if there is room to wait."""
        if self._listener.fileno() < 0:  # shut down
            return
        if len(self._waiting) >= MAX_WAITING:
            self._purge_waiting()
        if len(self._waiting) >= MAX_WAITING:
            self._window_end = now + ACCEPT_WINDOW  # look again then
            return
        self._listening = True
        self._selector.register(self._listener, selectors.EVENT_READ)

    def _admit(self, sock: socket.socket) -> None:
        """Queue a new connection to be served, unless it is another user's or already gone."""
        pid, uid = peer_credentials(sock)
        if uid is not None and uid != os.geteuid():
            self._notes.note("uid", f"refused a connection from uid {uid} (pid {pid}): this run "
                             f"belongs to uid {os.geteuid()}")
            sock.close()
            return
        if _peer_gone(sock):  # connected and closed before we got to it: nothing to serve
            sock.close()
            return
        self._waiting.append((sock, pid or 0))

    def _purge_waiting(self) -> None:
        alive: deque[tuple[socket.socket, int]] = deque()
        for sock, pid in self._waiting:
            if _peer_gone(sock):
                sock.close()
            else:
                alive.append((sock, pid))
        self._waiting = alive

    def _serve_waiting(self, now: float) -> None:
        """Serve waiting connections, oldest first, as the rate allows."""
        self._tokens = min(float(SERVE_BURST),
                           self._tokens + (now - self._tokens_at) * SERVE_PER_SECOND)
        self._tokens_at = now
        while self._waiting and self._tokens >= 1.0:
            sock, pid = self._waiting.popleft()
            if _peer_gone(sock):
                sock.close()
                continue
            self._tokens -= 1.0
            if self._make_room():
                self._attach(sock, pid, now)
            else:
                with contextlib.suppress(OSError):
                    sock.send(encode(LogLine(level="error", message=f"too many clients "
                                             f"({MAX_CLIENTS}) attached to this run")))
                sock.close()

    def _make_room(self) -> bool:
        """A slot for a newcomer: when all are taken, drop the client holding a half line the
        longest, else the one attached longest without sending a command."""
        if len(self._clients) < MAX_CLIENTS:
            return True
        clients = self._clients.values()
        half = [client for client in clients if client.half_line_since is not None]
        idle = [client for client in clients if not client.commands]
        if half:
            self._drop(min(half, key=lambda client: client.half_line_since),
                       "made room for a new client: held half a line the longest", tell=True)
        elif idle:
            self._drop(min(idle, key=lambda client: client.connected),
                       "made room for a new client: attached the longest without a command",
                       tell=True)
        return len(self._clients) < MAX_CLIENTS

    def _attach(self, sock: socket.socket, pid: int, now: float) -> None:
        sock.setblocking(False)
        self._deliver()  # what was published before this client came is its history
        history = self._history_bytes()
        client = _Client(sock, pid, limit=MAX_BACKLOG_BYTES + len(history), connected=now)
        self._clients[sock] = client
        self._selector.register(sock, selectors.EVENT_READ, client)
        self._queue(client, history)

    # ------------------------------------------------------------ what clients send

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            self._drop(client, "")
            return
        if not data:
            self._end_of_input(client)
            return
        now = time.monotonic()
        if now - client.window_start >= 1.0:
            client.window_start, client.window_bytes = now, 0
            client.window_lines = client.window_bad = 0
            client.warned = False
        client.window_bytes += len(data)
        if client.window_bytes > MAX_BYTES_PER_SECOND:
            self._drop(client, f"sent more than {MAX_BYTES_PER_SECOND // 1024} KiB in a second",
                       tell=True)
            return
        client.inbuf += data
        took_lines = self._take_lines(client)
        if client.sock not in self._clients:
            return
        if len(client.inbuf) > MAX_LINE_BYTES:
            self._drop(client, f"sent a line longer than {MAX_LINE_BYTES} bytes", tell=True)
        elif not client.inbuf:
            client.half_line_since = None
        elif took_lines or client.half_line_since is None:
            client.half_line_since = now
            self._half_line_check = min(self._half_line_check, now + HALF_LINE_SECONDS)

    def _end_of_input(self, client: _Client) -> None:
        """The client closed its side; a half-sent line is discarded. Gone altogether, it is
        dropped now; one that only stopped sending (`echo ... | nc -U`) still gets events."""
        if _peer_gone(client.sock):
            self._drop(client, "")
            return
        client.inbuf.clear()
        client.half_line_since = None
        client.reading = False
        self._update_interest(client)

    def _take_lines(self, client: _Client) -> bool:
        """Handle the complete lines in the client's buffer; whether there were any. Past the
        line rate the rest are skipped in one go, without looking at each."""
        took = False
        while (end := client.inbuf.find(b"\n")) >= 0:
            took = True
            if end > MAX_LINE_BYTES:  # refused before decoding, however much JSON it looks
                self._drop(client, f"sent a line longer than {MAX_LINE_BYTES} bytes", tell=True)
                return took
            if client.window_lines >= MAX_LINES_PER_SECOND:
                self._over_rate(client)
                del client.inbuf[: client.inbuf.rfind(b"\n") + 1]
                return took
            client.window_lines += 1  # blank lines too, or a flood of them would be free
            line = bytes(client.inbuf[:end]).strip()
            del client.inbuf[: end + 1]
            if line:
                self._handle_line(client, line)
            if client.sock not in self._clients:
                return took
        return took

    def _over_rate(self, client: _Client) -> None:
        if not client.warned:
            client.warned = True
            self._reply(client, f"more than {MAX_LINES_PER_SECOND} messages in a second: "
                        "ignoring the rest of this second's")

    def _handle_line(self, client: _Client, line: bytes) -> None:
        try:
            command = decode_command(line)
        except ProtocolError as error:
            client.window_bad += 1
            if client.window_bad > MAX_BAD_LINES_PER_SECOND:
                self._drop(client, f"sent more than {MAX_BAD_LINES_PER_SECOND} messages in a "
                           "second that are not commands", tell=True)
            else:
                self._reply(client, f"ignored a message: {error}")
            return
        if isinstance(command, Stop):  # the reason is echoed to every client: keep it short
            command = Stop(reason=str(command.reason)[:200])
        client.commands += 1
        try:
            self.on_command(command)
        except Exception as error:
            self._reply(client, f"could not apply {command.kind}: {error}")

    def _drop_half_lines(self, now: float) -> None:
        """Drop clients that have held half a line for HALF_LINE_SECONDS: a real client sends
        a line in one write, and a held one takes a slot."""
        if now < self._half_line_check:
            return
        self._half_line_check = math.inf
        for client in list(self._clients.values()):
            if client.half_line_since is None:
                continue
            due = client.half_line_since + HALF_LINE_SECONDS
            if due <= now:
                self._drop(client, f"held half a line for more than {HALF_LINE_SECONDS:g}s",
                           tell=True)
            else:
                self._half_line_check = min(self._half_line_check, due)

    # ------------------------------------------------------------ what clients are sent

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
                sent = client.sock.send(client.out[:WRITE_CHUNK])
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
            self._notes.note(reason, f"disconnected client pid {client.pid}: {reason}")
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
        while self._waiting:
            _close(self._waiting.popleft()[0])

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
    listener.listen(LISTEN_BACKLOG)
    listener.setblocking(False)
    return listener


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def _peer_gone(sock: socket.socket) -> bool:
    """The other end has closed (not just stopped sending): one poll, no read."""
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    return any(events & (select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))


def _lower_this_threads_priority() -> None:
    """On Linux a thread has its own nice value: socket work yields the CPU to training."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), IO_THREAD_NICE)


class _Notes:
    """Notes for host.log, at most one of a kind per NOTE_EVERY seconds: a flood of bad
    clients is a line now and then, with a count, not a line per client."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def note(self, kind: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -math.inf) < NOTE_EVERY:
            self._skipped[kind] = self._skipped.get(kind, 0) + 1
            return
        self._last[kind] = now
        skipped = self._skipped.pop(kind, 0)
        _note(message + (f" (and {skipped} more like it since the last such note)"
                         if skipped else ""))


def _note(message: str) -> None:
    print(f"host: {message}", file=sys.stderr, flush=True)


_HISTORY_END_LINE = encode({"type": HISTORY_END})
