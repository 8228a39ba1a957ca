"""`ctui ls` says what a run is doing: paused (not just live) while its host holds it paused,
and failed with the error that ended it. Fast: no training."""

from __future__ import annotations

import json
import os

import pytest

from ctui.engine.cli.runs_cmds import _ls_row
from ctui.engine.events import StateChanged
from ctui.engine.host.protocol import END_FILE, HOST_FILE
from ctui.engine.host.registry import RunInfo
from ctui.engine.host.server import HostServer
from ctui.engine.runs import STATE_FILE, record_state, recorded_state

from helpers import ctui_in_process as ctui
from helpers import tiny, wait_until


def test_a_paused_live_run_is_listed_as_paused(tmp_path):
    run_dir = tmp_path / "digits-1"
    run_dir.mkdir(mode=0o700)
    live = RunInfo(name="digits-1", run_dir=run_dir, status="live", pid=os.getpid())
    assert _ls_row(live)[1] == "live"  # nothing recorded yet
    record_state(run_dir, "paused")
    assert _ls_row(live)[1] == "paused"
    record_state(run_dir, "running")
    assert _ls_row(live)[1] == "live"
    record_state(run_dir, "paused")  # by a host that is gone: another pid is live now
    assert _ls_row(RunInfo(name="digits-1", run_dir=run_dir, status="live",
                           pid=os.getpid() + 1))[1] == "live"


def test_the_host_records_its_state_as_it_changes(tmp_path):
    run_dir = tmp_path / "digits-1"
    run_dir.mkdir(mode=0o700)
    server = HostServer(run_dir, lambda command: None).start()
    try:
        server.publish(StateChanged(state="paused", reason="paused by request"))
        assert wait_until(lambda: recorded_state(run_dir, os.getpid()) == "paused", 5)
        server.publish(StateChanged(state="running", reason="resumed"))
        assert wait_until(lambda: recorded_state(run_dir, os.getpid()) == "running", 5)
    finally:
        server.shutdown(flush_seconds=0.5)
    assert (os.stat(run_dir / STATE_FILE).st_mode & 0o777) == 0o600


def test_a_crafted_state_file_is_no_state(tmp_path):
    for crafted in ('{"state": "paused"}', json.dumps({"state": "rm -rf", "pid": os.getpid()}),
                    "[1, 2]", "not json"):
        (tmp_path / STATE_FILE).write_text(crafted)
        assert recorded_state(tmp_path, os.getpid()) == ""


def test_a_failed_run_is_listed_with_its_error(capsys, tmp_path):
    runs = tmp_path / "runs"
    run_dir = runs / "digits-1"
    run_dir.mkdir(parents=True, mode=0o700)
    (run_dir / "config.json").write_text(json.dumps({"config": {"epochs": 3}}))
    (run_dir / HOST_FILE).write_text(json.dumps({"pid": 1, "started": 3.0, "created": 0.0}))
    (run_dir / END_FILE).write_text(json.dumps({
        "state": "failed", "host_started": 3.0,
        "reason": "ValueError: on_event raised: bad figure\x1b[31m"}))
    code, out, _ = ctui(capsys, "ls", "--runs-dir", str(runs))
    row = out.splitlines()[1]
    assert code == 0 and row.split()[:3] == ["digits-1", "failed", "0/3"]
    assert row.endswith("ValueError: on_event raised: bad figure\\x1b[31m")  # escaped


@pytest.mark.slow
def test_a_notebook_run_stopped_by_its_callback_is_listed_as_failed_with_the_error(
        capsys, tmp_path):
    from ctui.engine import train
    from ctui.engine.events import StepLogged

    def broken(event):
        if isinstance(event, StepLogged):
            raise ValueError("my plot failed")

    runs = tmp_path / "runs"
    with pytest.raises(ValueError, match="my plot failed"):
        train(tiny(runs_dir=str(runs), log_interval=1), on_event=broken, quiet=True)
    capsys.readouterr()
    code, out, _ = ctui(capsys, "ls", "--runs-dir", str(runs))
    row = out.splitlines()[1]
    assert code == 0 and row.split()[1] == "failed", out
    assert "ValueError: my plot failed" in row
