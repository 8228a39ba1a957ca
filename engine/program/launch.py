"""Starting a program's run host, new or resumed: the run folder is made (or adopted, after the
ownership checks), config.json records the program, and the host starts detached exactly as a
training run's does (engine/host/launch.py)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from ..host.errors import HostStartError
from ..host.launch import launch_host
from ..host.protocol import END_FILE, HOST_FILE
from ..host.registry import host_is_live, read_json
from ..run_folder import new_run_folder, open_run_folder
from ..safefs import UnsafePathError, make_private_dir
from .spec import ProgramSpec, read_program_config, write_program_config

HOST_MODULE = "ctui.engine.program.serve"
START_TIMEOUT = 60.0  # the host only binds a socket and starts a process: seconds, not minutes
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def default_name(argv: tuple[str, ...] | list[str]) -> str:
    """`python train.py ...` -> train-20250101-120000; `./run.sh` -> run-...; the time as in
    training runs' names (a random suffix follows)."""
    words = [Path(arg).stem for arg in argv[:3] if arg and not arg.startswith("-")]
    interpreters = ("python", "python3", "torchrun", "accelerate", "uv", "bash", "sh", "run")
    chosen = next((word for word in words if not word.startswith(interpreters)),
                  words[0] if words else "program")
    chosen = re.sub(r"[^A-Za-z0-9._-]", "_", chosen)[:40].lstrip("._-") or "program"
    return f"{chosen}-{time.strftime('%Y%m%d-%H%M%S')}"


def start_program(spec: ProgramSpec, runs_dir: str | os.PathLike[str], name: str | None = None,
                  *, timeout: float = START_TIMEOUT) -> Path:
    """A new run of the program in a detached host; the run folder, once the host serves.
    HostStartError (one line, exit code 2 for a bad name or folder) otherwise."""
    runs = Path(runs_dir).absolute()
    try:
        if name is not None:
            if not NAME.fullmatch(name):
                raise HostStartError(f"--name {name!r}: use letters, digits, '.', '_' and '-' "
                                     "(up to 100, not starting with '.', '_' or '-')", 2)
            run_dir = runs / name
            if not make_private_dir(run_dir):  # never adopt an existing folder for a new run
                raise HostStartError(f"a run named {name} exists in {runs}: choose another "
                                     f"--name, or continue it with `ctui run --resume {name}`",
                                     2)
        else:
            run_dir = new_run_folder(None, str(runs), default_name(spec.argv))
    except UnsafePathError as error:
        raise HostStartError(error.strerror, 2) from None
    write_program_config(run_dir, spec)
    return launch_host(run_dir, HOST_MODULE, {"program": spec.to_dict(), "resume": False},
                       fresh=True, timeout=timeout, cwd=run_dir)


def resume_program(run_dir: Path, *, timeout: float = START_TIMEOUT) -> tuple[Path, ProgramSpec]:
    """Run a program run's recorded command again in a new host, from its newest loadable
    checkpoint when it names a glob. Only for a run folder of this user that nobody else can
    write into: the command comes from its config.json."""
    try:
        run_dir = open_run_folder(Path(run_dir).absolute())
    except UnsafePathError as error:
        raise HostStartError(error.strerror, 2) from None
    try:
        spec = read_program_config(run_dir)
    except ValueError as error:  # ConfigError: not a program run, or a damaged record
        raise HostStartError(str(error), 2) from None
    if host_is_live(run_dir):
        raise HostStartError(f"run {run_dir.name} is live already: attach to it (ctui attach "
                             f"{run_dir.name}) or stop it first (ctui stop {run_dir.name})", 2)
    if read_json(run_dir / END_FILE).get("state") == "finished" and _ended_last(run_dir):
        raise HostStartError(f"run {run_dir.name} finished (exit code 0): there is nothing to "
                             f"resume; start it again with `ctui run -- {spec.title}`", 2)
    if not os.path.isdir(spec.cwd):
        raise HostStartError(f"run {run_dir.name} ran in {spec.cwd}, which is no longer a "
                             "folder", 2)
    launch_host(run_dir, HOST_MODULE, {"program": spec.to_dict(), "resume": True}, fresh=False,
                timeout=timeout, cwd=run_dir)
    return run_dir, spec


def _ended_last(run_dir: Path) -> bool:
    """end.json belongs to the host that last started here (not an older one)."""
    host, end = read_json(run_dir / HOST_FILE), read_json(run_dir / END_FILE)
    return not host or end.get("host_started") == host.get("started")

