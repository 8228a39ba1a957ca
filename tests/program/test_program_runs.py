"""`ctui run` end to end with real run hosts and the stand-in scripts: the prompt answered over
the socket, detach and reattach, num_workers changed between passes, restart from the newest
loadable checkpoint after the host is SIGKILLed, stop within the grace, restarts on failure, and
bad commands. Slow: each starts processes and imports torch."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest

from ctui.engine.events import (
    LoaderPass,
    ProgramExited,
    ProgramOutput,
    ProgramStarted,
    SetNumWorkers,
    StateChanged,
    TypeInput,
)
from ctui.engine.host import RunClient
from ctui.engine.host.registry import run_info
from ctui.engine.program import ProgramSpec, start_program

from helpers import run_ctui, wait_until

pytestmark = pytest.mark.slow
PROMPT = "Enter a line of notes"


def ended(event) -> bool:
    return isinstance(event, StateChanged) and event.state in ("finished", "stopped", "failed")


def answer_prompt(client: RunClient, seen: list) -> None:
    """Wait for the notes prompt on the program's screen, then type a line."""
    prompt = client.wait_for(lambda e: isinstance(e, ProgramOutput) and PROMPT in e.data, 120)
    assert prompt is not None, "the program never asked for its notes"
    seen.append(prompt)
    client.send(TypeInput(data="first try\r"))


def screen(events) -> str:
    return "".join(event.data for event in events if isinstance(event, ProgramOutput))


def test_cdlab_prompt_epochs_reattach_and_live_num_workers(project, isolated_runs):
    spec = ProgramSpec(argv=(sys.executable, "train.py", "train", "--exp_config",
                             "configs/levircd.yaml", "--epochs", "4", "--step_sleep", "0.2"),
                       cwd=str(project))
    run_dir = start_program(spec, isolated_runs)
    seen: list = []
    with RunClient.connect(run_dir) as client:  # the first panel: answers, then goes away
        answer_prompt(client, seen)
        assert client.wait_for(lambda e: isinstance(e, LoaderPass), 120) is not None
    with RunClient.connect(run_dir) as client:  # a second panel: history and screen come back
        history = client.history()
        text = screen(history)
        assert PROMPT in text and "first try" in text and "notes: first try" in text
        assert any(isinstance(e, ProgramStarted) for e in history)
        client.send(SetNumWorkers(num_workers=2))
        answer = client.wait_for(lambda e: getattr(e, "command", "") == "set_num_workers", 30)
        assert answer.accepted and "train.py" in answer.message, answer
        rest = []
        while (event := client.wait_for(lambda e: True, 120)) is not None:
            rest.append(event)
            if ended(event):
                break
    passes = [e for e in history + rest if isinstance(e, LoaderPass)]
    assert passes[0].num_workers == 0 and passes[-1].num_workers == 2
    assert rest[-1].state == "finished"
    assert "epoch 3 done num_workers=2" in screen(rest)
    log = (run_dir / "output.log").read_text()
    assert "training complete" in log and "\x1b" not in log and "\r" not in log
    assert all(line.count("epoch 0:") <= 1 for line in log.splitlines())  # redraws collapsed
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in epochs] == [1, 2, 3, 4]
    listed = run_ctui("ls")
    assert "finished (exit 0)" in listed.stdout and "4/?" in listed.stdout, listed.stdout
    logs = run_ctui("logs", run_dir.name)
    assert "training complete" in logs.stdout and logs.returncode == 0


