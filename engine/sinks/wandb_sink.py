"""Weights & Biases: the run's settings, per-epoch and per-step figures, in the run folder.

`run.log` only hands a record to wandb's own background process, so no training step waits on
the network; offline runs are uploaded later with `wandb sync`. Online mode is tried only with
an API key and a reachable server (checked with short timeouts), else the run logs offline.

Steps: every record is logged at the global step, so wandb's step never goes backwards, even
when a resumed run repeats the steps after its checkpoint; the per-epoch figures are charted
against `epoch` and the step figures against `global_step` (define_metric).
"""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..errors import first_line
from ..events import EpochEnded, Event, State, StateChanged, StepLogged
from ..safefs import read_bounded, write_atomically
from .figures import EPOCH_METRICS, STEP_PREFIX, epoch_scalars, step_scalars

RUN_ID_KEY = "wandb_run_id"  # in the checkpoint: the run a resumed run appends to
STEP_KEY = "wandb_step"  # in the checkpoint: the last global step logged
STEP_MARK_FILE = "ctui-last-step.json"  # the last step logged, even past the last checkpoint
PROJECT = "ctui"  # unless WANDB_PROJECT says otherwise
REACH_SECONDS = 3.0  # to open a connection to the wandb server before trying online
INIT_SECONDS = 30.0  # wandb.init online, before falling back to offline
FINISH_SECONDS = 60.0  # to upload what is left at the end; the rest stays for `wandb sync`
# wandb buffers its local .wandb file for 15 s by default: a crash would lose that much, and the
# step mark would run ahead of the file. A flush every 2 s costs nothing.
FLUSH_SECONDS = 2.0


class WandbSink:
    name = "wandb"

    def __init__(self, run: Any, saved: dict, wandb_dir: Path) -> None:
        self.run = run
        self._last_step = int(saved.get(STEP_KEY, 0))
        # A crash leaves steps after the checkpoint in wandb already: the step mark says how far
        # the run got, and online the server says it too (run.step). Never log those again.
        self._mark = wandb_dir / STEP_MARK_FILE
        reached = self._last_step
        if saved.get(RUN_ID_KEY) == run.id:
            reached = max(reached, _read_mark(self._mark, run.id))
        self._next_step = max(reached + 1, int(run.step or 0))
        self._exit_code = 0
        self._epoch_axes = set(EPOCH_METRICS)  # figures define_metric has put against epoch

    def __call__(self, event: Event) -> None:
        if isinstance(event, StepLogged):
            self._log({**step_scalars(event), "global_step": event.global_step},
                      event.global_step)
        elif isinstance(event, EpochEnded):
            scalars = epoch_scalars(event)
            for name in scalars.keys() - self._epoch_axes:  # the task's own: against epoch too
                self.run.define_metric(name, step_metric="epoch")
                self._epoch_axes.add(name)
            self._log({"epoch": event.epoch, "global_step": event.global_step, **scalars},
                      event.global_step)
        elif isinstance(event, StateChanged) and event.state in State.ENDED:
            self._exit_code = 1 if event.state == State.FAILED else 0

    def _log(self, record: dict[str, float], step: int) -> None:
        if step < self._next_step:
            return  # wandb would drop it with a warning on the terminal
        self.run.log(record, step=step)
        if step > self._last_step:
            # Never through a planted link; no fsync: a torn mark only costs a re-logged step.
            write_atomically(self._mark, json.dumps({"run_id": self.run.id, "step": step})
                             .encode(), durable=False)
        self._last_step = self._next_step = step  # the same step again merges into one row

    def record_settings(self, settings: dict[str, Any]) -> None:
        """The settings only the built run knows (the optimizer's own lr, momentum...), over
        the flags' values in the run's config: a task's optimizer sets its own learning rate."""
        self.run.config.update(settings, allow_val_change=True)

    def checkpoint_state(self) -> dict[str, Any]:
        return {RUN_ID_KEY: self.run.id, STEP_KEY: self._last_step}

    def close(self) -> None:
        """Finish the run; give up waiting on a slow upload, whose data stays on disk."""
        finisher = threading.Thread(target=self.run.finish, kwargs={"exit_code": self._exit_code},
                                    name="ctui-wandb-finish", daemon=True)
        finisher.start()
        finisher.join(FINISH_SECONDS)


