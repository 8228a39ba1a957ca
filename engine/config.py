"""Run settings: one frozen, validated object shared by the CLI, the engine and the notebook API.

Names and defaults follow pytorch/examples mnist/main.py so users can carry their flags over.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

if __import__("sys").version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

BUILTIN_TASKS = ("digits", "mnist", "cifar10", "fake")
OPTIMIZERS = ("adadelta", "sgd", "adamw")
SCHEDULERS = ("step", "cosine", "none")
MODES = ("max", "min")
MAX_ACCUMULATE = 4096  # micro-batches per step: far past any real use, still a C int
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda|cuda:\d{1,4}")  # used with fullmatch
DURATION_PATTERN = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")

# Upper bounds: past them a value only overflows C integers (itertools, torch, NumPy) or asks
# for memory no machine has, so it is refused here with one line instead of failing mid-run.
MAX_COUNT = 2**31 - 1  # batch sizes, epochs, intervals: a C int
MAX_SEED = 2**32 - 1  # NumPy's seed range; seed_everything seeds NumPy, torch and Python
MAX_SECONDS = 365 * 86400  # --time-limit, --checkpoint-every-minutes: a year
MAX_FAKE_SIZE = 10_000_000  # the sampler holds a permutation of the whole fake dataset
MAX_FAKE_CLASSES = 100_000  # the fake model's last layer has 256 weights per class
# The fake task turns images into PIL images (1 to 4 channels) and its SmallConvNet halves
# H and W twice (a 3x3 image pools down to nothing), so sides go from 4 up.
FAKE_CHANNELS = (1, 4)
FAKE_SIDE = (4, 4096)
MAX_SETTINGS_FILE = 1 << 20  # a --config file is a few lines
MAX_RANKS = 4096  # --nproc-per-node and --nnodes: past any real job


class ConfigError(ValueError):
    """A setting a user gave is not allowed; the message names the flag and what is allowed."""

    def __init__(self, name: str, message: str):
        self.name = name
        self.detail = message  # without the flag, for argparse, which names the flag itself
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
    """'11h50m', '90m', '3600s' or a bare number of seconds -> seconds (inf when too large to
    count; check_setting refuses it)."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    match = DURATION_PATTERN.fullmatch(text)
    if not text or not match:
        raise ValueError(text)
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    try:
        return float(hours * 3600 + minutes * 60 + seconds)
    except OverflowError:
        return math.inf


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
    # the optimisation (a task's own optimizer or scheduler wins over these two)
    optimizer: str = "adadelta"
    scheduler: str = "step"
    accumulate: int = 1  # micro-batches per optimizer step
    clip_grad_norm: float | None = None
    compile: bool = False
    val_every: int = 1  # evaluate every N epochs (and always after the last)
    # best checkpoint: keep ckpt-best.pt for the best epoch by this figure
    monitor: str | None = None
    mode: str | None = None  # max or min; None: min for a figure named *loss, else max
    # loggers
    tensorboard: bool = True
    wandb: str | None = None
    # data parallel, with torchrun's meanings (engine/distributed): ranks per machine (a
    # number, "gpu" or "auto"), machines, this machine's rank, rank 0's HOST:PORT, restarts
    nproc_per_node: int | str = 1
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None
    max_restarts: int = 0
    rdzv_timeout: float = 900.0  # seconds the machines wait for each other to join

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = check_setting(item.name, getattr(self, item.name))
            object.__setattr__(self, item.name, value)  # normalised: "90m" -> 5400.0, [..] -> (..)

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
        unknown = sorted((key for key in data if key not in known), key=str)
        if unknown:
            name = str(unknown[0])
            raise ConfigError(name, f"unknown setting {_shown(name)}; known settings: "
                              + ", ".join(sorted(known)))
        return cls(**data)



