"""The panel gives way to the training (SCHED_BATCH: no wakeup preemption of the training's
threads), and a run it starts trains at the normal policy all the same. Linux only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from helpers import REPO

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling")


def policy_of(pid: int) -> int:
    return os.sched_getscheduler(pid)


def test_the_panel_and_the_threads_it_starts_run_as_batch():
    code = ("import os, threading\n"
            "from ctui.engine.scheduling import defer_to_training\n"
            "assert defer_to_training()\n"
            "seen = []\n"
            "thread = threading.Thread(target=lambda: seen.append(os.sched_getscheduler(0)))\n"
            "thread.start(); thread.join()\n"
            "print(os.sched_getscheduler(0), seen[0])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(os.SCHED_BATCH)] * 2


def test_a_run_started_from_a_batch_process_trains_at_the_normal_policy(tmp_path):
    """A panel (SCHED_BATCH) that starts a run: the run host it launches, which the policy
    reaches through fork and exec, puts itself back to SCHED_OTHER."""
    batch = f"import os; os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0)); " \
            f"os.execv({sys.executable!r}, [{sys.executable!r}, '-m', 'ctui.tui.main', " \
            f"'train', '--detach', '--epochs', '50', '--no-tensorboard', " \
            f"'--runs-dir', {str(tmp_path)!r}])"
    result = subprocess.run([sys.executable, "-c", batch], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    (run_dir,) = [path for path in tmp_path.iterdir() if path.is_dir()]
    host = json.loads((run_dir / "host.json").read_text())["pid"]
    try:
        assert policy_of(host) == os.SCHED_OTHER
        deadline = time.monotonic() + 60  # and its training threads, once they exist
        while len(os.listdir(f"/proc/{host}/task")) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        for task in os.listdir(f"/proc/{host}/task"):
            assert policy_of(int(task)) == os.SCHED_OTHER
    finally:
        subprocess.run([sys.executable, "-m", "ctui.tui.main", "stop", str(run_dir)],
                       capture_output=True, cwd=REPO, timeout=120)
