"""The run commands (ls, logs, stop, pause, resume, checkpoint, set) on run folders without a
live host: what they print, and one-line refusals with exit code 2. Fast: no training."""

from __future__ import annotations

import json
import os

import pytest

from ctui.engine.cli.runs_cmds import MetricsFollower
from ctui.engine.events import EpochEnded, StepLogged
from ctui.engine.host.protocol import END_FILE, HOST_FILE
from ctui.engine.runs import write_best
from ctui.engine.sinks.console import epoch_line

from helpers import ctui_in_process as ctui


def finished_run(runs, name: str = "digits-1", epochs: int = 3):
    run_dir = runs / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"config": {"epochs": epochs}}))
    records = []
    for epoch in range(1, epochs + 1):
        records.append(StepLogged(epoch=epoch, step=1, loss=1.0 / epoch).to_dict())
        records.append(EpochEnded(epoch=epoch, epochs=epochs, train_seconds=1.5, lr=0.5,
                                  test_accuracy=0.9, batch_size=64).to_dict())
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run_dir / HOST_FILE).write_text(json.dumps({"pid": 1, "started": 3.0, "created": 0.0}))
    (run_dir / END_FILE).write_text(json.dumps({"state": "finished", "host_started": 3.0}))
    return run_dir, [EpochEnded.from_dict(r) for r in records if r["type"] == "epoch"]


@pytest.mark.parametrize("argv", [["stop"], ["pause"], ["resume"], ["checkpoint"],
                                  ["set", "batch_size=8"], ["logs"]])
def test_commands_without_a_live_run_say_so_in_one_line(capsys, argv):
    code, _, err = ctui(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "no live run" in err or "no runs" in err or "no run" in err, err


@pytest.mark.parametrize(("items", "expected"), [
    (["learning_rate=0.1"], "'learning_rate' is not a setting a live run can change"),
    (["batch_size=0"], "batch_size='0' is not allowed; use a whole number >= 1"),
    (["batch_size=1.5"], "batch_size='1.5' is not allowed"),
    (["num_workers=-1"], "num_workers='-1' is not allowed; use a whole number from 0 to"),
    (["num_workers=100000"], "num_workers='100000' is not allowed"),
    (["RUN", "batch_size"], "'batch_size' is not KEY=VALUE"),
    (["RUN"], "say what to change"),
    (["batchsize=3"], "(did you mean batch_size?)"),
], ids=lambda value: " ".join(value) if isinstance(value, list) else None)
def test_set_refuses_unknown_settings_and_bad_values(capsys, items, expected):
    code, _, err = ctui(capsys, "set", *items)
    assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err


def test_stop_names_a_run_that_is_not_live_and_how_to_continue_it(capsys, isolated_runs):
    run_dir, _ = finished_run(isolated_runs)
    (run_dir / END_FILE).write_text(json.dumps({"state": "stopped", "host_started": 3.0}))
    code, _, err = ctui(capsys, "stop", "digits-1")
    assert code == 2 and "digits-1 is not live (stopped)" in err
    assert f"ctui train --detach --resume --run-dir {run_dir.resolve()}" in err


def test_logs_prints_the_epoch_lines_of_a_run(capsys, isolated_runs):
    run_dir, epochs = finished_run(isolated_runs)
    for argv in (["logs"], ["logs", "digits-1"], ["logs", str(run_dir)],
                 ["logs", "--runs-dir", str(isolated_runs), "-f"]):
        code, out, _ = ctui(capsys, *argv)
        lines = out.splitlines()
        assert code == 0 and lines[:3] == [epoch_line(event) for event in epochs], argv
    assert lines[3:] == ["finished"]  # -f on an ended run: its lines and how it ended
    headless, _ = finished_run(isolated_runs, "digits-headless")  # no host ever served it
    for name in (HOST_FILE, END_FILE):
        (headless / name).unlink()
    code, out, _ = ctui(capsys, "logs", "-f", "digits-headless")
    assert code == 0 and out.splitlines()[-1] == "finished" and len(out.splitlines()) == 4


def test_ls_lists_every_run_with_status_epoch_and_checkpoint(capsys, isolated_runs):
    code, out, _ = ctui(capsys, "ls")
    assert code == 0 and "no runs in" in out
    run_dir, _ = finished_run(isolated_runs, "digits-1")
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "ckpt-e0004-s000000012.pt").write_bytes(b"")
    killed, _ = finished_run(isolated_runs, "digits-2", epochs=5)
    (killed / END_FILE).unlink()
    write_best(run_dir, "f1", "max", 0.81234, 2)  # as --monitor f1 leaves it
    (killed / "best.json").write_text('{"monitor": "f1", "value": "high", "epoch": 2}')
    code, out, _ = ctui(capsys, "ls", "--runs-dir", str(isolated_runs))
    header, first, second = out.splitlines()
    assert header.split() == ["RUN", "STATUS", "EPOCH", "BEST", "LAST", "CHECKPOINT", "SAVED",
                              "PID"]
    assert first.split() == ["digits-1", "finished", "3/3", "f1", "0.8123", "@2",
                             "ckpt-e0004-s000000012.pt", "0s", "ago", "-"]
    assert second.split() == ["digits-2", "interrupted", "5/5", "-", "-", "-", "-"]  # not ours


def test_following_metrics_survives_the_file_being_rewritten_on_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    follower = MetricsFollower(path)
    assert follower.read() == [{"epoch": 1}, {"epoch": 2}]  # the torn line waits
    with open(path, "a") as handle:
        handle.write('ch": 3}\n')
    assert follower.read() == [{"epoch": 3}]
    temp = tmp_path / "metrics.tmp"  # a resume drops the records after its checkpoint
    temp.write_text('{"epoch": 1}\n')
    os.replace(temp, path)
    assert follower.read() == [{"epoch": 1}]
