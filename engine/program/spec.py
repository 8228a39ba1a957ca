"""What `ctui run -- CMD` runs and how it supervises it: one frozen, validated object, recorded
in the run folder's config.json as `{"kind": "program", "program": {...}}`.

The record names a command to run again (`ctui run --resume RUN`), so it is read back only from
a run folder that passes the ownership checks (engine.run_folder.open_run_folder), every field
is type-checked, and nothing in it names code for ctui itself to import. Torch-free.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import MAX_SECONDS, ConfigError, check_setting
from ..runs import CONFIG_FILE
from ..safefs import read_bounded, write_atomically

KIND = "program"
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
DEFAULT_GRACE = 30.0
DEFAULT_RESUME_ARGS = "--resume {checkpoint}"
MAX_RESTARTS = 1000
MAX_ARGV = 4096  # arguments: past this it is not a command someone typed
MAX_ARG_CHARS = 128 * 1024  # Linux's own limit on one argument (MAX_ARG_STRLEN)


@dataclass(frozen=True)
class ProgramSpec:
    """A supervised program: its command line, where it runs, and the supervision settings."""

    argv: tuple[str, ...]
    cwd: str
    grace: float = DEFAULT_GRACE  # seconds from the first stop signal to SIGKILL
    stop_signal: str = "SIGINT"
    time_limit: float | None = None  # seconds of the whole run, restarts included
    restart_on_failure: int = 0  # restarts after a non-zero exit or a kill
    checkpoint_glob: str = ""  # relative to cwd; "" = restarts add no resume arguments
    resume_args: str = DEFAULT_RESUME_ARGS  # appended with {checkpoint} filled in
    columns: int = 120  # the terminal's first size, until a client says its own
    rows: int = 40

    def __post_init__(self) -> None:
        object.__setattr__(self, "argv", tuple(self.argv))
        check_spec(self)

    @property
    def title(self) -> str:
        """The command as one short line for people."""
        import shlex

        text = shlex.join(self.argv)
        return text if len(text) <= 120 else text[:117] + "..."

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["argv"] = list(self.argv)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> ProgramSpec:
        """The spec a config.json records; ConfigError naming the field when it is not one."""
        if not isinstance(data, dict):
            raise ConfigError("resume", "the run folder's config.json holds no program record")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError("resume", f"config.json's program record has unknown fields "
                              f"{', '.join(map(repr, unknown[:5]))}")
        argv = data.get("argv")
        if not isinstance(argv, list):
            raise ConfigError("resume", "config.json's program record has no argv list")
        return cls(**{**data, "argv": tuple(argv)})


def check_spec(spec: ProgramSpec) -> None:
    """ConfigError (one line, naming the flag) for any field out of range or of the wrong
    type: the same rules for typed flags and for a config.json read back."""
    argv = spec.argv
    if not argv:
        raise ConfigError("command", "say what to run after `--`, e.g. "
                          "`ctui run -- python train.py --epochs 4`")
    if len(argv) > MAX_ARGV or not all(isinstance(arg, str) for arg in argv):
        raise ConfigError("command", f"the command must be at most {MAX_ARGV} text arguments")
    for arg in argv:
        if "\0" in arg or len(arg) > MAX_ARG_CHARS:
            raise ConfigError("command", "an argument holds a NUL byte or is over 128 KiB")
    if not argv[0]:
        raise ConfigError("command", "the command's name is empty")
    if not isinstance(spec.cwd, str) or not spec.cwd or "\0" in spec.cwd:
        raise ConfigError("cwd", "the working folder must be a path")
    _seconds("grace", spec.grace, low=0.0)
    if spec.time_limit is not None:
        _seconds("time_limit", spec.time_limit, low=1e-9)
    if not isinstance(spec.stop_signal, str) or spec.stop_signal not in STOP_SIGNALS:
        raise ConfigError("stop_signal", f"{spec.stop_signal!r} is not allowed; use one of "
                          + ", ".join(STOP_SIGNALS))
    if isinstance(spec.restart_on_failure, bool) or not isinstance(
            spec.restart_on_failure, int) or not 0 <= spec.restart_on_failure <= MAX_RESTARTS:
        raise ConfigError("restart_on_failure", f"{spec.restart_on_failure!r} is not allowed; "
                          f"use a whole number from 0 to {MAX_RESTARTS}")
    for name in ("checkpoint_glob", "resume_args"):
        value = getattr(spec, name)
        if not isinstance(value, str) or "\0" in value or len(value) > 4096:
            raise ConfigError(name, "must be text of at most 4096 characters")
    if spec.checkpoint_glob:
        try:
            filled = spec.resume_args.format(checkpoint="CKPT")
        except (KeyError, IndexError, ValueError) as error:
            raise ConfigError("resume_args", f"{spec.resume_args!r} is not a template: only "
                              f"{{checkpoint}} may appear in braces ({error})") from None
        if "CKPT" not in filled:
            raise ConfigError("resume_args", f"{spec.resume_args!r} does not say where the "
                              "checkpoint goes: put {checkpoint} in it")
    for name, low, high in (("columns", 10, 1000), ("rows", 2, 1000)):
        value = getattr(spec, name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(name, f"{value!r} is not allowed; use {low} to {high}")


def _seconds(name: str, value: Any, low: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value) or not low <= value <= MAX_SECONDS:
        raise ConfigError(name, f"{value!r} is not allowed; use seconds from {low:g} to "
                          f"{MAX_SECONDS}")


def parse_seconds(name: str, text: str) -> float:
    """A duration flag (`--grace 30`, `--time-limit 11h50m`) -> seconds; ConfigError else."""
    if name == "time_limit":
        return float(check_setting("time_limit", text))
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(name, f"{text[:60]!r} is not a number of seconds") from None
    _seconds(name, value, low=0.0)
    return value


def signal_number(name: str) -> int:
    return int(getattr(signal, name))


# ---------------------------------------------------------------- config.json


def write_program_config(run_dir: Path, spec: ProgramSpec) -> None:
    data = {"kind": KIND, "program": spec.to_dict()}
    write_atomically(run_dir / CONFIG_FILE, (json.dumps(data, indent=2) + "\n").encode())


def is_program_run(run_dir: Path) -> bool:
    try:
        data = json.loads(read_bounded(Path(run_dir) / CONFIG_FILE))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("kind") == KIND


def read_program_config(run_dir: Path) -> ProgramSpec:
    """The spec recorded in a run folder (the caller has checked the folder is the user's
    own). ConfigError when config.json is missing, unreadable or not a program's."""
    try:
        data = json.loads(read_bounded(Path(run_dir) / CONFIG_FILE))
    except (OSError, ValueError, RecursionError) as error:
        raise ConfigError("resume", f"cannot read {Path(run_dir) / CONFIG_FILE}: "
                          f"{getattr(error, 'strerror', None) or error}") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise ConfigError("resume", f"{run_dir} is a training run, not a program run; continue "
                          f"it with `ctui train --detach --resume --run-dir {run_dir}`")
    return ProgramSpec.from_dict(data.get("program"))