def check_setting(name: str, value: Any) -> Any:
    """The value of setting `name` as RunConfig keeps it, or ConfigError saying what is allowed.
    The flag parsers call this too, so a flag and a --config file are refused alike."""
    return _RULES[name](name, value)


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Settings from a TOML file: keys are setting names (dashes or underscores). Every value is
    checked here, so a bad one is reported with the file it came from."""
    text = _read_settings_file(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("config", f"{path} is not valid TOML: {error}") from None
    except ValueError:  # tomllib lets int() refuse a number of over 4300 digits
        raise ConfigError("config", f"{path} is not usable TOML: a number in it is too "
                                    "long") from None
    except RecursionError:
        raise ConfigError("config", f"{path} is not usable TOML: arrays or tables nested too "
                                    "deep") from None
    settings: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name in settings:
            raise ConfigError("config", f"{path} sets {name} twice (as {name} and "
                                        f"{name.replace('_', '-')}); keep one")
        settings[name] = value
    try:
        RunConfig.from_dict(settings)
    except ConfigError as error:
        raise ConfigError(error.name, f"{error.detail} (set in {path})") from None
    return settings


def _read_settings_file(path: str | os.PathLike[str]) -> str:
    """The text of a --config file: a regular UTF-8 file of at most MAX_SETTINGS_FILE bytes,
    never a folder, a FIFO that blocks or a device that never ends."""
    from .safefs import UnsafePathError, read_bounded

    try:
        # realpath: the user typed this path, so a link to their settings is fine; read_bounded
        # then opens the real file without blocking and checks kind and size.
        data = read_bounded(os.path.realpath(path), MAX_SETTINGS_FILE)
    except FileNotFoundError:
        raise ConfigError("config", f"{path} does not exist") from None
    except UnsafePathError as error:  # not a regular file, or too large
        what = _file_kind(path) or error.strerror
        raise ConfigError("config", f"{path} is {what}; give a TOML file of settings (a few "
                                    "lines)") from None
    except OSError as error:
        raise ConfigError("config", f"cannot read {path}: {error.strerror or error}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("config", f"{path} is not a text file (TOML is UTF-8 text); give a "
                                    "TOML file of settings") from None


def _file_kind(path: str | os.PathLike[str]) -> str | None:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
             (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))
    return next((text for test, text in kinds if test(mode)), None)


# -- the rule for each setting ------------------------------------------------------------


def _shown(value: Any, limit: int = 60) -> str:
    """repr(value) short enough for a one-line message (a 5000-digit int has no repr)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"a number of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _finite(value: Any) -> bool:
    """A real, finite int or float (not a bool, nan, inf or an int past float's range)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _int_rule(minimum: int, maximum: int, why: str = "") -> Callable[[str, Any], int]:
    allowed = f"an integer >= {minimum} and <= {maximum}{why}"

    def rule(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(name, f"{_shown(value)} is not a whole number; use {allowed}")
        if value < minimum:
            raise ConfigError(name, f"{_shown(value)} is too small; use {allowed}")
        if value > maximum:
            raise ConfigError(name, f"{_shown(value)} is too large; use {allowed}")
        return value
    return rule


def _positive_number(name: str, value: Any) -> float:
    # inf and nan pass `> 0` checks but turn every weight into nan: finite numbers only.
    if not _finite(value) or not value > 0:
        raise ConfigError(name, f"{_shown(value)} is not allowed; use a finite number > 0")
    return value


def _num_workers(name: str, value: Any) -> int:
    value = _int_rule(0, MAX_COUNT)(name, value)
    if value > max_num_workers():
        raise ConfigError(name, f"{value} is more than {max_num_workers()} (4 per CPU core on "
                          f"this machine with {os.cpu_count()} cores); each worker is a process, "
                          "so more only costs memory")
    return value


def _minutes(name: str, value: Any) -> float:
    limit = MAX_SECONDS // 60
    if not _finite(value) or not 0 <= value <= limit:
        raise ConfigError(name, f"{_shown(value)} is not allowed: use minutes >= 0 and <= "
                                f"{limit} (a year); 0 turns timed checkpoints off")
    return value


def _time_limit(name: str, value: Any) -> float | None:
    allowed = f"a duration > 0 and at most a year ({MAX_SECONDS}s), e.g. 11h50m, 90m or 3600s"
    if value is None:
        return None
    given = value
    if isinstance(value, str):
        try:
            value = parse_duration(value)
        except ValueError:
            raise ConfigError(name, f"{_shown(given)} is not a duration: use {allowed}") \
                from None
    if not _finite(value) or not 0 < value <= MAX_SECONDS:
        raise ConfigError(name, f"{_shown(given)} is not allowed; use {allowed}")
    return float(value)


def _choice(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    def rule(name: str, value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ConfigError(name, f"{_shown(value)} is not allowed; use "
                              + ", ".join(choices))
        return value
    return rule


def _optional_positive(name: str, value: Any) -> float | None:
    return None if value is None else _positive_number(name, value)


def _monitor(name: str, value: Any) -> str | None:
    # Which figures exist is known once the task has evaluated; the engine checks then.
    if value is not None and not (isinstance(value, str) and re.fullmatch(r"[\w./-]{1,64}",
                                                                             value)):
        raise ConfigError(name, f"{_shown(value)} is not a figure name: use the name of one the "
                          "epoch line shows, e.g. test_loss, test_accuracy or your task's f1")
    return value


def _mode(name: str, value: Any) -> str | None:
    return None if value is None else _choice(MODES)(name, value)


def _path(name: str, value: Any) -> str:
    """A folder setting: a non-empty path; a Path from a notebook is kept as its string."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value or "\0" in value:
        raise ConfigError(name, f"{_shown(value)} is not a folder path; use a non-empty string")
    return value


def _optional_path(name: str, value: Any) -> str | None:
    return None if value is None else _path(name, value)


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(name, f"{_shown(value)} is not allowed; use true or false")
    return value


