"""Attacks on a run's control socket (issue: security, items 4 and 14).

A listener planted as control.sock by another user (or reached through a link) is refused by
the client before it is told anything; clients that hold half a line, fill every slot, flood
connections or send garbage cost the host little and never keep a real command out. In this
process, with a HostServer and a recording stand-in for the engine: no torch, no training."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ctui.engine.events import CheckpointNow, EpochEnded, Pause, SetBatchSize
from ctui.engine.host import HostUnavailable, RunClient
from ctui.engine.host import server as server_module
from ctui.engine.host.protocol import MAX_LINE_BYTES, SOCKET_NAME
from ctui.engine.host.server import HostServer

from helpers import wait_until


@pytest.fixture
def served(tmp_path):
    """(run folder, server, the commands it applied)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    commands: list = []
    server = HostServer(run_dir, commands.append).start()
    yield run_dir, server, commands
    server.shutdown(flush_seconds=0.5)


def raw_connect(run_dir: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(run_dir / SOCKET_NAME))
    return sock


def read_until_closed(sock: socket.socket, timeout: float = 10.0) -> list[dict] | None:
    """Every message until the host hangs up; None if it has not within timeout."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        return None
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def errors_in(messages: list[dict]) -> list[str]:
    return [m["message"] for m in messages if m["type"] == "log" and m["level"] == "error"]


def received(sock: socket.socket, needle: bytes, timeout: float = 10.0) -> bool:
    """Whether needle arrives on sock within timeout."""
    sock.settimeout(timeout)
    data = b""
    while needle not in data:
        try:
            chunk = sock.recv(65536)
        except OSError:
            return False
        if not chunk:
            return False
        data += chunk
    return True


def checkpoint_gets_through(run_dir: Path, commands: list) -> bool:
    """What `ctui checkpoint` does: connect, read the history, send one line; applied?"""
    with RunClient.connect(run_dir) as client:
        client.history()
        client.send(CheckpointNow())
        return wait_until(lambda: CheckpointNow() in commands, timeout=10.0)


# ---------------------------------------------------------------- item 4: a spoofed host


@pytest.fixture
def open_run(other_user):
    """A live run whose folder another user may write to (a careless chmod): (run folder,
    server, commands applied). Not under tmp_path, which the other user cannot reach."""
    run_dir = Path(tempfile.mkdtemp(dir="/tmp", prefix="ctui-open-run-"))
    os.chmod(run_dir, 0o777)
    commands: list = []
    server = HostServer(run_dir, commands.append).start()
    try:
        yield run_dir, server, commands
    finally:
        server.shutdown(flush_seconds=0.5)
        subprocess.run(["rm", "-rf", str(run_dir)], check=False)


def plant_listener(path: Path, uid: int, gid: int) -> tuple[int, int]:
    """Fork a child that, as uid, puts its own listener in place of path and answers every
    connection like a host that has stopped. Returns (its pid, the read end of a pipe that
    gets the bytes it was sent, once it is killed)."""
    ready_r, ready_w = os.pipe()
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: plain system calls only, then leave without cleanup
        received = 0
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            os.unlink(path)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(path))
            listener.listen(8)
            os.write(ready_w, b"ready")
            signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
            while True:
                conn, _ = listener.accept()
                conn.sendall(b'{"type":"history_end"}\n'
                             b'{"type":"state","state":"stopped","reason":"stopped"}\n')
                conn.settimeout(1)
                try:
                    received += len(conn.recv(65536))
                except OSError:
                    pass
                conn.close()
                os.write(report_w, f"{received}\n".encode())
        except BaseException as error:
            os.write(ready_w, f"failed: {error}".encode())
        os._exit(1)
    os.close(ready_w)
    os.close(report_w)
    answer = os.read(ready_r, 200).decode()
    os.close(ready_r)
    assert answer == "ready", answer
    return pid, report_r


def test_a_listener_planted_by_another_user_is_refused(open_run, other_user):
    run_dir, _, commands = open_run
    path = run_dir / SOCKET_NAME
    pid, report = plant_listener(path, other_user.pw_uid, other_user.pw_gid)
    try:
        assert os.stat(path).st_uid == other_user.pw_uid  # the host's socket was replaced
        with pytest.raises(HostUnavailable) as refused:
            RunClient.connect(run_dir, timeout=2)
        message = str(refused.value)
        assert f"served by uid {other_user.pw_uid}" in message and str(path) in message
        assert f"(uid {os.geteuid()})" in message and len(message.splitlines()) == 1
    finally:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
    with os.fdopen(report) as got:
        sent = got.read().split()
    assert sent in ([], ["0"])  # it was told nothing, so no command went astray
    assert commands == []


def test_a_link_in_place_of_the_socket_is_refused(served, tmp_path):
    real_dir, _, commands = served  # the link leads to a live host of this very user
    planted = tmp_path / "planted"
    planted.mkdir(mode=0o700)
    (planted / SOCKET_NAME).symlink_to(real_dir / SOCKET_NAME)
    with pytest.raises(HostUnavailable, match="is a symbolic link: refusing"):
        RunClient.connect(planted, timeout=1)
    (planted / SOCKET_NAME).unlink()
    os.mkfifo(planted / SOCKET_NAME)  # nor anything else that is not a socket
    with pytest.raises(HostUnavailable, match="is not a socket: refusing"):
        RunClient.connect(planted, timeout=1)
    assert commands == []
    with RunClient.connect(real_dir) as client:  # the real one is still fine
        client.history()


# ---------------------------------------------------------------- item 14: socket abuse


@pytest.mark.slow
def test_a_real_command_gets_through_70_clients_holding_half_a_line(served):
    run_dir, server, commands = served
    holders = []
    try:
        for _ in range(70):  # more than MAX_CLIENTS, so every slot is taken
            sock = raw_connect(run_dir)
            sock.sendall(b'{"type": "che')
            holders.append(sock)
        assert wait_until(lambda: server.client_count == server_module.MAX_CLIENTS,
                          timeout=10.0)
        assert checkpoint_gets_through(run_dir, commands)
        assert commands == [CheckpointNow()]  # the half lines were never taken for commands
    finally:
        for sock in holders:
            sock.close()


def test_a_client_holding_half_a_line_is_dropped_after_the_timeout(served, monkeypatch):
    monkeypatch.setattr(server_module, "HALF_LINE_SECONDS", 0.3)
    run_dir, server, commands = served
    with raw_connect(run_dir) as patient, raw_connect(run_dir) as holder:
        patient.sendall(b'{"type": "pa')  # a line in two writes, in time: applied
        time.sleep(0.1)
        patient.sendall(b'use"}\n')
        holder.sendall(b'{"type": "stop", "reason": "ha')
        messages = read_until_closed(holder)
        assert messages is not None, "still connected long after the timeout"
        assert any("held half a line" in text for text in errors_in(messages))
        time.sleep(0.5)  # connected, idle, no half line: fine however long
        server.publish(EpochEnded(epoch=1))
        assert received(patient, b'"epoch"')
    assert commands == [Pause()]


@pytest.mark.slow
def test_a_connection_flood_is_accepted_only_at_the_bounded_rate(tmp_path, monkeypatch):
    monkeypatch.setattr(server_module, "ACCEPTS_PER_WINDOW", 10)  # 100 a second
    monkeypatch.setattr(server_module, "LISTEN_BACKLOG", 32)
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    commands: list = []
    server = HostServer(run_dir, commands.append).start()
    try:
        with RunClient.connect(run_dir) as watcher:
            watcher.history()
            flood = subprocess.Popen([sys.executable, "-c", FLOOD, str(run_dir / SOCKET_NAME),
                                      "1.5"], stdout=subprocess.PIPE, text=True)
            try:
                assert flood.stdout.readline().strip() == "full"  # the host's queue is
                # While the flood lasts, a real command still gets through, and events flow.
                assert checkpoint_gets_through(run_dir, commands)
                server.publish(EpochEnded(epoch=1))
                assert watcher.wait_for(lambda e: isinstance(e, EpochEnded), 10) is not None
                assert flood.poll() is None  # all that while
            finally:
                made, refused, seconds = json.loads(flood.communicate(timeout=60)[0])
        # Connects beyond the kernel's queue and the windows' accepts failed at once (EAGAIN)
        # instead of costing the host.
        windows = seconds / server_module.ACCEPT_WINDOW + 2
        assert made <= 33 + 10 * windows, (made, refused, seconds)
        assert refused > 10 * made
    finally:
        server.shutdown(flush_seconds=0.5)


FLOOD = """
import json, socket, sys, time
path, seconds = sys.argv[1], float(sys.argv[2])
made = refused = 0
start = time.monotonic()
while time.monotonic() - start < seconds:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.connect(path)
        made += 1
    except BlockingIOError:
        if not refused:
            print("full", flush=True)
        refused += 1
    sock.close()
