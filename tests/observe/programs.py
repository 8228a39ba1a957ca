"""Run the scripts in scripts/ as `ctui run` would run them, observed or bare."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from ctui.engine.observe import ENV_DIR, RecordFollower, child_environment

SCRIPTS = Path(__file__).resolve().parent / "scripts"


class Program:
    """A script copied into its own folder (so loader labels read `clip_style.py:NN`)."""

    def __init__(self, folder: Path, observe: Path | None) -> None:
        self.folder = folder
        self.observe = observe

    def command(self, *argv: str) -> list[str]:
        """`python *argv`, with each script of scripts/ that argv names copied in first."""
        for arg in argv:
            if arg.endswith(".py") and (SCRIPTS / arg).is_file():
                shutil.copy(SCRIPTS / arg, self.folder / arg)
        return [sys.executable, *argv]

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key != ENV_DIR}
        env.update(extra or {})
        env["PYTHONUNBUFFERED"] = "1"
        return child_environment(self.observe, env) if self.observe else env

    def run(self, *argv: str, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
        result = subprocess.run(self.command(*argv), cwd=self.folder, env=self.env(env),
                                capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    def start(self, *argv: str) -> subprocess.Popen:
        return subprocess.Popen(self.command(*argv), cwd=self.folder, env=self.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def records(self, kind: str | None = None) -> list[dict]:
        follower = RecordFollower(self.observe)
        records = follower.poll()
        assert follower.skipped == 0
        return [record for record in records if kind is None or record["kind"] == kind]


def private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700)
    path.chmod(0o700)
    return path


def epochs(stdout: str) -> list[list[str]]:
    return [line.split() for line in stdout.splitlines() if line.startswith("EPOCH")]


def result_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("RESULT"))
