"""The run host's socket server and run registry, in this process with a scripted engine: what a
client is sent on attach, and that no client (garbage, truncated, flooding, slow, another user)
can crash or stall the host. Fast: no torch, no training."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from ctui.engine.events import (
    EpochEnded,
    LogLine,
    Pause,
    Resume,
    SetBatchSize,
    Settings,
    StateChanged,
    StepLogged,
)
from ctui.engine.host import (
    HostUnavailable,
    RunClient,
    RunNotFound,
    find_live_run,
    list_runs,
)
from ctui.engine.host.protocol import END_FILE, HOST_FILE, LOCK_NAME, SOCKET_NAME
from ctui.engine.host.server import MAX_LINES_PER_SECOND, HostServer

from helpers import wait_until


class ScriptedEngine:
    """Stands in for the engine: records commands and answers pause/resume like it does."""

    def __init__(self) -> None:
        self.commands = []
        self.server: HostServer | None = None

    def send(self, command) -> None:
        self.commands.append(command)
        if isinstance(command, Pause):
            self.server.publish(StateChanged(state="paused", reason="paused by request"))
        elif isinstance(command, Resume):
            self.server.publish(StateChanged(state="running", reason="resumed"))
        elif isinstance(command, SetBatchSize):
            self.server.publish(Settings(batch_size=command.batch_size))


@pytest.fixture
def served(tmp_path):
    run_dir = tmp_path / "runs" / "digits-1"
    run_dir.mkdir(parents=True, mode=0o700)
    engine = ScriptedEngine()
    server = engine.server = HostServer(run_dir, engine.send).start()
    yield run_dir, server, engine
    server.shutdown(flush_seconds=0.5)


def raw_connect(run_dir: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(run_dir / SOCKET_NAME))
    return sock


def read_messages(sock: socket.socket, until, timeout: float = 5.0) -> list[dict]:
    """Messages from the host until until(messages) holds, EOF or the timeout."""
    buffer, messages = b"", []
    deadline = time.monotonic() + timeout
    while not until(messages) and time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not data:
            break
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        messages += [json.loads(line) for line in lines if line]
    return messages


def warnings_in(messages: list[dict]) -> list[str]:
    return [m["message"] for m in messages if m["type"] == "log" and m["level"] == "warning"]


# ---------------------------------------------------------------- what a client sees


def test_a_new_client_gets_the_history_then_live_events(served):
    run_dir, server, _ = served
    past = [StateChanged(state="running", reason="started"), Settings(batch_size=64, epochs=3),
            EpochEnded(epoch=1, epochs=3), LogLine(message="hello"), EpochEnded(epoch=2, epochs=3)]
    for event in past:
        server.publish(event)
    with RunClient.connect(run_dir) as client:
        assert [e.to_dict() for e in client.history()] == [e.to_dict() for e in past]
        assert client.caught_up
        server.publish(EpochEnded(epoch=3, epochs=3))
        live = client.wait_for(lambda e: True, timeout=5)
    assert isinstance(live, EpochEnded) and live.epoch == 3


def test_history_keeps_every_epoch_and_the_latest_of_frequent_events(served):
    run_dir, server, _ = served
    for epoch in range(1, 301):
        for step in range(20):
            server.publish(StepLogged(epoch=epoch, step=step))
        server.publish(LogLine(message=f"line {epoch}"))
        server.publish(EpochEnded(epoch=epoch, epochs=300))
    with RunClient.connect(run_dir) as client:
        history = client.history()
    epochs = [e.epoch for e in history if isinstance(e, EpochEnded)]
    assert epochs == list(range(1, 301))
    steps = [(e.epoch, e.step) for e in history if isinstance(e, StepLogged)]
    assert len(steps) == 1000 and steps[-1] == (300, 19) and steps == sorted(steps)
    logs = [e.message for e in history if isinstance(e, LogLine)]
    assert len(logs) == 200 and logs[-1] == "line 300"
    times = [e.time for e in history]
    assert times == sorted(times)  # still in the order it happened


def test_commands_from_a_client_reach_the_engine(served):
    run_dir, _, engine = served
    with RunClient.connect(run_dir) as client:
        client.history()
        client.send(SetBatchSize(128))
        answer = client.wait_for(lambda e: isinstance(e, Settings), timeout=5)
    assert answer.batch_size == 128
    assert engine.commands == [SetBatchSize(128)]


def test_two_clients_see_each_others_commands_take_effect(served):
    run_dir, _, _ = served
    with RunClient.connect(run_dir) as first, RunClient.connect(run_dir) as second:
        first.history(), second.history()
        first.send(Pause())
        for client in (first, second):
            assert client.wait_for(lambda e: isinstance(e, StateChanged), 5).state == "paused"
        second.send(Resume())
        for client in (first, second):
            assert client.wait_for(lambda e: isinstance(e, StateChanged), 5).state == "running"


def test_events_iterator_ends_when_the_host_goes_away(served):
    run_dir, server, _ = served
    server.publish(EpochEnded(epoch=1))
    client = RunClient.connect(run_dir)
    seen = []
    reader = threading.Thread(target=lambda: seen.extend(client.events()))
    reader.start()
    assert wait_until(lambda: len(seen) == 1)
    client.send(Pause())  # another thread sends while the reader iterates
    assert wait_until(lambda: len(seen) == 2)
    server.shutdown(flush_seconds=1.0)
    reader.join(5)
    assert not reader.is_alive()
    assert [e.kind for e in seen] == ["epoch", "state"]
    client.close()


# ---------------------------------------------------------------- clients that misbehave


def test_garbage_is_answered_with_a_warning_and_ignored(served):
    run_dir, server, engine = served
    garbage = [b"not json", b"[1, 2]", b'{"type": "explode"}', b'{"type": ["x"]}',
               b"\xff\xfe\x00", b'{"type": "set_batch_size", "batch_size": 8, "oops": }']
    with raw_connect(run_dir) as sock:
        read_messages(sock, lambda m: any(x["type"] == "history_end" for x in m))
        sock.sendall(b"\n".join(garbage) + b'\n{"type": "pause"}\n')
        messages = read_messages(sock, lambda m: len(warnings_in(m)) >= len(garbage)
                                 and any(x["type"] == "state" for x in m))
    assert len(warnings_in(messages)) == len(garbage)
    assert all(text.startswith("ignored a message") for text in warnings_in(messages))
    assert engine.commands == [Pause()]
    with RunClient.connect(run_dir) as client:  # the host still serves
        assert [e.kind for e in client.history()] == ["state"]


def test_a_client_that_disconnects_mid_message_changes_nothing(served):
    run_dir, server, engine = served
    with raw_connect(run_dir) as sock:
        sock.sendall(b'{"type": "pa')
    with raw_connect(run_dir) as sock:  # and one that closes with the line unfinished
        sock.sendall(b'{"type": "stop", "reason": "half')
        sock.shutdown(socket.SHUT_WR)
    server.publish(EpochEnded(epoch=1))  # sending to them finds both gone
    assert wait_until(lambda: server.client_count == 0)
    with RunClient.connect(run_dir) as client:
        assert [e.kind for e in client.history()] == ["epoch"]
    assert engine.commands == []


def test_a_client_may_close_its_sending_side_and_still_listen(served):
    run_dir, server, engine = served
    with raw_connect(run_dir) as sock:
        sock.sendall(b'{"type": "pause"}\n')
        sock.shutdown(socket.SHUT_WR)  # like `echo ... | nc -U control.sock`
        messages = read_messages(sock, lambda m: any(x["type"] == "state" for x in m))
    assert engine.commands == [Pause()]
    assert [m["state"] for m in messages if m["type"] == "state"] == ["paused"]


def test_an_endless_line_disconnects_only_that_client(served):
    run_dir, server, _ = served
    with RunClient.connect(run_dir) as good, raw_connect(run_dir) as bad:
        good.history()
        with pytest.raises(OSError):
            for _ in range(100):  # 6.4 MB without a newline; the host hangs up on us
                bad.sendall(b"x" * 65536)
                time.sleep(0.001)
        server.publish(EpochEnded(epoch=7))
        assert good.wait_for(lambda e: isinstance(e, EpochEnded), 5).epoch == 7


def test_a_flood_of_commands_is_cut_to_a_bounded_rate(served):
    run_dir, server, engine = served
    with raw_connect(run_dir) as sock:
        read_messages(sock, lambda m: any(x["type"] == "history_end" for x in m))
        sock.sendall(b'{"type": "set_batch_size", "batch_size": 8}\n' * 2000)
        messages = read_messages(sock, lambda m: any("messages in a second" in w
                                                     for w in warnings_in(m)))
    assert any("messages in a second" in w for w in warnings_in(messages))
    assert MAX_LINES_PER_SECOND <= len(engine.commands) <= 3 * MAX_LINES_PER_SECOND
    with RunClient.connect(run_dir) as client:  # still serving
        client.history()


def test_a_client_that_never_reads_is_dropped_and_never_stalls_the_engine(served):
    run_dir, server, _ = served
    stalled = raw_connect(run_dir)  # connects, never reads
    with RunClient.connect(run_dir) as reader:
        reader.history()
        received = []
        consumer = threading.Thread(target=lambda: received.extend(reader.events()))
        consumer.start()
        big = "x" * 20000
        for number in range(1000):  # 20 MB: far more than a socket buffer and the backlog
            server.publish(LogLine(message=f"{number} {big}"))  # returns at once, always
            time.sleep(0.002)  # at a pace a reading client keeps up with
        assert wait_until(lambda: len(received) == 1000, timeout=20)
        assert wait_until(lambda: server.client_count == 1)  # the stalled one is gone
        reader.close()
        consumer.join(5)
    stalled.close()


# ---------------------------------------------------------------- privacy


def test_socket_is_private_to_the_user(served):
    run_dir, _, _ = served
    assert stat.S_IMODE(os.stat(run_dir / SOCKET_NAME).st_mode) == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another user")
def test_a_peer_of_another_user_is_refused():
    # Permissions loosened, as a careless chmod might, so only SO_PEERCRED guards the run.
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        run_dir = Path(folder)
        os.chmod(run_dir, 0o755)
        server = HostServer(run_dir, lambda command: None).start()
        try:
            server.publish(EpochEnded(epoch=1))
            os.chmod(run_dir / SOCKET_NAME, 0o777)
            assert received_as_another_user(run_dir / SOCKET_NAME) == "0"  # hung up on
            with RunClient.connect(run_dir) as client:  # the owner still gets the history
                assert [e.kind for e in client.history()] == ["epoch"]
        finally:
            server.shutdown(flush_seconds=0.5)


def received_as_another_user(path: Path) -> str:
    """Bytes received (or the error) by a forked child that connects as user nobody."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: only plain system calls, then leave without cleanup
        try:
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(5)
                sock.connect(str(path))
                result = str(len(sock.recv(65536)))
        except OSError as error:
            result = f"error: {error}"
        os.write(write_end, result.encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        return pipe.read()


# ---------------------------------------------------------------- the run registry


def make_run(runs: Path, name: str, epochs: int = 5, done: int = 0) -> Path:
    run_dir = runs / name
    run_dir.mkdir(parents=True, mode=0o700)
    (run_dir / "config.json").write_text(json.dumps({"config": {"epochs": epochs}}))
    records = [json.dumps({"type": "epoch", "epoch": n}) for n in range(1, done + 1)]
    (run_dir / "metrics.jsonl").write_text("".join(line + "\n" for line in records))
    return run_dir


def pretend_live(run_dir: Path) -> int:
    """Record this test process as the run's host and take its lock; returns the lock fd."""
    me = psutil.Process()
    (run_dir / HOST_FILE).write_text(json.dumps({"pid": me.pid, "started": 1.0,
                                                 "created": me.create_time()}))
    fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_list_runs_tells_live_ended_and_interrupted_runs_apart(isolated_runs):
    runs = isolated_runs
    live = make_run(runs, "a-live", done=2)
    lock = pretend_live(live)
    for state in ("finished", "stopped", "failed"):
        run_dir = make_run(runs, f"b-{state}", done=1)
        (run_dir / HOST_FILE).write_text(json.dumps({"pid": dead_pid(), "started": 5.0}))
        (run_dir / END_FILE).write_text(json.dumps({"state": state, "host_started": 5.0}))
    killed = make_run(runs, "c-killed", done=3)
    (killed / HOST_FILE).write_text(json.dumps({"pid": dead_pid(), "started": 7.0}))
    resumed = make_run(runs, "d-resumed-then-killed")  # its end record is from an older host
    (resumed / HOST_FILE).write_text(json.dumps({"pid": dead_pid(), "started": 9.0}))
    (resumed / END_FILE).write_text(json.dumps({"state": "stopped", "host_started": 8.0}))
    headless = make_run(runs, "e-headless", epochs=2, done=2)
    checkpoints = headless / "checkpoints"
    checkpoints.mkdir()
    for name in ("ckpt-e0002-s000000010.pt", "ckpt-e0003-s000000020.pt", "notes.txt"):
        (checkpoints / name).write_bytes(b"")
    try:
        found = {info.name: info for info in list_runs(runs)}
    finally:
        os.close(lock)
    assert {name: info.status for name, info in found.items()} == {
        "a-live": "live", "b-finished": "finished", "b-stopped": "stopped",
        "b-failed": "failed", "c-killed": "interrupted", "d-resumed-then-killed": "interrupted",
        "e-headless": "finished"}
    assert found["a-live"].pid == os.getpid() and found["c-killed"].pid is None
    assert (found["a-live"].epoch, found["a-live"].epochs) == (2, 5)
    assert found["e-headless"].last_checkpoint == checkpoints / "ckpt-e0003-s000000020.pt"
    assert 0 <= found["e-headless"].checkpoint_age < 60


def test_a_stale_socket_does_not_make_a_run_live(isolated_runs):
    run_dir = make_run(isolated_runs, "killed")
    (run_dir / HOST_FILE).write_text(json.dumps({"pid": dead_pid(), "started": 1.0}))
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(run_dir / SOCKET_NAME))  # a socket file nobody listens on any more
    stale.close()
    assert [info.status for info in list_runs(isolated_runs)] == ["interrupted"]
    with pytest.raises(HostUnavailable, match="no live host"):
        RunClient.connect(run_dir, timeout=1)
    with pytest.raises(RunNotFound, match="not live"):
        find_live_run(isolated_runs, "killed")