def test_host_killed_then_resume_restarts_from_the_newest_loadable_checkpoint(
        project, isolated_runs):
    started = run_ctui("run", "--detach", "--name", "cdlab", "--cwd", str(project),
                       "--checkpoint-glob", "checkpoints/*.pth", "--", sys.executable,
                       "train.py", "train", "--epochs", "4", "--step_sleep", "0.2")
    assert started.returncode == 0, started.stderr
    run_dir = isolated_runs / "cdlab"
    with RunClient.connect(run_dir) as client:
        answer_prompt(client, [])
    assert wait_until(lambda: (project / "checkpoints" / "epoch_0.pth").exists(), 120)
    time.sleep(0.5)  # the save is complete
    truncated = project / "checkpoints" / "epoch_99.pth"
    truncated.write_bytes((project / "checkpoints" / "epoch_0.pth").read_bytes()[:100])
    os.utime(truncated, (time.time() + 60, time.time() + 60))  # the newest by far
    host_pid = run_info(run_dir).pid
    os.kill(host_pid, signal.SIGKILL)
    assert wait_until(lambda: run_info(run_dir).status == "interrupted", 30)
    assert "interrupted" in run_ctui("ls").stdout

    resumed = run_ctui("run", "--detach", "--resume", "cdlab")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming run cdlab: " in resumed.stdout and "train.py train" in resumed.stdout
    with RunClient.connect(run_dir) as client:
        history = []  # the checkpoints are probed (torch in a child) before the program starts
        while not any(isinstance(e, ProgramStarted) for e in history):
            event = client.wait_for(lambda e: True, 120)
            assert event is not None
            history.append(event)
        assert history[-1].attempt == 2
        assert history[-1].argv[-2:] == ("--resume", str(project / "checkpoints" / "epoch_0.pth"))
        logs = " ".join(getattr(e, "message", "") for e in history)
        assert "skipped" in logs and "epoch_99.pth" in logs and "weights_only" in logs
        answer_prompt(client, [])
        resumed_line = client.wait_for(
            lambda e: isinstance(e, ProgramOutput) and "resumed from" in e.data, 120)
        assert resumed_line is not None and "at epoch 1" in resumed_line.data
        client.send(SetNumWorkers(num_workers=0))  # (any command is answered)
        stop = run_ctui("stop", "cdlab", "--timeout", "60")
    assert stop.returncode == 0, stop.stderr
    assert "stopped" in stop.stdout and "ctui run --resume" in stop.stdout


def test_stop_escalates_to_sigkill_within_the_grace(project, isolated_runs):
    (project / "stubborn.py").write_text(
        "import signal, time\n"
        "for s in (signal.SIGINT, signal.SIGTERM):\n"
        "    signal.signal(s, signal.SIG_IGN)\n"
        "print('ignoring signals', flush=True)\n"
        "while True:\n    time.sleep(0.1)\n")
    spec = ProgramSpec(argv=(sys.executable, "stubborn.py"), cwd=str(project), grace=2.0)
    run_dir = start_program(spec, isolated_runs)
    with RunClient.connect(run_dir) as client:
        assert client.wait_for(lambda e: isinstance(e, ProgramOutput) and "ignoring" in e.data,
                               60)
        began = time.monotonic()
        stopped = run_ctui("stop", run_dir.name)
        took = time.monotonic() - began
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped (SIGKILL)" in stopped.stdout, stopped.stdout
    assert took < 2.0 + 10.0  # the grace, plus a python start-up for `ctui stop`
    host_log = (run_dir / "host.log").read_text()
    assert host_log.index("sent SIGINT") < host_log.index("sent SIGTERM") < host_log.index(
        "sent SIGKILL")


