"""Real run hosts, started as a user starts them (`ctui train --detach`), driven by the `ctui`
commands and RunClient: they outlive their terminal, obey every command, shrug off bad clients
and, when killed, show as interrupted and resume. Every host is killed when its test ends."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ctui.engine.events import (
    EpochEnded,
    LogLine,
    Pause,
    Resume,
    SetBatchSize,
    Settings,
    StateChanged,
)
from ctui.engine.host import RunClient, list_runs
from ctui.engine.host.protocol import HOST_FILE, LOG_NAME, SOCKET_NAME, socket_address
from ctui.engine.host.registry import last_epoch, newest_checkpoint, read_json
from ctui.engine.run_folder import process_alive

from helpers import REPO, run_ctui
from helpers import ctui_in_process as ctui

pytestmark = pytest.mark.slow

# A run that stays alive with short epochs: 3 steps of fake data, a record per step, no loggers.
LONG_RUN = ["--task", "fake", "--fake-size", "96", "--batch-size", "32", "--epochs", "1000",
            "--log-interval", "1", "--no-tensorboard", "--checkpoint-every-minutes", "0"]


@pytest.fixture
def runs(isolated_runs):
    """The runs folder ($CTUI_RUNS); every host started in it is killed afterwards."""
    yield isolated_runs
    for run_dir in isolated_runs.glob("*"):
        host = read_json(run_dir / HOST_FILE)
        if process_alive(host):
            os.killpg(host["pid"], signal.SIGKILL)  # its session: the host and its workers


def detach(*flags: str) -> Path:
    result = run_ctui("train", "--detach", *LONG_RUN, *flags, timeout=120)
    assert result.returncode == 0, result.stderr
    return Path(re.search(r"\(host pid \d+\): (\S+)", result.stdout).group(1))


def wait_until(condition, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def metrics_lines(run_dir: Path) -> int:
    return len((run_dir / "metrics.jsonl").read_text().splitlines())


def host_pid(run_dir: Path) -> int:
    return read_json(run_dir / HOST_FILE)["pid"]


def status(run_dir: Path) -> str:
    return next(info.status for info in list_runs(run_dir.parent) if info.run_dir == run_dir)


def test_a_host_outlives_the_terminal_that_started_it(runs, capsys):
    command = f"{sys.executable} -m ctui.tui.main train --detach {' '.join(LONG_RUN)}; sleep 60"
    child, terminal = pty.fork()
    if child == 0:  # a login shell's terminal, with `ctui train --detach` typed in it
        os.chdir(REPO)
        os.execvp("sh", ["sh", "-c", command])
    output = b""
    try:
        while b"watch it" not in output:
            ready, _, _ = select.select([terminal], [], [], 60)
            assert ready, f"ctui train --detach printed no instructions: {output!r}"
            output += os.read(terminal, 4096)
        assert re.search(rb"ctui logs \S+ -f", output) and b"ctui attach" in output
        [info] = list_runs(runs)
        assert info.status == "live"
    finally:
        os.close(terminal)  # the terminal closes: the kernel hangs up on its session
        _, wait_status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(wait_status) and os.WTERMSIG(wait_status) == signal.SIGHUP

    run_dir = info.run_dir
    at_close = metrics_lines(run_dir)
    wait_until(lambda: metrics_lines(run_dir) >= at_close + 5 and last_epoch(run_dir) >= 1,
               what="training to go on")
    recorded = last_epoch(run_dir)
    with RunClient.connect(run_dir) as client:
        history = client.history()
    epochs = [event.epoch for event in history if isinstance(event, EpochEnded)]
    assert epochs[: recorded] == list(range(1, recorded + 1)) and len(epochs) >= recorded
    assert any(isinstance(event, Settings) and event.batch_size == 32 for event in history)
    assert [e.state for e in history if isinstance(e, StateChanged)][-1] == "running"

    code, out, _ = ctui(capsys, "stop")
    assert code == 0 and "stopped" in out
    assert status(run_dir) == "stopped"


def test_every_command_against_a_live_host(runs, capsys):
    run_dir = detach()
    code, out, _ = ctui(capsys, "ls")
    assert code == 0 and re.search(rf"{run_dir.name}\s+live\s+\d+/1000", out)
    assert str(host_pid(run_dir)) in out
    wait_until(lambda: last_epoch(run_dir) >= 1, what="the first epoch")

    # The run folder, its socket and log are the user's alone.
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((run_dir / SOCKET_NAME).stat().st_mode) == 0o600
    assert stat.S_IMODE((run_dir / LOG_NAME).stat().st_mode) == 0o600

    code, out, _ = ctui(capsys, "pause")
    assert code == 0 and "is paused" in out
    paused_at = metrics_lines(run_dir)
    time.sleep(1.5)
    assert metrics_lines(run_dir) == paused_at  # no step was trained while paused
    code, out, _ = ctui(capsys, "pause", run_dir.name)
    assert code == 0 and "already paused" in out

    code, out, err = ctui(capsys, "set", "batch_size=48", "num_workers=0")
    assert code == 0 and "batch_size" in out and "-> 48 from the next step" in out, err
    assert "num_workers is already 0" in out or "-> 0 from the next step" in out, out
    code, _, err = ctui(capsys, "set", run_dir.name, "batch_size=99999")  # > the dataset
    assert code == 2 and "batch_size=99999 refused" in err and len(err.splitlines()) == 1
    for bad in ("learning_rate=0.1", "batch_size=0", "num_workers=lots", "batch_size"):
        code, _, err = ctui(capsys, "set", bad)
        assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, bad

    code, out, _ = ctui(capsys, "resume")
    assert code == 0 and "is running" in out
    wait_until(lambda: metrics_lines(run_dir) > paused_at, what="training to resume")

    code, out, _ = ctui(capsys, "checkpoint")
    assert code == 0 and out.startswith("saved ")
    assert Path(out.split()[1]).is_file()

    code, out, _ = ctui(capsys, "logs")
    epoch_lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert code == 0 and len(epoch_lines) == last_epoch(run_dir) >= 1

    follower = subprocess.Popen([sys.executable, "-m", "ctui.tui.main", "logs", "-f"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=REPO)
    try:
        code, out, _ = ctui(capsys, "stop")
        assert code == 0 and "stopped: stop requested" in out
        followed, errors = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert follower.returncode == 0, errors
    assert followed.splitlines()[0].startswith("epoch 1/1000")
    assert followed.splitlines()[-1].startswith("stopped")

    code, out, _ = ctui(capsys, "ls")
    assert re.search(rf"{run_dir.name}\s+stopped\s+\d+/1000\s+-\s+ckpt-e\d+-s\d+\.pt", out)
    wait_until(lambda: not process_alive(read_json(run_dir / HOST_FILE)), timeout=30,
               what="the host to exit")
    assert not (run_dir / SOCKET_NAME).exists()
    code, _, err = ctui(capsys, "pause")
    assert code == 2 and "no live run" in err


def test_two_clients_and_bad_ones_on_a_live_host(runs):
    run_dir = detach()
    with RunClient.connect(run_dir) as first, RunClient.connect(run_dir) as second:
        first.history(), second.history()
        first.send(Pause())
        for client in (first, second):
            event = client.wait_for(lambda e: isinstance(e, StateChanged), 30)
            assert event.state == "paused"
        second.send(SetBatchSize(16))
        for client in (first, second):
            assert client.wait_for(lambda e: isinstance(e, Settings), 30).batch_size == 16

        # Garbage, a line cut off by a disconnect, and a client gone mid-message.
        # (socket_address: a run folder's path may be longer than AF_UNIX allows)
        with socket.socket(socket.AF_UNIX) as bad, socket_address(run_dir) as address:
            bad.connect(address)
            bad.sendall(b'garbage\n{"type": "nope"}\n{"type": "set_batch_size", "batch_')
        with socket.socket(socket.AF_UNIX) as bad, socket_address(run_dir) as address:
            bad.connect(address)
            bad.sendall(b"\xff" * 100000)

        first.send(Resume())
        for client in (first, second):
            assert client.wait_for(lambda e: isinstance(e, StateChanged), 30).state == "running"
        resumed_at = metrics_lines(run_dir)
        wait_until(lambda: metrics_lines(run_dir) > resumed_at + 3, what="training to go on")
        assert second.wait_for(lambda e: isinstance(e, EpochEnded), 60).batch_size == 16
    assert status(run_dir) == "live"


def test_a_killed_host_shows_interrupted_and_resumes_in_a_new_host(runs, capsys):
    run_dir = detach()
    wait_until(lambda: newest_checkpoint(run_dir) is not None, what="the first epoch's checkpoint")
    os.killpg(host_pid(run_dir), signal.SIGKILL)
    wait_until(lambda: status(run_dir) == "interrupted", timeout=10, what="interrupted")
    code, out, _ = ctui(capsys, "ls")
    assert re.search(rf"{run_dir.name}\s+interrupted\s+\d+/1000\s+-\s+ckpt-e\d+-s\d+\.pt"
                     r"\s+\d+s ago", out), out  # "-": no --monitor, no best
    code, _, err = ctui(capsys, "stop", run_dir.name)
    assert code == 2 and "not live (interrupted)" in err and "--resume" in err

    result = run_ctui("train", "--detach", "--resume", "--run-dir", str(run_dir), timeout=120)
    assert result.returncode == 0 and "resumed run" in result.stdout, result.stderr
    assert status(run_dir) == "live"
    with RunClient.connect(run_dir) as client:
        history = client.history()
        # The epochs the checkpoint (saved at the end of epoch 1 or later) brings back...
        assert any(isinstance(e, LogLine) and e.message.startswith("resumed from ")
                   for e in history)
        restored = [e.epoch for e in history if isinstance(e, EpochEnded)]
        assert restored[:1] == [1] and restored == list(range(1, len(restored) + 1))
        later = client.wait_for(lambda e: isinstance(e, EpochEnded), 60)
    assert later is not None and later.epoch == len(restored) + 1  # ...and it goes on from there
    code, out, _ = ctui(capsys, "stop", str(run_dir))
    assert code == 0 and status(run_dir) == "stopped"


@pytest.mark.parametrize(("flags", "message"), [
    (["--task", "missing_task.py:build"], "--task missing_task.py:build: file"),
    (["--device", "cuda"], "--device"),
], ids=["missing task file", "no cuda"])
def test_a_run_the_host_cannot_start_is_one_line_and_leaves_nothing(runs, flags, message):
    if "cuda" in flags:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    result = run_ctui("train", "--detach", *flags, timeout=120)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert "Traceback" not in result.stderr
    assert list(runs.glob("*")) == []  # no half-made run folder to confuse `ctui ls`


def test_tune_from_the_shell_times_trials_and_applies_the_best(runs, capsys):
    run_dir = detach()
    wait_until(lambda: metrics_lines(run_dir) >= 3, what="training")
    code, out, err = ctui(capsys, "tune", "--budget", "4", "--apply")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].split() == ["batch", "workers", "samples/s", "range", "trials"]
    rows = [line.split() for line in lines[2:] if line.split() and line.split()[0].isdigit()]
    assert rows[0][:2] == ["32", "0"]  # the run's own batch size, no workers first
    best = next(row for row in rows if "<-" in row)
    assert lines[-1] in (f"applied: batch_size={best[0]} num_workers={best[1]}",
                         f"kept: batch_size={best[0]} num_workers={best[1]} (the current "
                         "settings)")
    with RunClient.connect(run_dir) as client:
        settings = [e for e in client.history() if isinstance(e, Settings)][-1]
    assert (settings.batch_size, settings.num_workers) == (int(best[0]), int(best[1]))
    assert ctui(capsys, "stop")[0] == 0


def test_a_headless_run_shows_live_and_says_how_to_stop_it(runs, capsys):
    process = subprocess.Popen([sys.executable, "-m", "ctui.tui.main", "train", "--headless",
                                *LONG_RUN], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: any(info.status == "live" for info in list_runs(runs)),
                   what="the headless run to show as live")
        (info,) = list_runs(runs)
        assert info.pid == process.pid
        code, _, err = ctui(capsys, "pause")
        assert code != 0 and f"kill -TERM {process.pid}" in err
        assert len(err.strip().splitlines()) == 1
        process.terminate()
        assert process.wait(timeout=60) == 3
        assert [i.status for i in list_runs(runs)] == ["stopped"]
    finally:
        process.kill()
