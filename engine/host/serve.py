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
from ..errors import EXIT_FAILED, EXIT_OK, EXIT_STOPPED, first_line, start_error
from ..events import State
from ..run_folder import EndRecorder, RunBusy, hold_lock, owner_alive
from ..safefs import UnsafePathError, check_private_dir
from ..scheduling import normal_scheduling
from ..sinks.console import ConsolePrinter, ConsoleSink, say_now
from .protocol import HOST_FILE, REQUEST_NAME
from .registry import read_json, write_json
from .server import HostServer


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    run_dir = Path(argv[0])
    taken = take_over(run_dir, argv[1] if len(argv) > 1 else REQUEST_NAME)
    if isinstance(taken, int):
        return taken
    previous_host, request = taken
    started = time.time()
    print(f"--- run host pid {os.getpid()} started {time.strftime('%Y-%m-%d %H:%M:%S')}",
          flush=True)
    write_json(run_dir / HOST_FILE, {"pid": os.getpid(), "started": started,
                                     "created": psutil.Process().create_time()})
    if _wants_ranks(request):  # data parallel: the elastic launcher runs here, rank 0 serves
        from ..distributed.launch import serve_job

        return serve_job(run_dir, request, previous_host)
    try:
        engine = _build_engine(request)
    except Exception as error:
        if previous_host:  # a failed resume leaves the run as it was
            write_json(run_dir / HOST_FILE, previous_host)
        else:
            (run_dir / HOST_FILE).unlink(missing_ok=True)
        message, code = _start_error(error)
        return start_failed(run_dir, message, code)
    return _serve(engine, run_dir, started)


def take_over(run_dir: Path, request_name: str) -> tuple[dict, dict] | int:
    """What every run host (training or program) does first: outlive the terminal, refuse a
    folder that is not safely ours, hold the run's lock for life, then take (and remove) its
    start request. (the previous host.json, the request), or the exit code once it said why."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the terminal that started us may go away
    normal_scheduling()
    try:
        check_private_dir(run_dir)
    except UnsafePathError as error:
        print(f"ctui: error: {error.strerror}", file=sys.stderr, flush=True)
        return 2
    previous_host = read_json(run_dir / HOST_FILE)
    try:  # held, open, until this process ends
        hold_lock(run_dir, still_alive=lambda: owner_alive(run_dir))
    except (RunBusy, OSError):
        return start_failed(run_dir, "this run is already served by another live host", 2)
    request_path = run_dir / Path(request_name).name
    request = read_json(request_path)
    request_path.unlink(missing_ok=True)
    return previous_host, request


def _wants_ranks(request: dict) -> bool:
    from ..distributed.spec import wants_ranks

    try:
        return wants_ranks(RunConfig.from_dict(request["config"]))
    except Exception:  # _build_engine reports a bad request in its one line
        return False


def _build_engine(request: dict):
    from ..control import Engine  # torch loads here, once the run's lock is held

    if "config" not in request:
        raise RuntimeError(f"no readable {REQUEST_NAME}: start runs with `ctui train --detach`")
    return Engine(RunConfig.from_dict(request["config"]), resume=request.get("resume"))


def _start_error(error: Exception) -> tuple[str, int]:
    """The same one-line message and exit code `ctui train --headless` gives."""
    known = start_error(error)
    if known is not None:
        return known
    traceback.print_exc()
    name = type(error).__name__
    return (f"{name}: {first_line(error)}" if str(error).strip() else name), EXIT_FAILED


def start_failed(run_dir: Path, message: str, code: int) -> int:
    print(f"ctui: error: {message}", file=sys.stderr, flush=True)
    write_json(run_dir / f"host-error-{os.getpid()}.json", {"message": message, "exit_code": code})
    return code


def _serve(engine, run_dir: Path, started: float) -> int:
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


def _stop_on_signals(engine) -> None:
    def handle(signum, frame) -> None:  # on the training thread: no print
        name = signal.Signals(signum).name
        say_now(f"{name} received: saving a checkpoint at the next step, then stopping", fd=1)
        engine.stop(f"{name} received")

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handle)


if __name__ == "__main__":
    sys.exit(main())
