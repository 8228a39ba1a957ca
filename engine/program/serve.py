"""The run host of a program: `python -m ctui.engine.program.serve RUN_DIR REQUEST`, started by
`start_program`. The training host's twin (engine/host/serve.py) with a Supervisor in the
engine's place: it serves the run on RUN_DIR/control.sock, keeps output.log, metrics.jsonl (one
epoch per pass over the training DataLoader) and host.log, records the end (with the program's
exit code) in end.json, and exits. SIGHUP is ignored; SIGTERM and SIGINT stop the program as
`ctui stop` does. Torch-free.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import psutil

from ..config import ConfigError
from ..errors import EXIT_FAILED, EXIT_OK, EXIT_STOPPED
from ..events import (
    Answer,
    EpochEnded,
    Event,
    LogLine,
    ProgramExited,
    ProgramOutput,
    ProgramStarted,
    State,
    StateChanged,
)
from ..host.protocol import END_FILE, HOST_FILE, REQUEST_NAME
from ..host.registry import count_field, last_epoch, write_json
from ..host.serve import start_failed, take_over
from ..host.server import HostServer
from ..runs import read_metrics
from ..sinks.jsonl import MetricsFile
from .loaders import LoaderBridge, observe_folder
from .output_log import tail_text
from .process_tree import ProcessSampler
from .spec import ProgramSpec
from .supervisor import Supervisor


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    run_dir = Path(argv[0])
    taken = take_over(run_dir, argv[1] if len(argv) > 1 else REQUEST_NAME)
    if isinstance(taken, int):
        return taken
    previous_host, request = taken
    try:
        spec = ProgramSpec.from_dict(request.get("program"))
    except ConfigError as error:
        return start_failed(run_dir, f"no program to run: {error}", 2)
    if not os.path.isdir(spec.cwd):
        return start_failed(run_dir, f"--cwd {spec.cwd} is not a folder", 2)
    resume = request.get("resume") is True
    started = time.time()
    print(f"--- program host pid {os.getpid()} started {time.strftime('%Y-%m-%d %H:%M:%S')}: "
          f"{spec.title}", flush=True)
    host = {"pid": os.getpid(), "started": started, "created": psutil.Process().create_time()}
    write_json(run_dir / HOST_FILE, host)
    first_attempt = (count_field(previous_host.get("attempt")) or 0) + 1 if resume else 1
    epochs_before = last_epoch(run_dir) if resume else 0
    supervisor = Supervisor(spec, run_dir, first_attempt=first_attempt, resume_checkpoint=resume,
                            loaders=LoaderBridge(observe_folder(run_dir), epochs_before),
                            sampler=_sampler())
    return _serve(supervisor, run_dir, host, resume)


def _sampler() -> ProcessSampler | None:
    try:
        return ProcessSampler()
    except Exception as error:  # psutil cannot read /proc here: no process panel
        print(f"host: no process sampling: {error}", flush=True)
        return None


def _serve(supervisor: Supervisor, run_dir: Path, host: dict, resume: bool) -> int:
    server = HostServer(run_dir, supervisor.send)
    if resume:  # what the panel showed before the host went away
        for record in read_metrics(run_dir):
            if record.get("type") == "epoch":
                try:
                    server.publish(EpochEnded.from_dict(record))
                except (TypeError, ValueError):
                    continue
        earlier = tail_text(run_dir)
        if earlier:
            server.publish(ProgramOutput(data=earlier.replace("\n", "\r\n")
                                         + "\x1b[7m[ctui: the output above is from before the "
                                           "run was resumed]\x1b[0m\r\n"))
    metrics = MetricsFile(run_dir)
    supervisor.add_sink(ProgramEndRecorder(run_dir, host))  # before the broadcast: see it
    supervisor.add_sink(server.publish)
    supervisor.add_sink(metrics)
    supervisor.add_sink(host_log_line)
    _stop_on_signals(supervisor)
    server.start()
    try:
        final = supervisor.run()
    finally:
        metrics.close()
        for level, message in metrics.take_messages():
            print(f"{level}: {message}", flush=True)
        if supervisor.sampler is not None:
            supervisor.sampler.close()
        server.shutdown()
    return {State.FINISHED: EXIT_OK, State.STOPPED: EXIT_STOPPED}.get(final, EXIT_FAILED)


class ProgramEndRecorder:
    """end.json when the run ends, with the program's exit code or signal; and the attempt
    number in host.json at each start (so `ctui run --resume` counts on from it). Runs before
    the broadcast, so a client told "stopped" finds `ctui ls` saying so too."""

    name = "end record"

    def __init__(self, run_dir: Path, host: dict) -> None:
        self.run_dir = run_dir
        self.host = dict(host)
        self.exit_code: int | None = None
        self.signal = ""

    def __call__(self, event: Event) -> None:
        if isinstance(event, ProgramStarted):
            self.host["attempt"] = event.attempt
            write_json(self.run_dir / HOST_FILE, self.host)
        elif isinstance(event, ProgramExited):
            self.exit_code, self.signal = event.exit_code, event.signal
        elif isinstance(event, StateChanged) and event.state in (State.FINISHED, State.STOPPED,
                                                                 State.FAILED):
            write_json(self.run_dir / END_FILE, {
                "state": event.state, "reason": event.reason, "time": time.time(),
                "host_started": self.host["started"], "pid": os.getpid(),
                "exit_code": self.exit_code, "signal": self.signal})


def host_log_line(event: Event) -> None:
    """host.log: what the supervisor did, one line each (the program's output is output.log)."""
    stamp = time.strftime("%H:%M:%S")
    if isinstance(event, ProgramStarted):
        text = f"attempt {event.attempt}: started pid {event.pid}"
    elif isinstance(event, ProgramExited):
        text = f"attempt {event.attempt}: {event.message}"
    elif isinstance(event, LogLine):
        text = event.message if event.level == "info" else f"{event.level}: {event.message}"
    elif isinstance(event, Answer) and event.command != "input":
        text = event.message if event.accepted else f"refused {event.command}: {event.message}"
    elif isinstance(event, StateChanged):
        text = f"{event.state}: {event.reason}"
    else:
        return
    print(f"{stamp} {text}", flush=True)


def _stop_on_signals(supervisor: Supervisor) -> None:
    def handle(signum, frame) -> None:
        # Off the signal handler: stop() takes the sinks' lock, which this thread may hold.
        reason = f"{signal.Signals(signum).name} received by the run host"
        threading.Thread(target=supervisor.stop, args=(reason,), daemon=True).start()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handle)


if __name__ == "__main__":
    sys.exit(main())
