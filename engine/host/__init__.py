"""The run host: a process per run that owns its engine thread and serves it over a private
Unix socket, so training outlives the terminal; every panel and `ctui` command is a client.

    from ctui.engine.host import RunClient, find_live_run, list_runs, start_host

    run_dir = start_host(RunConfig(task="digits", epochs=20))   # returns once it serves
    with RunClient.connect(run_dir) as client:
        for event in client.events():                         # history, then live
            ...

Nothing here imports torch or Textual; only the host process itself (serve.py) loads torch.
"""

from .client import RunClient
from .errors import HostError, HostStartError, HostUnavailable, RunNotFound
from .launch import start_host
from .registry import RunInfo, find_live_run, list_runs, resolve_run

__all__ = ["HostError", "HostStartError", "HostUnavailable", "RunClient", "RunInfo",
           "RunNotFound", "find_live_run", "list_runs", "resolve_run", "start_host"]
