"""Run settings: one frozen, validated object shared by the CLI, the engine and the notebook API.

Names and defaults follow pytorch/examples mnist/main.py so users can carry their flags over.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __import__("sys").version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

BUILTIN_TASKS = ("digits", "mnist", "cifar10", "fake")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda|cuda:\d+)$")
DURATION_PATTERN = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


class ConfigError(ValueError):
    """A setting a user gave is not allowed; the message names the flag and what is allowed."""

    def __init__(self, name: str, message: str):
        self.name = name
        super().__init__(f"{flag_name(name)}: {message}")


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def default_runs_dir() -> str:
    """Where runs go unless --runs-dir or --run-dir says otherwise: $CTUI_RUNS, else ./runs."""
    return os.environ.get("CTUI_RUNS", "./runs")


def max_num_workers() -> int:
    """Upper bound for num_workers: each worker is a whole process holding a dataset copy,
    so far past the core count they only add memory and context switches."""
    return max(8, 4 * (os.cpu_count() or 1))


def parse_duration(text: str) -> float:
    """'11h50m', '90m', '3600s' or a bare number of seconds -> seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    match = DURATION_PATTERN.fullmatch(text)
    if not text or not match:
        raise ValueError(text)
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides what a run does. Validated once, at construction."""

    task: str = "digits"
    data_dir: str = "./data"
    batch_size: int = 64
    test_batch_size: int = 1000
    epochs: int = 14
    lr: float = 1.0
    gamma: float = 0.7
    seed: int = 1
    log_interval: int = 10
    num_workers: int = 0
    device: str = "auto"
    amp: bool = False
    run_dir: str | None = None
    runs_dir: str = field(default_factory=lambda: default_runs_dir())
    # fake task: FakeData's size, image shape (C,H,W) and class count
    fake_size: int = 2048
    fake_image_shape: tuple[int, int, int] = (1, 28, 28)
    fake_classes: int = 10
    # checkpoints
    checkpoint_every_steps: int = 0
    checkpoint_every_minutes: float = 5.0
    keep_checkpoints: int = 2
    time_limit: float | None = None
    # live tuning: scale lr linearly with batch size when it changes
    scale_lr: bool = False
    # loggers
    tensorboard: bool = True
    wandb: str | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "test_batch_size", "epochs", "log_interval", "keep_checkpoints",
                     "fake_size", "fake_classes"):
            _require_int(name, getattr(self, name), minimum=1)
        _require_int("seed", self.seed, minimum=0)
        _require_int("checkpoint_every_steps", self.checkpoint_every_steps, minimum=0)
        _require_int("num_workers", self.num_workers, minimum=0)
        if self.num_workers > max_num_workers():
            raise ConfigError(
                "num_workers",
                f"{self.num_workers} is more than {max_num_workers()} (4 per CPU core on this "
                f"machine with {os.cpu_count()} cores); each worker is a process, so more only "
                "costs memory",
            )
        for name in ("lr", "gamma"):
            _require_positive_float(name, getattr(self, name))
        if not isinstance(self.checkpoint_every_minutes, (int, float)) or isinstance(
            self.checkpoint_every_minutes, bool) or self.checkpoint_every_minutes < 0:
            raise ConfigError("checkpoint_every_minutes",
                              f"{self.checkpoint_every_minutes!r} is not allowed: use minutes >= 0 "
                              "(0 turns timed checkpoints off)")
        if self.time_limit is not None:
            _require_positive_float("time_limit", self.time_limit)
        if not isinstance(self.device, str) or not DEVICE_PATTERN.match(self.device):
            raise ConfigError("device", f"{self.device!r} is not a device: use auto, cpu, cuda, "
                                        "cuda:N or mps")
        if not isinstance(self.task, str) or not self.task:
            raise ConfigError("task", "give a built-in task (" + ", ".join(BUILTIN_TASKS)
                              + ") or FILE.py:FUNCTION or package.module:FUNCTION")
        if self.task not in BUILTIN_TASKS and ":" not in self.task:
            raise ConfigError("task", f"{self.task!r} is not a task: use one of "
                              + ", ".join(BUILTIN_TASKS)
                              + ", or your own as FILE.py:FUNCTION or package.module:FUNCTION")
        shape = tuple(self.fake_image_shape)
        if len(shape) != 3 or not all(isinstance(n, int) and n > 0 for n in shape):
            raise ConfigError("fake_image_shape", f"{self.fake_image_shape!r} is not a shape: use "
                                                  "CxHxW with positive integers, e.g. 3x32x32")
        object.__setattr__(self, "fake_image_shape", shape)
        if self.wandb not in (None, "online", "offline"):
            raise ConfigError("wandb", f"{self.wandb!r} is not a mode: use online or offline")

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with some settings changed, validated again."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["fake_image_shape"] = list(self.fake_image_shape)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown setting {unknown[0]!r}; known settings: "
                              + ", ".join(sorted(known)))
        values = dict(data)
        if "fake_image_shape" in values:
            values["fake_image_shape"] = _parse_shape(values["fake_image_shape"])
        if isinstance(values.get("time_limit"), str):
            values["time_limit"] = _duration_setting("time_limit", values["time_limit"])
        return cls(**values)

    def resolved_run_dir(self, run_name: str) -> Path:
        return Path(self.run_dir) if self.run_dir else Path(self.runs_dir) / run_name


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Settings from a TOML file: keys are setting names (dashes or underscores)."""
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError("config", f"{path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("config", f"{path} is not valid TOML: {error}") from None
    return {key.replace("-", "_"): value for key, value in raw.items()}


def _parse_shape(value: Any) -> tuple[int, ...]:
    if isinstance(value, str):
        try:
            return tuple(int(part) for part in value.lower().split("x"))
        except ValueError:
            raise ConfigError("fake_image_shape", f"{value!r} is not a shape: use CxHxW, "
                                                  "e.g. 3x32x32") from None
    return tuple(value)


def _duration_setting(name: str, text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError:
        raise ConfigError(name, f"{text!r} is not a duration: use e.g. 11h50m, 90m or 3600s") \
            from None


def _require_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, f"{value!r} is not a whole number; use an integer >= {minimum}")
    if value < minimum:
        raise ConfigError(name, f"{value} is too small; use an integer >= {minimum}")


def _require_positive_float(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(name, f"{value!r} is not allowed; use a number > 0")
