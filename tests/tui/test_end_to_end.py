"""The real `ctui` in a real terminal (tmux): start a run from the panel, watch digits train,
detach, attach again, and see it finish; the screen is read with capture-pane."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
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

    def wait_for(self, text: str | Callable[[str], bool], timeout: float = 90.0) -> str:
        shown = text if callable(text) else (lambda screen: text in screen)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if shown(screen):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared; the screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


EPOCHS = 6


def table_epochs(screen: str) -> list[str]:
    """The epoch numbers in the epoch table's rows on the screen."""
    lines = [line.split() for line in screen.splitlines()]
    return [line[0] for line in lines if line and line[0].isdigit() and "%" in " ".join(line)]


def test_ctui_trains_digits_detaches_and_attaches_again(tmp_path, isolated_runs):
    terminal = Terminal(tmp_path)
    try:
        terminal.type(f"{CTUI} train --epochs {EPOCHS} --no-tensorboard; echo PANEL-EXIT=$?")
        terminal.wait_for("Training · digits-", timeout=30)
        # Epoch 1's row, then detach while the rest train (epochs of about a second; progress
        # is drawn once a second, so "epoch 2/6" itself may never be on the screen).
        screen = terminal.wait_for(lambda screen: "1" in table_epochs(screen))
        assert "digits" in screen and "no NVIDIA GPU" in screen
        terminal.press("q")
        terminal.wait_for("Detach (d)")
        terminal.press("d")
        screen = terminal.wait_for("PANEL-EXIT=0")
        assert "it keeps training" in screen

        terminal.type(f"{CTUI} attach; echo PANEL-EXIT=$?")
        terminal.wait_for("finished", timeout=120)

        # Every epoch, most trained while detached: the table is drawn at the panel's next
        # frame, maybe after "finished".
        every_epoch = [str(epoch) for epoch in range(1, EPOCHS + 1)]
        terminal.wait_for(lambda screen: table_epochs(screen) == every_epoch, timeout=5)
        terminal.press("q")
        terminal.wait_for("PANEL-EXIT=0")
    finally:
        terminal.close()
    (run_dir,) = [path for path in isolated_runs.iterdir() if path.is_dir()]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == list(range(1, EPOCHS + 1))
