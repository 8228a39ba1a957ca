"""The run host process: `python -m ctui.engine.host.serve RUN_DIR`, started by `start_host`.

It trains on its main thread, serves the run on RUN_DIR/control.sock, writes what a headless run
would print to RUN_DIR/host.log, records how the run ended in RUN_DIR/end.json and exits. It
belongs to the run, not to a terminal: SIGHUP is ignored; SIGTERM and SIGINT checkpoint and stop.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from pathlib import Path

import psutil

from ..config import RunConfig
from ..events import Event, Failed, State, StateChanged
from ..run_folder import RunBusy, hold_lock
from ..safefs import UnsafePathError, check_private_dir
from .protocol import END_FILE, HOST_FILE, REQUEST_NAME
from .registry import host_process_alive, read_json, write_json
from .server import HostServer


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    run_dir = Path(argv[0])
    request_name = argv[1] if len(argv) > 1 else REQUEST_NAME
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the terminal that started us may go away
    try:
        check_private_dir(run_dir)
    except UnsafePathError as error:
        print(f"ctui: error: {error.strerror}", file=sys.stderr, flush=True)
        return 2
    previous_host = read_json(run_dir / HOST_FILE)
    try:  # held, open, until this process ends
        hold_lock(run_dir, still_alive=lambda: host_process_alive(previous_host))
    except (RunBusy, OSError):
        return _start_failed(run_dir, "this run is already served by another live host", 2)
    request = read_json(run_dir / Path(request_name).name)
    (run_dir / Path(request_name).name).unlink(missing_ok=True)
    started = time.time()
    print(f"--- run host pid {os.getpid()} started {time.strftime('%Y-%m-%d %H:%M:%S')}",
          flush=True)
    write_json(run_dir / HOST_FILE, {"pid": os.getpid(), "started": started,
                                     "created": psutil.Process().create_time()})
    try:
        engine = _build_engine(request)
    except Exception as error:
        if previous_host:  # a failed resume leaves the run as it was
            write_json(run_dir / HOST_FILE, previous_host)
        else:
            (run_dir / HOST_FILE).unlink(missing_ok=True)
        message, code = _start_error(error)
        return _start_failed(run_dir, message, code)
    return _serve(engine, run_dir, started)


def _build_engine(request: dict):
    from ..control import Engine

    if "config" not in request:
        raise RuntimeError(f"no readable {REQUEST_NAME}: start runs with `ctui train --detach`")
    return Engine(RunConfig.from_dict(request["config"]), resume=request.get("resume"))


def _start_error(error: Exception) -> tuple[str, int]:
    """The same one-line message and exit code `ctui train --headless` gives."""
    from ..errors import EXIT_FAILED, first_line, start_error

    known = start_error(error)
    if known is not None:
        return known
    traceback.print_exc()
    name = type(error).__name__
    return (f"{name}: {first_line(error)}" if str(error).strip() else name), EXIT_FAILED


def _start_failed(run_dir: Path, message: str, code: int) -> int:
    print(f"ctui: error: {message}", file=sys.stderr, flush=True)
    write_json(run_dir / f"host-error-{os.getpid()}.json", {"message": message, "exit_code": code})
    return code


def _serve(engine, run_dir: Path, started: float) -> int:
    from ..errors import EXIT_FAILED, EXIT_OK, EXIT_STOPPED
    from ..sinks.console import ConsolePrinter, ConsoleSink

    server = HostServer(run_dir, engine.send)
    for event in engine.history:  # epochs restored from the checkpoint being resumed
        server.publish(event)
    printer = ConsolePrinter(sys.stdout)  # host.log reads like a headless run's output
    engine.add_sink(EndRecorder(run_dir, started))  # before the broadcast: see EndRecorder
    engine.add_sink(server.publish)
    engine.add_sink(ConsoleSink(printer, name="host log", tracebacks=True))
    _stop_on_signals(engine)
    server.start()
    final = engine.run()  # on the main thread: the fastest for PyTorch's CPU kernels
    printer.close()
    server.shutdown()
    return {State.FINISHED: EXIT_OK, State.STOPPED: EXIT_STOPPED}.get(final, EXIT_FAILED)


class EndRecorder:
    """Writes end.json when the run ends, on the engine thread and before the broadcast sink
    sees the final state, so a client told "stopped" finds `ctui ls` saying so too."""

    name = "end record"

    def __init__(self, run_dir: Path, host_started: float) -> None:
        self.run_dir = run_dir
        self.host_started = host_started
        self._reason = ""

    def __call__(self, event: Event) -> None:
        if isinstance(event, Failed):
            self._reason = event.message
        if isinstance(event, StateChanged) and event.state in (State.FINISHED, State.STOPPED,
                                                               State.FAILED):
            write_json(self.run_dir / END_FILE, {
                "state": event.state, "reason": self._reason or event.reason, "time": time.time(),
                "host_started": self.host_started, "pid": os.getpid()})


def claim_headless_run(run_dir: Path) -> int | None:
    """A headless run owns its folder as a host does (lock, host.json, end.json), so `ctui ls`
    shows it live while it trains and how it ended; None if a live host already serves it."""
    previous_host = read_json(run_dir / HOST_FILE)
    try:
        hold_lock(run_dir, still_alive=lambda: host_process_alive(previous_host))
    except RunBusy:
        return None
    started = time.time()
    write_json(run_dir / HOST_FILE, {"pid": os.getpid(), "started": started, "headless": True,
                                     "created": psutil.Process().create_time()})
    return started


def _stop_on_signals(engine) -> None:
    from ..sinks.console import say_now

    def handle(signum, frame) -> None:  # on the training thread: no print
        name = signal.Signals(signum).name
        say_now(f"{name} received: saving a checkpoint at the next step, then stopping", fd=1)
        engine.stop(f"{name} received")

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handle)


if __name__ == "__main__":
    sys.exit(main())
