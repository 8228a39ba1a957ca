"""The launcher process of a data-parallel job: PyTorch's elastic launcher (what `torchrun`
runs) starts this machine's ranks, restarts them from the newest checkpoint when one dies (up to
--max-restarts), and forwards SIGTERM/SIGINT/SIGHUP to them for one coordinated checkpoint.

The launcher owns the run folder like any ctui run: it takes the run's lock and writes host.json
for the whole job, restarts included; rank 0 writes into the folder under that lock. A rank that
runs out of memory makes it launch the job again at half the batch per rank (oom.py): that is
not a fault, and each launch has --max-restarts of its own.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from pathlib import Path

from ..config import RunConfig
from ..errors import EXIT_FAILED, EXIT_OK, EXIT_STOPPED
from ..events import State
from ..host.registry import read_json, write_json
from ..run_folder import claim_headless_run, claim_run_folder
from ..runs import CONFIG_FILE, END_FILE, checkpoint_dir, list_checkpoints, write_config
from . import oom
from .rank import ERROR_FILE
from .spec import check_job, ranks_per_node, visible_gpus

SHUTDOWN_SECONDS = 120  # ranks get this long after a signal to agree, save and exit
LOCAL_ENDPOINT = "127.0.0.1:0"  # one machine: a free port, as torchrun --standalone


class JobError(Exception):
    """The job could not run or ended badly: one line for people, and the exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def serve_job(run_dir: Path, request: dict, previous_host: dict) -> int:
    """In a run host (`ctui train --detach`): the host holds the run's lock and host.json for
    the whole job; rank 0 serves RUN_DIR/control.sock to the panel and `ctui` commands."""
    from ..host.serve import _start_error, start_failed

    try:
        config = RunConfig.from_dict(request["config"])
        # SIGHUP stays ignored: the host belongs to the run, not to a terminal.
        return run_job(config, request.get("resume"), run_dir=run_dir, extra={"serve": True},
                       signals="SIGTERM,SIGINT")
    except JobError as error:
        message, code = str(error), error.code
    except Exception as error:
        message, code = _start_error(error)
    if previous_host and not (run_dir / END_FILE).exists():
        write_json(run_dir / "host.json", previous_host)
    return start_failed(run_dir, message, code)


def run_job(config: RunConfig, resume: str | None, *, run_dir: Path | None = None,
            extra: dict | None = None, signals: str = "SIGTERM,SIGINT,SIGHUP") -> int:
    """Train `config` on its ranks; returns the exit code (0 finished, 3 stopped, 1 failed).
    resume: "latest", a checkpoint file or None. run_dir: already claimed by this process (a
    run host); else the folder is claimed here. Raises ConfigError or JobError."""
    _quiet_torch_logs()
    gpus = visible_gpus()
    nproc = ranks_per_node(config, gpus)
    check_job(config, nproc, gpus)
    if run_dir is None:
        run_dir = claim_run_folder(config, resume)
        started = claim_headless_run(run_dir)
    else:
        started = float(read_json(run_dir / "host.json").get("started", 0.0))
    config = config.replace(run_dir=str(run_dir))
    if not (run_dir / CONFIG_FILE).exists():  # `ctui ls` knows the run from the start
        write_config(run_dir, config, {})
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    world_size = nproc * config.nnodes
    relaunched: oom.OutOfMemory | None = None
    while True:
        oom.clear_reports(run_dir, world_size)
        request = run_dir / f"rank-request.{secrets.token_hex(4)}"
        write_json(request, {"config": config.to_dict(), "resume": resume, "started": started,
                             **({"oom": relaunched.to_dict()} if relaunched else {}),
                             **(extra or {})})
        try:
            ran_out = _launch(config, nproc, run_dir, request.name, signals)
        finally:
            request.unlink(missing_ok=True)
        if ran_out is None:
            break
        oom.clear_reports(run_dir, world_size)
        if not oom.relaunches(ran_out, config.nnodes):
            raise JobError(oom.failure_line(ran_out, config.nnodes, config.node_rank, run_dir))
        # Rank 0 of the new launch says why, in the log and the panel (oom.relaunch_line).
        relaunched = ran_out
        config = config.replace(batch_size=ran_out.relaunch_batch_size)
        if resume is None or list_checkpoints(checkpoint_dir(run_dir)):
            resume = "latest"  # none saved yet: "latest" starts fresh and drops stale metrics
    end = read_json(run_dir / END_FILE)
    if end.get("host_started") != started:
        return EXIT_FAILED
    code = {State.FINISHED: EXIT_OK, State.STOPPED: EXIT_STOPPED}.get(end.get("state"),
                                                                      EXIT_FAILED)
    if code == EXIT_STOPPED and extra is None:  # headless: say how to go on
        print(f"continue with: ctui train --headless --resume --run-dir {run_dir}", flush=True)
    return code


