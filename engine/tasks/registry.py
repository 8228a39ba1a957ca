"""Find the task a config names: built-in, FILE.py:FUNCTION, or package.module:FUNCTION."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from torch import nn

from ..config import RunConfig
from ..errors import user_error_line
from ..preflight import task_file_problem
from .base import Task, TaskError
from .builtin import BUILTIN


def load_task(config: RunConfig) -> Task:
    if config.task in BUILTIN:
        return BUILTIN[config.task](config)
    build = _user_builder(config.task)
    try:
        task = build(config)
    except TaskError:
        raise
    except (Exception, SystemExit) as error:
        raise TaskError(f"--task {config.task}: build(config) raised "
                        f"{user_error_line(error)}") from error
    _check(task, config.task)
    if task.name == "custom":
        task.name = config.task
    return task


def _user_builder(spec: str):
    target, _, function = spec.rpartition(":")
    if not target or not function:
        raise TaskError(f"--task {spec}: use FILE.py:FUNCTION or package.module:FUNCTION")
    if target.endswith(".py") or "/" in target or "\\" in target:
        module = _module_from_file(Path(target), spec)
    else:
        module = _module_from_import(target, spec)
    build = getattr(module, function, None)
    if not callable(build):
        raise TaskError(f"--task {spec}: {target} has no function {function!r}")
    return build


def _module_from_import(target: str, spec: str):
    try:
        return importlib.import_module(target)
    except ImportError as error:
        raise TaskError(f"--task {spec}: cannot import module {target!r} ({error})") from None
    except TypeError:  # a relative name such as ..tasks has no package to be relative to
        raise TaskError(f"--task {spec}: {target!r} is not a module name; use "
                        "package.module:FUNCTION or FILE.py:FUNCTION") from None
    except (Exception, SystemExit) as error:
        raise TaskError(f"--task {spec}: importing {target} raised "
                        f"{user_error_line(error)}") from error


def _module_from_file(path: Path, spec: str):
    problem = task_file_problem(path)
    if problem:
        raise TaskError(f"--task {spec}: {problem}")
    # As `python file.py` would: the file's own folder first on the path, so the modules
    # beside it import (the user named the file; its folder is theirs to trust).
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = f"ctui_user_task_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:  # not reached for a .py file
        raise TaskError(f"--task {spec}: Python cannot load {path} as a module")
    module = importlib.util.module_from_spec(module_spec)
    # Registered so pickling for DataLoader workers (spawn) can find the module's classes.
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except (Exception, SystemExit) as error:  # SystemExit: a script's own argparse or exit()
        sys.modules.pop(name, None)
        raise TaskError(f"--task {spec}: loading {path} raised "
                        f"{user_error_line(error)}") from error
    return module


def _check(task: object, spec: str) -> None:
    if not isinstance(task, Task):
        raise TaskError(f"--task {spec}: build(config) must return ctui.engine.Task, "
                        f"not {type(task).__name__}")
    if not isinstance(task.model, nn.Module):
        raise TaskError(f"--task {spec}: Task.model must be a torch.nn.Module")
    for name in ("train_dataset", "test_dataset"):
        dataset = getattr(task, name)
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TaskError(f"--task {spec}: Task.{name} must be a map-style dataset "
                            "(with __getitem__ and __len__)")
        if len(dataset) == 0:
            raise TaskError(f"--task {spec}: Task.{name} is empty")
    for name in ("loss", "optimizer", "scheduler", "step", "evaluate", "batch_size_of",
                 "collate_fn"):
        value = getattr(task, name)
        if value is not None and not callable(value):
            raise TaskError(f"--task {spec}: Task.{name} must be a function, not a "
                            f"{type(value).__name__}")
    metrics = task.metrics
    if metrics is not None:
        if not hasattr(metrics, "items") or not all(
                isinstance(key, str) and callable(fn) for key, fn in metrics.items()):
            raise TaskError(f"--task {spec}: Task.metrics must be a dict of name -> "
                            "function(output, target)")
        if task.step is not None:
            raise TaskError(f"--task {spec}: Task.metrics judge model(input) against target, "
                            "which a task with its own step does not have: compute them in "
                            "Task.evaluate (or return them from step)")
