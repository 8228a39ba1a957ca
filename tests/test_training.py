"""The engine trains for real: accuracy, the event stream, user tasks, the run folder."""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest

from ctui.engine import Engine, RunConfig, State, train
from ctui.engine.events import (
    Answer,
    EpochEnded,
    LogLine,
    Settings,
    StateChanged,
    StepLogged,
)

from helpers import REPO, run_ctui, tiny


@pytest.mark.slow
def test_digits_reaches_90_percent_within_3_epochs():
    epochs = train(RunConfig(task="digits", epochs=3, tensorboard=False))
    assert len(epochs) == 3
    assert epochs[-1].test_accuracy >= 0.90
    assert epochs[-1].test_loss < epochs[0].test_loss


def test_ctrl_c_in_train_stops_with_a_checkpoint_that_resume_continues(tmp_path):
    config = tiny(epochs=2, batch_size=64, log_interval=1, run_dir=str(tmp_path / "run"))
    seen: list[int] = []

    def interrupt_at_step_5(event):
        if isinstance(event, StepLogged):
            seen.append(event.global_step)
            if event.global_step == 5:
                os.kill(os.getpid(), signal.SIGINT)  # what a notebook's interrupt sends

    with pytest.raises(KeyboardInterrupt, match="resume=True"):
        train(config, on_event=interrupt_at_step_5)
    stopped_at = seen[-1]
    assert 5 <= stopped_at < 46
    seen.clear()
    epochs = train(config, resume=True, on_event=interrupt_at_step_5)
    assert seen[0] == stopped_at + 1 and seen[-1] == 46  # 23 steps an epoch
    assert [epoch.epoch for epoch in epochs] == [1, 2]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_an_error_in_on_event_stops_the_run_and_reaches_the_caller(tmp_path):
    from ctui.engine.checkpoint import checkpoint_dir, list_checkpoints

    def broken(event):
        if isinstance(event, StepLogged):
            raise ValueError("my callback is broken")

    with pytest.raises(ValueError, match="my callback is broken"):
        train(tiny(run_dir=str(tmp_path / "run")), on_event=broken)
    assert list_checkpoints(checkpoint_dir(tmp_path / "run"))  # stopped with a checkpoint


def test_run_trains_on_the_calling_thread_and_returns_the_final_state():
    import threading

    threads = set()
    engine = Engine(tiny(), sinks=[lambda event: threads.add(threading.current_thread())])
    assert engine.run() == State.FINISHED
    assert threads == {threading.current_thread()}
    assert [type(e) for e in engine.events()][-1] is StateChanged  # the history, then done
    with pytest.raises(RuntimeError, match="already been started"):
        engine.run()


def test_event_sequence_of_a_short_run():
    engine = Engine(tiny(epochs=2)).start()
    events = list(engine.events())
    kinds = [type(event).__name__ for event in events]
    assert isinstance(events[0], StateChanged) and events[0].state == State.RUNNING
    assert isinstance(events[-1], StateChanged) and events[-1].state == State.FINISHED
    settings = next(e for e in events if isinstance(e, Settings))
    assert (settings.batch_size, settings.num_workers, settings.device) == (128, 0, "cpu")
    assert settings.steps_per_epoch == 12  # 1437 training digits / 128
    epochs = [e for e in events if isinstance(e, EpochEnded)]
    assert [e.epoch for e in epochs] == [1, 2]
    steps = [e for e in events if isinstance(e, StepLogged)]
    # every 4th step plus each epoch's last: 4, 8, 12 in each epoch
    assert [(s.epoch, s.step) for s in steps] == [(1, 4), (1, 8), (1, 12), (2, 4), (2, 8), (2, 12)]
    assert steps[-1].global_step == 24 and steps[2].samples_seen == 1437
    # a step's figures come before its epoch's figures, and the run ends after the last epoch
    assert kinds.index("EpochEnded") > kinds.index("StepLogged")
    first = epochs[0]
    assert first.train_seconds > 0 and first.eval_seconds > 0 and first.samples_per_second > 0
    assert 0 <= first.data_wait_fraction < 1
    assert first.peak_gpu_memory_mb is None  # CPU
    assert epochs[1].lr == pytest.approx(first.lr * 0.7)  # StepLR per epoch, gamma 0.7
    assert first.samples_per_second == pytest.approx(1437 / first.train_seconds)


