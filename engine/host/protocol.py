"""The wire between a run host and its clients, and the files a host keeps in its run folder.

One Unix socket per run, RUN_DIR/control.sock (mode 0600), carrying JSON lines:
client -> host `Command.to_dict()`, host -> client `Event.to_dict()`. After a new client's
history the host sends one framing line, `{"type": "history_end"}`, so a client knows where
the past ends and live events begin; `RunClient` consumes it and yields only events.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..events import Command, Event
from ..run_folder import LOCK_NAME
from ..runs import END_FILE, HOST_FILE

__all__ = ["END_FILE", "HOST_FILE", "LOCK_NAME"]  # and the wire's names below

SOCKET_NAME = "control.sock"
LOG_NAME = "host.log"  # the host's stdout and stderr
REQUEST_NAME = "host-request.json"  # settings handed from `start_host` to the new host

HISTORY_END = "history_end"
# A command is under 300 bytes (a stop reason is cut to 200 characters): a longer line is
# garbage or an attack, refused before it is decoded.
MAX_LINE_BYTES = 4 * 1024


class ProtocolError(ValueError):
    """A line from a client that is not a command; the message says what was wrong."""


def encode(message: Command | Event | dict[str, Any]) -> bytes:
    data = message if isinstance(message, dict) else message.to_dict()
    return (json.dumps(data, separators=(",", ":"), default=str) + "\n").encode()


def decode_command(line: bytes) -> Command:
    """A client's line -> Command, or ProtocolError naming what was wrong."""
    try:
        data = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProtocolError(f"not JSON: {_preview(line)}") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"not a JSON object: {_preview(line)}")
    try:
        return Command.from_dict(data)
    except Exception as error:  # unknown type, unhashable type, wrong fields
        raise ProtocolError(f"not a command ({error})") from None


def decode_event(data: dict[str, Any]) -> Event | None:
    """A host's message -> Event; None for kinds this client does not know (a newer host)."""
    try:
        return Event.from_dict(data)
    except Exception:
        return None


@contextlib.contextmanager
def socket_address(run_dir: Path) -> Iterator[str]:
    """The path to bind or connect to. AF_UNIX paths are limited to ~107 bytes, so a deep run
    folder is reached through /proc/self/fd/N, an open handle on the folder (Linux)."""
    path = str(Path(run_dir) / SOCKET_NAME)
    if len(path.encode()) < 100 or not os.path.isdir("/proc/self/fd"):
        yield path
        return
    folder = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{folder}/{SOCKET_NAME}"
    finally:
        os.close(folder)


def peer_credentials(sock: socket.socket) -> tuple[int | None, int | None]:
    """(pid, uid) of the process at the other end, where the platform tells (Linux)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None, None  # elsewhere the 0600 socket in a 0700 folder is the guard
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", raw)
    return pid, uid


def _preview(line: bytes) -> str:
    text = line[:60].decode(errors="replace")
    return repr(text + ("..." if len(line) > 60 else ""))