def _task(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value or "\0" in value:
        raise ConfigError(name, f"{_shown(value)} is not a task: give a built-in task ("
                          + ", ".join(BUILTIN_TASKS)
                          + ") or FILE.py:FUNCTION or package.module:FUNCTION")
    if value not in BUILTIN_TASKS and ":" not in value:
        raise ConfigError(name, f"{_shown(value)} is not a task: use one of "
                          + ", ".join(BUILTIN_TASKS)
                          + ", or your own as FILE.py:FUNCTION or package.module:FUNCTION")
    return value


def _device(name: str, value: Any) -> str:
    if not isinstance(value, str) or not DEVICE_PATTERN.fullmatch(value):
        raise ConfigError(name, f"{_shown(value)} is not a device: use auto, cpu, cuda, "
                                "cuda:N or mps")
    return value


def _wandb(name: str, value: Any) -> str | None:
    if value is not None and not (isinstance(value, str) and value in ("online", "offline")):
        raise ConfigError(name, f"{_shown(value)} is not a mode: use online or offline")
    return value


def _fake_image_shape(name: str, value: Any) -> tuple[int, int, int]:
    (c_min, c_max), (side_min, side_max) = FAKE_CHANNELS, FAKE_SIDE
    allowed = (f"CxHxW with C from {c_min} to {c_max} and H, W from {side_min} to {side_max}, "
               "e.g. 3x32x32")
    shape = _shape_parts(value)
    if shape is None:
        raise ConfigError(name, f"{_shown(value)} is not a shape: use {allowed}")
    channels, height, width = shape
    if not (c_min <= channels <= c_max and side_min <= min(height, width)
            and max(height, width) <= side_max):
        raise ConfigError(name, f"{'x'.join(map(str, shape))} is not a shape the fake task can "
                                f"train on: use {allowed}")
    return shape


def _shape_parts(value: Any) -> tuple[int, int, int] | None:
    """(C, H, W) from '3x32x32' or a list/tuple of three ints; None when it is neither."""
    if isinstance(value, str):
        try:
            value = [int(part) for part in value.lower().split("x")]
        except ValueError:
            return None
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        return None
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in value):
        return None
    return tuple(value)


def _nproc(name: str, value: Any) -> int | str:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if value in ("gpu", "auto"):
        return value
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RANKS:
        raise ConfigError(name, f"{_shown(value)} is not allowed; use a number of ranks from 1 "
                          f"to {MAX_RANKS}, gpu (one per visible GPU) or auto (one per GPU, "
                          "else 1)")
    return value


def _endpoint(name: str, value: Any) -> str | None:
    if value is None:
        return None
    host, _, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if not (host and re.fullmatch(r"[\w.\-\[\]:]{1,253}", host) and port.isdigit()
            and 0 < int(port) < 65536):
        raise ConfigError(name, f"{_shown(value)} is not an endpoint: use HOST:PORT of the "
                          "machine that runs rank 0, e.g. 10.0.0.1:29500")
    return value


_COUNT = _int_rule(1, MAX_COUNT)
_RULES: dict[str, Callable[[str, Any], Any]] = {
    "task": _task,
    "data_dir": _path,
    "batch_size": _COUNT,
    "test_batch_size": _COUNT,
    "epochs": _COUNT,
    "lr": _positive_number,
    "gamma": _positive_number,
    "seed": _int_rule(0, MAX_SEED, " (NumPy's seed range)"),
    "log_interval": _COUNT,
    "num_workers": _num_workers,
    "device": _device,
    "amp": _bool,
    "run_dir": _optional_path,
    "runs_dir": _path,
    "fake_size": _int_rule(1, MAX_FAKE_SIZE),
    "fake_image_shape": _fake_image_shape,
    "fake_classes": _int_rule(1, MAX_FAKE_CLASSES),
    "checkpoint_every_steps": _int_rule(0, MAX_COUNT),
    "checkpoint_every_minutes": _minutes,
    "keep_checkpoints": _COUNT,
    "time_limit": _time_limit,
    "scale_lr": _bool,
    "optimizer": _choice(OPTIMIZERS),
    "scheduler": _choice(SCHEDULERS),
    "accumulate": _int_rule(1, MAX_ACCUMULATE),
    "clip_grad_norm": _optional_positive,
    "compile": _bool,
    "val_every": _COUNT,
    "monitor": _monitor,
    "mode": _mode,
    "tensorboard": _bool,
    "wandb": _wandb,
    "nproc_per_node": _nproc,
    "nnodes": _int_rule(1, MAX_RANKS),
    "node_rank": _int_rule(0, MAX_RANKS - 1),
    "rdzv_endpoint": _endpoint,
    "max_restarts": _int_rule(0, 1000),
    "rdzv_timeout": _positive_number,
}