def test_run_folder_has_config_and_metrics(tmp_path):
    engine = Engine(tiny(run_dir=str(tmp_path / "run"))).start()
    engine.wait()
    run_dir = tmp_path / "run"
    assert (run_dir.stat().st_mode & 0o777) == 0o700
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["batch_size"] == 128 and config["task_name"] == "digits"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records] == ["step", "step", "step", "epoch"]
    assert records[-1]["epoch"] == 1 and records[-1]["test_accuracy"] > 0.15  # chance is 0.1


def test_commands_pause_resume_and_stop():
    engine = Engine(tiny(epochs=50, log_interval=1))
    engine.start()
    events = engine.events()
    for event in events:
        if isinstance(event, StepLogged):
            engine.pause()
            break
    for event in events:
        if isinstance(event, StateChanged) and event.state == State.PAUSED:
            break
    engine.set_batch_size(32)
    engine.resume()
    engine.stop("test is done")
    rest = list(events)
    states = [e.state for e in rest if isinstance(e, StateChanged)]
    assert states == [State.RUNNING, State.STOPPING, State.STOPPED]
    assert any(isinstance(e, Settings) and e.batch_size == 32 for e in rest)
    assert engine.state == State.STOPPED


def test_bad_live_setting_is_refused_with_an_answer_saying_why():
    engine = Engine(tiny(epochs=50, log_interval=1)).start()
    engine.set_batch_size(0)
    engine.set_num_workers(-2)
    engine.stop()
    answers = [e for e in engine.events() if isinstance(e, Answer)]
    refused = [(a.command, a.message) for a in answers if not a.accepted]
    assert refused[0][0] == "set_batch_size" and "batch_size=0 refused" in refused[0][1] \
        and "1 to 1437" in refused[0][1]
    assert refused[1][0] == "set_num_workers" and "num_workers=-2 refused" in refused[1][1]
    assert answers[-1].command == "stop" and answers[-1].accepted


def test_user_task_from_a_file():
    epochs = train(tiny(task=str(REPO / "assets/examples/tiny_task.py") + ":build", epochs=2))
    assert epochs[-1].test_accuracy > 0.5


def test_a_task_with_its_own_optimizer_and_no_scheduler_keeps_its_learning_rate(tmp_path):
    task = tmp_path / "sgd_task.py"
    task.write_text((REPO / "assets/examples/tiny_task.py").read_text().replace(
        "torch.optim.AdamW(params, lr=1e-3)", "torch.optim.SGD(params, lr=0.05)").replace(
        "        scheduler=lambda optimizer:", "        # scheduler=lambda optimizer:"))
    engine = Engine(tiny(task=f"{task}:build", epochs=3, gamma=0.5))
    engine.run()
    epochs = [e for e in engine.history if isinstance(e, EpochEnded)]
    assert [e.lr for e in epochs] == [0.05, 0.05, 0.05]  # not decayed by --gamma
    assert any("its learning rate stays as set" in e.message for e in engine.history
               if isinstance(e, LogLine))


def test_user_task_from_a_module(tmp_path, monkeypatch):
    package = tmp_path / "mytasks"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "small.py").write_text((REPO / "assets/examples/tiny_task.py").read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    epochs = train(tiny(task="mytasks.small:build"))
    assert len(epochs) == 1 and epochs[0].test_accuracy is not None


def test_user_task_returning_the_wrong_thing(tmp_path):
    from ctui.engine import TaskError

    bad = tmp_path / "bad_task.py"
    bad.write_text("def build(config):\n    return 42\n")
    with pytest.raises(TaskError, match="must return ctui.engine.Task, not int"):
        Engine(tiny(task=f"{bad}:build"))


def test_fake_task_with_workers_trains():
    config = tiny(task="fake", fake_size=96, fake_image_shape=(3, 16, 16), fake_classes=4,
                  batch_size=32, num_workers=2)
    epochs = train(config)
    assert epochs[0].num_workers == 2 and epochs[0].samples_per_second > 0


@pytest.mark.slow
def test_headless_cli_prints_one_line_per_epoch(tmp_path):
    result = run_ctui("train", "--headless", "--epochs", "2", "--batch-size", "128",
                      "--no-tensorboard", "--run-dir", str(tmp_path / "cli-run"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    epoch_lines = [line for line in lines if line.startswith("epoch ") and "/2 " in line]
    assert len(epoch_lines) == 2
    assert "samples/s" in epoch_lines[0] and "data wait" in epoch_lines[0]
    assert "acc" in epoch_lines[0] and "train" in epoch_lines[0]
    assert lines[-1].startswith("finished")
    assert "\x1b[" not in result.stdout  # not a terminal: no progress bar escapes in a pipe
    assert sys.executable  # the run used this interpreter
