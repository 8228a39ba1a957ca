"""One rank of a data-parallel job: `python -m ctui.engine.distributed.rank RUN_DIR REQUEST`,
started by the elastic launcher (engine/distributed/launch.py), which sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR/PORT and TORCHELASTIC_RESTART_COUNT.

Rank 0 speaks for the job: it prints the run's lines, writes checkpoints, metrics and end.json.
A restarted group (a rank died) resumes from the newest checkpoint. A signal on any rank stops
the whole job at the next agreement with one checkpoint; the exit code says to the launcher
whether the group must be restarted (only a crash, 1, does). A rank that runs out of memory in a
training step reports it in the run folder for the launcher to relaunch the job (oom.py).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from ..config import RunConfig
from ..errors import EXIT_OK, EXIT_STOPPED, start_error
from ..events import Failed, State
from ..host.registry import read_json, write_json
from ..run_folder import EndRecorder
from ..runs import checkpoint_dir, list_checkpoints
from ..sinks.console import ConsolePrinter, ConsoleSink, say_now
from . import oom
from .spec import cpu_threads_per_rank, restarts_so_far

ERROR_FILE = "rank-error.json"  # rank 0's start-up error, one line, for the launcher to show


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    run_dir = Path(argv[0])
    request = read_json(run_dir / Path(argv[1]).name)
    config = RunConfig.from_dict(request["config"])
    if restarts_so_far() and config.nnodes == 1 and oom.first_report(
            run_dir, int(os.environ.get("WORLD_SIZE", 1))):
        # The launcher restarted the ranks after one ran out of memory: all leave at once, the
        # group ends "succeeded" without spending --max-restarts, and the launcher relaunches
        # the job at half the batch.
        return 0

    import torch

    from .group import RankGroup

    if not torch.cuda.is_available():  # CPU ranks share the cores
        torch.set_num_threads(cpu_threads_per_rank(int(os.environ.get("LOCAL_WORLD_SIZE", 1))))
    _exit_with_the_launcher()
    group = RankGroup.from_environment(config.device)
    engine = _engine(config, _resume(run_dir, request.get("resume")), group, run_dir)
    if isinstance(engine, int):
        return engine
    engine.job_error = _job_error(group, config, run_dir)
    relaunched = oom.OutOfMemory.parse(request.get("oom"), group.world_size)
    if relaunched is not None and group.is_writer:
        engine.note(_relaunch_line(engine, relaunched, config, run_dir), "warning")
    started = float(request.get("started", 0.0))
    if group.is_writer and request.get("serve"):  # in a run host: serve the socket as it would
        from ..host.serve import _serve

        code = _serve(engine, run_dir, started)
        if code not in (EXIT_OK, EXIT_STOPPED):
            return 1
        group.close()
        return 0
    if group.local_rank == 0:  # each machine's folder records how the job ended, for ls
        engine.add_sink(EndRecorder(run_dir, started))
    if group.is_writer:
        printer = ConsolePrinter(sys.stdout)
        engine.add_sink(ConsoleSink(printer, tracebacks=bool(os.environ.get("CTUI_DEBUG"))))
    else:
        engine.add_sink(_failure_printer(group.rank))
    _stop_on_signals(engine, group.is_writer)
    final = engine.run()
    if final not in (State.FINISHED, State.STOPPED):
        return 1  # no barrier: the peers may wait in a step; the launcher ends the group
    group.close()
    return 0


def _failure_printer(rank: int):
    """Another rank's failure goes to stderr (its other events are rank 0's to tell)."""
    def sink(event) -> None:
        if isinstance(event, Failed):
            say_now(f"ctui: rank {rank} failed: {event.message}", fd=2)
            if os.environ.get("CTUI_DEBUG"):
                say_now(event.detail, fd=2)
    return sink


def _job_error(group, config: RunConfig, run_dir: Path
               ) -> Callable[[Exception, int], tuple[bool, str]]:
    """The engine's reading of an error (Engine.job_error): this rank ran out of memory in a
    training step, or a peer on this machine did (and broke this rank's collective)."""
    import torch

    def reading(error: Exception, batch_size: int) -> tuple[bool, str]:
        if isinstance(error, torch.OutOfMemoryError) and \
                oom.in_a_training_step(error.__traceback__):
            try:  # before this rank's sockets close, so a peer that sees them close finds it
                oom.report(run_dir, group.rank, batch_size)
            except OSError:
                return False, ""
        found = oom.first_report(run_dir, group.world_size)
        if found is None or config.nnodes > 1:  # there its launcher says what to do
            return False, ""
        if oom.relaunches(found, config.nnodes) or not group.is_writer:
            return True, ""
        return False, oom.failure_line(found, config.nnodes, config.node_rank, run_dir)

    return reading


def _relaunch_line(engine, relaunched: oom.OutOfMemory, config: RunConfig,
                   run_dir: Path) -> str:
    path, state = engine.resume_path, engine.resume_state
    newest = path is not None and path.parent == checkpoint_dir(run_dir)
    source = "the newest checkpoint" if newest else str(path)
    return oom.relaunch_line(relaunched, config.batch_size,
                             state.get("progress") if state else None, source)


def _exit_with_the_launcher() -> None:
    """Ranks run in sessions of their own: a launcher killed outright (SIGKILL, OOM killer)
    cannot stop them, and they would wait in a collective for half an hour. They leave too."""
    import threading
    import time

    launcher = os.getppid()

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="ctui-launcher-watch", daemon=True).start()


def _resume(run_dir: Path, asked: str | None) -> str | None:
    """What rank 0 resumes from: as asked at the first start; after a restart the newest
    checkpoint of the run (if the first start had saved none yet, what it was asked)."""
    if restarts_so_far() and list_checkpoints(run_dir / "checkpoints"):
        return "latest"
    return asked


def _engine(config: RunConfig, resume: str | None, group, run_dir: Path):
    from ..control import Engine

    try:
        return Engine(config, resume=resume, group=group)
    except Exception as error:
        known = start_error(error)
        if known is None:
            raise
        message, code = known
        if group.is_writer:
            write_json(run_dir / ERROR_FILE, {"message": message, "exit_code": code})
        return code


def _stop_on_signals(engine, speaks: bool) -> None:
    """SIGTERM, SIGINT, SIGHUP (the launcher passes on the one it got): one coordinated
    checkpoint at the next agreement, then every rank stops."""
    def handle(signum, frame) -> None:
        name = signal.Signals(signum).name
        if speaks:
            say_now(f"{name} received: saving a checkpoint at the next agreed step, then "
                    "stopping", fd=1)
        engine.stop(f"{name} received")

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, handle)


if __name__ == "__main__":
    code = main()
    # Everything is saved and closed by now: skip the interpreter's teardown of torch and gloo,
    # which takes seconds on a busy machine while the launcher waits for every rank to exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
