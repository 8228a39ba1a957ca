"""Starting a run host: a background process that belongs to the run, not to the terminal."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..config import RunConfig
from ..run_folder import new_run_folder, open_run_folder
from ..runs import new_run_name
from ..safefs import UnsafePathError, open_append
from .errors import HostStartError
from .protocol import LOG_NAME, REQUEST_NAME, peer_credentials, socket_address
from .registry import host_is_live, read_json, write_json

START_TIMEOUT = 600.0  # a first run may download its dataset before the socket opens


def start_host(config: RunConfig, resume: str | None = None, *,
               timeout: float = START_TIMEOUT) -> Path:
    """Launch a detached host that builds `Engine(config, resume=resume)` and serves it; return
    the run folder once its socket accepts connections. Raises HostStartError (one line, with
    an exit code) when the host cannot start the run: bad task, device, checkpoint..."""
    run_dir, fresh = _claim_run_dir(config, resume)
    if not fresh and host_is_live(run_dir):
        raise HostStartError(f"run {run_dir.name} is live already: attach to it (ctui attach "
                             f"{run_dir}) or stop it first (ctui stop {run_dir})", 2)
    config = config.replace(run_dir=str(run_dir))
    return launch_host(run_dir, "ctui.engine.host.serve",
                       {"config": config.to_dict(), "resume": resume}, fresh=fresh,
                       timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def launch_host(run_dir: Path, module: str, request_data: dict, *, fresh: bool,
                timeout: float = START_TIMEOUT, env: dict[str, str] | None = None,
                cwd: Path | None = None) -> Path:
    """Start `python -m module RUN_DIR REQUEST` as a detached host (its own session, no
    terminal), handing it request_data in a request file of its own; return once it serves
    RUN_DIR/control.sock. A host that fails to start leaves no new run folder behind when its
    error report says it all (fresh: the folder was made for this start)."""
    # A request of its own per start: two starts of one run never read each other's.
    request = run_dir / f"{REQUEST_NAME}.{secrets.token_hex(4)}"
    write_json(request, request_data)
    log = open_append(run_dir / LOG_NAME)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", module, str(run_dir), request.name],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            env=env if env is not None else dict(os.environ), cwd=cwd)
    finally:
        os.close(log)
    try:
        _wait_until_serving(process, run_dir, timeout)
    except HostStartError as error:
        if fresh and error.complete:  # nothing was trained: leave no half-made run behind
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    # Reap the host when it exits if this process (a panel) outlives it; never blocks.
    threading.Thread(target=process.wait, name="ctui-host-reaper", daemon=True).start()
    return run_dir


def _claim_run_dir(config: RunConfig, resume: str | None) -> tuple[Path, bool]:
    """(run folder, made just now). An existing folder must be the user's own run folder; a
    new run gets a folder nobody could have made beforehand, even when two start at once."""
    try:
        if config.run_dir:
            path = Path(config.run_dir).absolute()
            if resume == "latest":
                return open_run_folder(path), False
            fresh = not os.path.lexists(path)
            return new_run_folder(str(path), config.runs_dir, new_run_name(config)), fresh
        if resume == "latest":
            raise HostStartError("--resume: say which run to continue with --run-dir DIR", 2)
        runs = Path(config.runs_dir).absolute()
        return new_run_folder(None, str(runs), new_run_name(config)), True
    except UnsafePathError as error:
        raise HostStartError(error.strerror, 2) from None


def _wait_until_serving(process: subprocess.Popen, run_dir: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if _accepts(run_dir, process.pid):
            return
        code = process.poll()
        if code is not None:
            if _ended_by(run_dir, process.pid):  # served, and done before we looked
                return
            raise _start_failure(run_dir, process.pid, code)
        if time.monotonic() > deadline:
            raise HostStartError(f"the run host (pid {process.pid}) has not opened its socket "
                                 f"after {timeout:.0f}s; it may still be starting: see "
                                 f"{run_dir / LOG_NAME}")
        time.sleep(0.05)


def _ended_by(run_dir: Path, pid: int) -> bool:
    """The host with this pid recorded how its run ended (a program that exited at once)."""
    from .protocol import END_FILE

    return read_json(run_dir / END_FILE).get("pid") == pid and bool(
        read_json(run_dir / END_FILE).get("state"))


def _accepts(run_dir: Path, pid: int) -> bool:
    """The new host serves: its socket accepts, and it is this host (not a leftover listener
    of a killed one, kept open by a DataLoader worker that has not noticed yet)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe, \
            socket_address(run_dir) as address:
        probe.settimeout(1.0)  # a full queue (a connection flood) fails now: try again
        try:
            probe.connect(address)
        except OSError:
            return False
        peer_pid, peer_uid = peer_credentials(probe)
    return peer_pid is None or (_is_or_under(peer_pid, pid) and
                                peer_uid in (None, os.geteuid()))


def _is_or_under(peer_pid: int, pid: int) -> bool:
    """The host itself, or a process it started: a data-parallel host's rank 0 serves."""
    if peer_pid == pid:
        return True
    import psutil

    try:
        return any(parent.pid == pid for parent in psutil.Process(peer_pid).parents())
    except psutil.Error:
        return False


def _start_failure(run_dir: Path, pid: int, code: int) -> HostStartError:
    report = run_dir / f"host-error-{pid}.json"
    error = read_json(report)
    report.unlink(missing_ok=True)
    if error.get("message"):
        failure = HostStartError(str(error["message"]), int(error.get("exit_code", 1)))
        failure.complete = True  # the message says it all; host.log adds nothing
        return failure
    return HostStartError(f"the run host exited during start-up (exit code {code}): "
                          f"{_last_line(run_dir / LOG_NAME)}; see {run_dir / LOG_NAME}")


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
        lines = [line for line in lines if line]
        if lines:
            return lines[-1][:200]
    return "it wrote nothing"