def test_chexzero_restarts_on_failure_and_each_restart_is_recorded(project, isolated_runs):
    marker = project / "failed-once"
    result = run_ctui("run", "--restart-on-failure", "2", "--cwd", str(project), "--",
                      sys.executable, "run_train.py", "--batch_size", "16", "--epochs", "2",
                      "--fail_first", str(marker), timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert "[ctui] attempt 1: exited with code 1" in result.stdout
    assert "simulated" in result.stdout  # the last line of the failure is quoted
    assert "[ctui] attempt 2: exited with code 0" in result.stdout
    run_dir = next(isolated_runs.iterdir())
    log = (run_dir / "output.log").read_text()
    assert "--- ctui: attempt 1:" in log and "--- ctui: attempt 2:" in log
    assert list((project / "checkpoints").glob("checkpoint_*.pt"))
    assert run_info(run_dir).status == "finished" and run_info(run_dir).exit_code == 0


@pytest.mark.parametrize(("argv", "code", "words"), [
    (["no-such-command-here", "--flag"], 127, "command not found"),
    ([sys.executable, "-c", "import sys; print('bad config'); sys.exit(4)"], 4, "bad config"),
])
def test_a_command_that_fails_at_once_gets_a_clear_message_and_a_recorded_end(
        isolated_runs, tmp_path, argv, code, words):
    result = run_ctui("run", "--detach", "--cwd", str(tmp_path), "--", *argv)
    assert result.returncode == code, result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr
    listed = run_ctui("ls").stdout
    assert f"failed (exit {code})" in listed, listed


def test_a_program_reading_a_terminal_gets_one(isolated_runs, tmp_path):
    """isatty, the terminal's size, and Ctrl-C typed reaching the program as SIGINT."""
    (tmp_path / "tty.py").write_text(
        "import os, sys, time\n"
        "print('tty', sys.stdin.isatty(), sys.stdout.isatty(), os.get_terminal_size(), "
        "flush=True)\n"
        "try:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n"
        "    print('interrupted by the terminal', flush=True)\n")
    spec = ProgramSpec(argv=(sys.executable, "tty.py"), cwd=str(tmp_path), columns=99, rows=33)
    run_dir = start_program(spec, isolated_runs)
    with RunClient.connect(run_dir) as client:
        line = client.wait_for(lambda e: isinstance(e, ProgramOutput) and "tty" in e.data, 60)
        assert "tty True True os.terminal_size(columns=99, lines=33)" in line.data
        client.send(TypeInput(data="\x03"))
        assert client.wait_for(lambda e: isinstance(e, ProgramOutput)
                               and "interrupted by the terminal" in e.data, 30)
        end = client.wait_for(lambda e: isinstance(e, ProgramExited), 30)
    assert end.exit_code == 0


def test_eval_seconds_and_wandb_scalars_of_a_script_under_ctui_run(project, isolated_runs,
                                                                    tmp_path, monkeypatch):
    from ctui.engine.events import EpochEnded, ScriptScalars

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    spec = ProgramSpec(argv=(sys.executable, "eval_wandb.py"), cwd=str(project))
    run_dir = start_program(spec, isolated_runs)
    events = []
    with RunClient.connect(run_dir) as client:
        while (event := client.wait_for(lambda e: True, 120)) is not None:
            events.append(event)
            if ended(event):
                break
    assert events[-1].state == "finished", events[-3:]
    exited = next(i for i, e in enumerate(events) if isinstance(e, ProgramExited))
    live = [i for i, e in enumerate(events) if isinstance(e, ScriptScalars)]
    assert live and live[0] < exited  # read while the program still ran
    assert {(e.source, e.path) for e in events if isinstance(e, ScriptScalars)} == {
        ("wandb", "wandb")}
    own = [float(line.split()[2]) for line in screen(events).splitlines()
           if line.startswith("EVAL")]
    epochs = [e for e in events if isinstance(e, EpochEnded)]
    assert [e.epoch for e in epochs] == [1, 2, 3]  # the last one too, once the program ended
    for theirs, epoch in zip(own, epochs, strict=True):
        assert abs(epoch.eval_seconds - theirs) < 0.05, (own, epochs)
        assert 0.07 < epoch.train_seconds < 2  # 8 batches of 10 ms: unchanged by its eval
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [round(line["eval_seconds"], 1) for line in lines if line["type"] == "epoch"] == [
        round(value, 1) for value in own]
    scalars = {(line["tag"], line["step"]): line["value"] for line in lines
               if line["type"] == "script_scalar" and line["source"] == "wandb"}
    assert scalars[("epoch/loss", 2)] == pytest.approx(1 / 3)
    assert scalars[("val/acc", 2)] == pytest.approx(0.7)
