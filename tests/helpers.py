"""Helpers for tests: run the real ctui command; build tiny runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_ctui(*args: str, timeout: float = 300, env: dict | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real `ctui` command in a child process, as a user types it."""
    return subprocess.run([sys.executable, "-m", "ctui.tui.main", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})},
                          cwd=cwd or REPO)


def tiny(**overrides):
    """A digits run small enough for unit tests: few steps, one big eval batch, no loggers."""
    from ctui.engine import RunConfig

    settings = dict(task="digits", epochs=1, batch_size=128, test_batch_size=2000,
                    log_interval=4, tensorboard=False, checkpoint_every_minutes=0)
    settings.update(overrides)
    return RunConfig(**settings)


def ctui_in_process(capsys, *argv: str) -> tuple[int, str, str]:
    """An engine `ctui` command run in this process: (exit code, stdout, stderr)."""
    from ctui.engine.cli.main import main

    try:
        code = main(list(argv))
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def wait_until(condition, timeout: float = 5.0) -> bool:
    """Poll condition until it holds or timeout passes; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def killed_before_its_first_checkpoint(**settings) -> None:
    """A run set up (its folder and config.json written) in a process then SIGKILLed, as a
    reclaimed instance would be, before it saved anything."""
    code = ("import os, signal; from ctui.engine import Engine, RunConfig; "
            f"Engine(RunConfig(**{settings!r})); os.kill(os.getpid(), signal.SIGKILL)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == -9, result.stderr