def _quiet_torch_logs() -> None:
    """c10d's C++ log (a page of stack frames per failed connect) reads its level once, when
    torch loads: only the launcher's is quieted, the ranks' stay as they are. CTUI_DEBUG keeps
    everything."""
    if os.environ.get("CTUI_DEBUG") or "torch" in sys.modules:
        return
    had = os.environ.get("TORCH_CPP_LOG_LEVEL")
    os.environ["TORCH_CPP_LOG_LEVEL"] = "FATAL"
    import torch  # noqa: F401

    if had is None:
        del os.environ["TORCH_CPP_LOG_LEVEL"]
    else:
        os.environ["TORCH_CPP_LOG_LEVEL"] = had


def _launch(config: RunConfig, nproc: int, run_dir: Path, request: str, signals: str
            ) -> oom.OutOfMemory | None:
    """One elastic_launch of the ranks; the first out-of-memory report of a rank on this
    machine when one ran out, else None. Raises JobError for any other failure."""
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from .spec import cpu_threads_per_rank

    # The ranks set their own thread count; the launcher only waits.
    os.environ.setdefault("OMP_NUM_THREADS", str(cpu_threads_per_rank(nproc)))
    # Its own log lines repeat what ctui says in one line (CTUI_DEBUG shows them).
    if not os.environ.get("CTUI_DEBUG"):
        logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    several = config.nnodes > 1
    endpoint = config.rdzv_endpoint if several else LOCAL_ENDPOINT
    launch = LaunchConfig(
        min_nodes=config.nnodes, max_nodes=config.nnodes, nproc_per_node=nproc,
        run_id="ctui", rdzv_endpoint=endpoint,
        # Several machines: torchrun's default static rendezvous, rank 0 on --node-rank 0.
        rdzv_backend="static" if several else "c10d",
        rdzv_configs={"timeout": int(config.rdzv_timeout), "join_timeout":
                      int(config.rdzv_timeout), **({"rank": config.node_rank} if several
                                                   else {})},
        max_restarts=config.max_restarts, monitor_interval=0.2,
        shutdown_timeout=SHUTDOWN_SECONDS, signals_to_handle=signals)
    world_size = nproc * config.nnodes
    try:
        elastic_launch(launch, sys.executable)("-m", "ctui.engine.distributed.rank",
                                               str(run_dir), request)
    except ChildFailedError as error:
        # Out of memory ends the group at once (rank.py: no restart spent on it), or after
        # the restarts that ran out again, with several machines.
        ran_out = oom.first_report(run_dir, world_size)
        if ran_out is not None and not (run_dir / ERROR_FILE).exists():
            return ran_out
        raise _child_failure(error, run_dir, config.max_restarts) from None
    except SignalException:
        return None  # the ranks got the signal and stopped with a checkpoint: end.json says so
    except Exception as error:
        if several:
            raise JobError(f"the machines did not meet at --rdzv-endpoint {endpoint} within "
                           f"{config.rdzv_timeout:g}s ({type(error).__name__}): start ctui "
                           f"with --nnodes {config.nnodes} on every machine, machine 0 first, "
                           "and check the address and port are reachable") from None
        raise JobError(f"the ranks could not start ({type(error).__name__}: "
                       f"{str(error).strip().splitlines()[0] if str(error).strip() else ''})"
                       ) from None
    # Ranks restarted after one ran out of memory leave at once (rank.py): the group succeeded
    return oom.first_report(run_dir, world_size)


def _child_failure(error, run_dir: Path, max_restarts: int) -> JobError:
    """Rank 0's own start-up error when it wrote one; else which rank failed, and how."""
    said = read_json(run_dir / ERROR_FILE)
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    if said.get("message"):
        return JobError(str(said["message"]), int(said.get("exit_code", EXIT_FAILED)))
    # The root cause: a rank that failed by itself, not one the launcher then terminated.
    rank, failure = min(error.failures.items(), key=lambda item: (
        item[1].exitcode == -15, item[1].timestamp, item[0]))
    how = f"signal {failure.signal_name()}" if failure.exitcode < 0 else \
        f"exit code {failure.exitcode}"
    restarts = f" after {max_restarts} restart{'s' * (max_restarts != 1)}" \
        if max_restarts else " (--max-restarts 0)"
    return JobError(f"rank {rank} failed with {how}{restarts}; its last lines are in the "
                    f"output above; continue from the newest checkpoint with --resume "
                    f"--run-dir {run_dir}")