def test_a_reused_pid_does_not_make_a_run_live(isolated_runs):
    run_dir = make_run(isolated_runs, "old")
    lock = pretend_live(run_dir)
    host = json.loads((run_dir / HOST_FILE).read_text())
    host["created"] -= 3600  # our pid, but a process started an hour earlier held it then
    (run_dir / HOST_FILE).write_text(json.dumps(host))
    try:
        assert [info.status for info in list_runs(isolated_runs)] == ["interrupted"]
    finally:
        os.close(lock)


def test_find_live_run_picks_the_only_live_run_or_asks(isolated_runs):
    with pytest.raises(RunNotFound, match="no live run"):
        find_live_run(isolated_runs)
    make_run(isolated_runs, "ended", done=5)
    first = make_run(isolated_runs, "first")
    locks = [pretend_live(first)]
    try:
        assert find_live_run(isolated_runs).name == "first"
        assert find_live_run(isolated_runs, str(first)).run_dir == first.resolve()
        second = make_run(isolated_runs, "second")
        locks.append(pretend_live(second))
        with pytest.raises(RunNotFound, match=r"2 runs are live .*first, second"):
            find_live_run(isolated_runs)
        assert find_live_run(isolated_runs, "second").name == "second"
        with pytest.raises(RunNotFound, match="no run 'third'"):
            find_live_run(isolated_runs, "third")
    finally:
        for lock in locks:
            os.close(lock)


def test_client_side_imports_neither_torch_nor_textual():
    code = ("import sys, ctui.engine.host, ctui.engine.host.client, ctui.engine.cli.runs_cmds; "
            "print(sorted(m for m in ('torch', 'textual') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
