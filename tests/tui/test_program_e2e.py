"""The real `ctui run -- python script.py` in a real terminal (tmux): the script asks for a line
on stdin, typed in the panel's input mode, then draws a tqdm-like bar; the panel detaches with
q, and `ctui attach` shows the program's screen again and lets it finish."""

from __future__ import annotations

import shutil
import sys

import pytest
from test_end_to_end import CTUI, Terminal

pytestmark = [pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")]

SCRIPT = r'''
import sys, time
notes = input("Notes for this run? ")
print(f"noted: {notes}")
for step in range(0, 41, 4):
    sys.stdout.write(f"\r{step * 100 // 40:3d}%|{'#' * (step // 4):10}| {step}/40")
    sys.stdout.flush()
    time.sleep(0.05)
print("\n\x1b[32mtrained\x1b[0m")
input("Enter finishes: ")
print("bye")
'''


def test_ctui_run_types_into_the_program_detaches_and_attaches_again(tmp_path, isolated_runs):
    (tmp_path / "ask.py").write_text(SCRIPT)
    terminal = Terminal(tmp_path)
    try:
        terminal.type(f"{CTUI} run -- {sys.executable} ask.py; echo PANEL-EXIT=$?")
        terminal.wait_for("Notes for this run?", timeout=30)
        terminal.press("i")
        terminal.wait_for("typing goes to the program")
        terminal.type("baseline, lr 3e-4")  # and Enter
        screen = terminal.wait_for("Enter finishes:")
        assert "noted: baseline, lr 3e-4" in screen
        assert "100%|##########| 40/40" in screen and " 50%|" not in screen  # redrawn in place
        terminal.press("C-]")
        terminal.wait_for("i type")  # the program's keys bar again
        terminal.press("q")
        terminal.wait_for("Detach (d)")
        terminal.press("d")
        screen = terminal.wait_for("PANEL-EXIT=0")
        assert "its program keeps running" in screen

        terminal.type(f"{CTUI} attach; echo PANEL-EXIT=$?")
        screen = terminal.wait_for("Enter finishes:", timeout=30)  # from the host's history
        assert "noted: baseline, lr 3e-4" in screen and "100%|##########| 40/40" in screen
        terminal.press("i")
        terminal.wait_for("typing goes to the program")
        terminal.press("Enter")
        terminal.wait_for("exited with code 0")
        terminal.press("q")  # the run has ended: q quits at once
        terminal.wait_for("PANEL-EXIT=0")
    finally:
        terminal.close()