print(json.dumps([made, refused, time.monotonic() - start]))
"""


def test_a_stream_of_garbage_gets_the_client_dropped_and_long_lines_are_not_decoded(served):
    run_dir, server, commands = served
    with raw_connect(run_dir) as typo:  # a few mistakes are answered, not punished
        typo.sendall(b"oops\n" * 3 + b'{"type": "set_batch_size", "batch_size": 8}\n')
        assert wait_until(lambda: commands == [SetBatchSize(8)], timeout=10.0)
        with raw_connect(run_dir) as flooder:
            flooder.sendall(b"garbage\n" * 1000)
            messages = read_until_closed(flooder)
        assert messages is not None
        assert any("messages in a second that are not commands" in text
                   for text in errors_in(messages))
        with raw_connect(run_dir) as long_liner:  # JSON-looking, newline and all: refused
            long_liner.sendall(b'{"type": "' + b"x" * (MAX_LINE_BYTES * 4) + b'"}\n')
            messages = read_until_closed(long_liner)
        assert messages is not None
        assert any(f"a line longer than {MAX_LINE_BYTES} bytes" in text
                   for text in errors_in(messages))
        assert not any(m["type"] == "log" and "ignored a message" in m["message"]
                       for m in messages)  # dropped before any decoding
        assert server.client_count == 1  # the typo client is still attached
    assert commands == [SetBatchSize(8)]
