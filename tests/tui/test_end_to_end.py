"""The real `ctui` in a real terminal (tmux): start a run from the panel, watch digits train,
detach, attach again, and see it finish; the screen is read with capture-pane."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")]

CTUI = str(Path(sys.executable).with_name("ctui"))


class Terminal:
    """A tmux session on its own server, 100x30, TERM=xterm-256color."""

    def __init__(self, cwd: Path) -> None:
        self.socket = f"ctui-test-{os.getpid()}"
        self.cwd = cwd
        self._tmux("new-session", "-d", "-s", "main", "-x", "100", "-y", "30", "-c", str(cwd),
                   "bash --norc --noprofile")
        self.type("export TERM=xterm-256color PS1='$ '")

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True,
                              text=True, check=True).stdout

    def type(self, text: str, enter: bool = True) -> None:
        self._tmux("send-keys", "-t", "main", "-l", text)
        if enter:
            self._tmux("send-keys", "-t", "main", "Enter")

    def press(self, key: str) -> None:
        self._tmux("send-keys", "-t", "main", key)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "main")

    def wait_for(self, text: str, timeout: float = 90.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared; the screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def test_ctui_trains_digits_detaches_and_attaches_again(tmp_path, isolated_runs):
    terminal = Terminal(tmp_path)
    try:
        terminal.type(f"{CTUI} train --epochs 3 --no-tensorboard; echo PANEL-EXIT=$?")
        terminal.wait_for("Training · digits-", timeout=30)
        screen = terminal.wait_for("epoch 2/3")  # epoch 1 has ended; the host exits after 3
        assert "digits" in screen and "no NVIDIA GPU" in screen
        terminal.press("q")
        terminal.wait_for("Detach (d)")
        terminal.press("d")
        screen = terminal.wait_for("PANEL-EXIT=0")
        assert "it keeps training" in screen

        terminal.type(f"{CTUI} attach; echo PANEL-EXIT=$?")
        terminal.wait_for("finished", timeout=120)

        def table_epochs() -> list[str]:
            lines = [line.split() for line in terminal.screen().splitlines()]
            return [line[0] for line in lines if line and line[0] in ("1", "2", "3")
                    and "%" in " ".join(line)]

        # The table redraws on the panel's next tick (a few per second), maybe after "finished".
        deadline = time.monotonic() + 5
        while table_epochs() != ["1", "2", "3"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert table_epochs() == ["1", "2", "3"]  # every epoch, two trained while detached
        terminal.press("q")
        terminal.wait_for("PANEL-EXIT=0")
    finally:
        terminal.close()
    (run_dir,) = [path for path in isolated_runs.iterdir() if path.is_dir()]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [1, 2, 3]
