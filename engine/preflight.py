"""What can be refused before torch loads (which takes seconds): a task file that is not there,
a CUDA or MPS device this machine cannot have. A typo
then costs a fraction of a second. Standard library only; what needs torch to know (a CUDA
driver that is present but broken, a task file's missing function) is checked later."""

from __future__ import annotations

import glob
import os
import stat
import sys
from pathlib import Path

from .config import BUILTIN_TASKS, ConfigError, RunConfig

# Device nodes through which a CUDA runtime reaches a GPU on Linux: NVIDIA's, ROCm's (torch
# calls AMD GPUs "cuda" too), WSL2's and Jetson's. With none of them, no torch can see a GPU.
_GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia[0-9]*", "/dev/kfd", "/dev/dxg", "/dev/nvmap",
              "/dev/nvhost-ctrl*")


class TaskFileError(ConfigError):
    """--task names a file that cannot be imported: a usage error (a ConfigError, so every
    caller that refuses bad settings refuses it), worded as the task loader words it."""

    def __init__(self, spec: str, problem: str) -> None:
        super().__init__("task", problem)
        self.args = (f"--task {spec}: {problem}",)


def check_before_torch(config: RunConfig) -> None:
    """Raise ConfigError or TaskError for what is wrong without loading torch."""
    check_device(config.device)
    check_task(config.task)


def check_device(spec: str) -> None:
    if spec.startswith("cuda") and not _gpu_possible():
        raise ConfigError("device", f"{spec} asked for, but this machine has no usable CUDA "
                          "GPU; use --device cpu or auto")
    if spec == "mps" and sys.platform != "darwin":
        raise ConfigError("device", "mps asked for, but Apple's MPS backend is not available "
                          "here; use --device cpu or auto")


def _gpu_possible() -> bool:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    if not sys.platform.startswith("linux"):
        return True  # no cheap way to know: torch decides
    return any(glob.glob(pattern) for pattern in _GPU_NODES)


def check_task(spec: str) -> None:
    """A user task file (FILE.py:FUNCTION) that is not there or not a Python file; the
    function itself is looked up once the file is imported."""
    if spec in BUILTIN_TASKS:
        return
    target, _, function = spec.rpartition(":")
    if not target or not function:
        return  # the task loader says how to write it
    if target.endswith(".py") or "/" in target or "\\" in target:
        problem = task_file_problem(Path(target))
        if problem:
            raise TaskFileError(spec, problem)
    # A module is looked for only when it is imported: the run host's Python path (with
    # the current folder on it) may find what this process's cannot.


def task_file_problem(path: Path) -> str | None:
    """Why a task file cannot be imported, or None. A task file is a regular .py file:
    anything else (/etc/passwd, a folder, a FIFO that would block the import) is refused
    before Python opens it."""
    if path.suffix != ".py":
        return f"{path} is not a Python file; give FILE.py:FUNCTION (or package.module:FUNCTION)"
    try:
        mode = path.stat().st_mode  # follows a link: the user named this file
    except FileNotFoundError:
        return f"file {path} does not exist"
    except (OSError, ValueError) as error:
        return f"cannot read {path} ({getattr(error, 'strerror', None) or error})"
    if not stat.S_ISREG(mode):
        return f"{path} is not a regular file; give FILE.py:FUNCTION"
    return None