def open_wandb(mode: str, wandb_dir: Path, settings: dict[str, Any], saved: dict, run_name: str,
               task_name: str) -> tuple[WandbSink, dict[str, str], list[str]]:
    """Start (or resume) the wandb run: (sink, LoggersInfo fields, notes)."""
    import wandb

    # Silent for the whole process: wandb's own login and step messages would land in the panel.
    wandb.setup(wandb.Settings(silent=True))
    sync_command = f"wandb sync {wandb_dir}"
    run_id = saved.get(RUN_ID_KEY)
    base_url = _base_url()
    # silent and console off: the panel owns the terminal; wandb must not print on it
    run_settings: dict[str, Any] = {"silent": True, "console": "off", "base_url": base_url,
                                    "init_timeout": INIT_SECONDS}
    if "x_transaction_log_flush_interval" in getattr(wandb.Settings, "model_fields", {}):
        run_settings["x_transaction_log_flush_interval"] = FLUSH_SECONDS

    def init(init_mode: str) -> Any:
        return wandb.init(
            project=None if os.environ.get("WANDB_PROJECT") else PROJECT,
            name=run_name, id=run_id, resume="allow" if run_id else None,
            allow_val_change=bool(run_id), dir=str(wandb_dir.parent), mode=init_mode,
            config=settings, tags=[_tag(task_name)], job_type="train", reinit="create_new",
            settings=wandb.Settings(**run_settings),
        )

    notes = []
    run = None
    if mode == "online":
        problem = _online_problem(base_url)
        if problem is None:
            try:
                run = init("online")
            except Exception as error:
                problem = f"wandb.init failed: {first_line(error)}"
        if problem is not None:
            notes.append(f"wandb cannot go online ({problem}); logging offline: upload later "
                         f"with: {sync_command}")
    if run is None:
        mode = "offline"
        run = init("offline")
        if not notes:
            notes.append(f"wandb logs offline; upload later with: {sync_command}")
    else:
        notes.append(f"wandb run: {run.url}")
    _define_axes(run)
    info = {"wandb_mode": mode, "wandb_url": (run.url or "") if mode == "online" else "",
            "wandb_sync_command": sync_command if mode == "offline" else ""}
    return WandbSink(run, saved, wandb_dir), info, notes


def _tag(task_name: str) -> str:
    """wandb refuses a tag over 64 characters (and the whole run with it): a user task's
    path becomes its file and function, `sgd_task.py:build`, at most 64 characters."""
    target, colon, function = task_name.rpartition(":")
    short = f"{Path(target).name}:{function}" if colon and target else task_name
    return short[-64:]


def _read_mark(path: Path, run_id: str) -> int:
    try:
        mark = json.loads(read_bounded(path))
    except (OSError, ValueError):  # none yet, or torn by the crash
        return 0
    if not isinstance(mark, dict) or mark.get("run_id") != run_id:
        return 0
    step = mark.get("step", 0)
    return step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else 0


def _define_axes(run: Any) -> None:
    """Per-epoch figures against `epoch` (as the tutorial's step=epoch), step figures against
    `global_step`. Sent again on resume: each offline segment is a file of its own."""
    run.define_metric("epoch")
    run.define_metric("global_step")
    for name in EPOCH_METRICS:
        run.define_metric(name, step_metric="epoch")
    run.define_metric(STEP_PREFIX + "*", step_metric="global_step")


def _base_url() -> str:
    """The wandb server: WANDB_BASE_URL, else wandb's settings (read once per process)."""
    from wandb.sdk import wandb_setup

    return os.environ.get("WANDB_BASE_URL") or wandb_setup.singleton().settings.base_url


def _online_problem(base_url: str) -> str | None:
    """Why online mode cannot work here, found without waiting long; None when it may."""
    try:
        has_key = _has_api_key(base_url)
    except Exception as error:  # a key in the wrong format
        return f"API key not usable: {first_line(error)}"
    if not has_key:
        return "no API key: run `wandb login` or set WANDB_API_KEY"
    if not _reachable(base_url):
        return f"cannot reach {base_url}"
    return None


def _has_api_key(base_url: str) -> bool:
    """Where wandb itself looks (environment, netrc, settings), without prompting."""
    try:
        from wandb.sdk.lib.wbauth import authenticate

        return authenticate.authenticate_session(
            host=base_url, source="ctui", prompt=False, update_session=False) is not None
    except (ImportError, AttributeError, TypeError):  # another wandb version: the usual places
        return bool(os.environ.get("WANDB_API_KEY")) or _in_netrc(base_url)


def _reachable(url: str) -> bool:
    """Open a TCP connection to the server. On a thread: name lookup ignores socket timeouts."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((parsed.hostname, port), timeout=REACH_SECONDS).close()
            result.append(True)
        except OSError:
            result.append(False)

    probe = threading.Thread(target=connect, name="ctui-wandb-probe", daemon=True)
    probe.start()
    probe.join(REACH_SECONDS)
    return bool(result and result[0])


def _in_netrc(base_url: str) -> bool:
    import netrc

    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(
            urlparse(base_url).hostname or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False

