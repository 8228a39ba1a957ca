"""ctui from a notebook, as a Colab user drives it (issue 16, items 1-4, 16, 17): interrupt and
resume with the call the interrupt prints, progress while it trains, checkpoints on a mount
that cannot fsync a folder, a full disk that raises instead of hanging, what Ctrl-C does to
train() on another thread and to Engine.start(), a crash in evaluation that keeps the epoch's
training, and the real settings of a task's own optimizer in the loggers."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ctui.engine import Engine, train
from ctui.engine.checkpoint import checkpoint_dir, list_checkpoints, load_checkpoint
from ctui.engine.config import ConfigError
from ctui.engine.errors import SaveFailed
from ctui.engine.events import EpochEnded, LogLine, State, StepLogged
from ctui.engine.loop import Trainer

from helpers import REPO, tiny

TINY_TASK = f"{REPO / 'assets/examples/tiny_task.py'}:build"  # an MLP: quick epochs


def quick(**settings):
    """A run of the tiny MLP task: 12 steps an epoch, a fraction of a second on a CPU."""
    return tiny(task=TINY_TASK, **settings)


def interrupt_at(epoch: int):
    """An on_event that presses Ctrl-C (SIGINT to this, the main, thread) once `epoch` trains."""
    pressed = []

    def press(event) -> None:
        if isinstance(event, StepLogged) and event.epoch == epoch and not pressed:
            pressed.append(True)
            os.kill(os.getpid(), signal.SIGINT)

    return press


def interrupted_run(**settings) -> str:
    with pytest.raises(KeyboardInterrupt) as raised:
        train(quick(**settings), on_event=interrupt_at(2), quiet=True)
    return str(raised.value)


def final_weights(run_dir: Path) -> dict:
    return load_checkpoint(list_checkpoints(checkpoint_dir(run_dir))[-1])["model"]


# --------------------------------------------------------------------- 1: interrupt, resume

@pytest.mark.slow
def test_the_call_printed_at_an_interrupt_continues_the_run(tmp_path):
    runs = tmp_path / "runs"
    message = interrupted_run(epochs=2, runs_dir=str(runs))
    call = message.split("continue with ", 1)[1]
    assert call.startswith("train(") and "resume=True" in call, message
    epochs = eval(call, {"train": train})  # as a user pastes it into the next cell
    assert [e.epoch for e in epochs] == [1, 2]
    (run,) = runs.iterdir()  # the same run continued; no new folder
    assert call.endswith(f"run_dir={str(run)!r})")


@pytest.mark.slow
def test_resume_true_continues_the_newest_resumable_run_of_the_task(tmp_path, capsys):
    runs = tmp_path / "runs"
    interrupted_run(epochs=2, runs_dir=str(runs))
    older = set(runs.iterdir())
    interrupted_run(epochs=2, runs_dir=str(runs))
    (newest,) = set(runs.iterdir()) - older
    train(quick(epochs=1, runs_dir=str(runs)), quiet=True)  # a finished run is not resumable
    capsys.readouterr()
    seen = []
    epochs = train(quick(epochs=2, runs_dir=str(runs)), resume=True, on_event=seen.append)
    out = capsys.readouterr().out
    assert f"resuming {newest}" in out  # it says which
    assert [e.epoch for e in epochs] == [1, 2] and len(list(runs.iterdir())) == 3
    first = next(e for e in seen if isinstance(e, StepLogged))
    assert first.epoch == 2 and first.global_step > 12  # went on from the checkpoint
    assert (newest / "end.json").exists() and \
        json.loads((newest / "end.json").read_text())["state"] == "finished"


def test_the_readme_shows_the_interrupt_message_train_prints():
    from ctui.engine import RunConfig
    from ctui.engine.api import again

    readme = (REPO / "README.md").read_text()
    (shown,) = [line for line in readme.splitlines() if line.startswith("KeyboardInterrupt:")]
    run_dir = shown.split("checkpoint in ", 1)[1].split(";", 1)[0]
    config = RunConfig(task="digits", epochs=20, runs_dir="/content/drive/MyDrive/runs")
    assert shown.endswith(f"continue with {again(config, Path(run_dir))}")
    assert 'train(task="digits", epochs=20, runs_dir="/content/drive/MyDrive/runs")' in readme


def test_resume_true_with_nothing_to_resume_says_what_to_pass(tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError) as raised:
        train(quick(runs_dir=str(runs)), resume=True, quiet=True)
    assert "run_dir=" in str(raised.value) and "leave out resume=True" in str(raised.value)
    assert not runs.exists() or list(runs.iterdir()) == []  # nothing started over


# --------------------------------------------------------------------- 2: progress

class RecordedBars:
    """Stands in for tqdm.auto.tqdm (a widget in Jupyter, text elsewhere): records each bar."""

    made: list = []

    def __init__(self, total=None, initial=0, desc="", **options) -> None:
        self.total, self.n, self.desc, self.closed = total, initial, desc, False
        RecordedBars.made.append(self)

    def set_postfix_str(self, text, refresh=True) -> None:
        self.postfix = text

    def update(self, count) -> None:
        self.n += count

    def close(self) -> None:
        self.closed = True

    @staticmethod
    def write(text, file=None) -> None:
        print(text, file=file)


def test_train_shows_a_progress_bar_and_a_line_per_epoch(tmp_path, capsys, monkeypatch):
    import tqdm.auto

    monkeypatch.setattr(tqdm.auto, "tqdm", RecordedBars)
    RecordedBars.made = []
    train(quick(epochs=2, runs_dir=str(tmp_path / "runs")))
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert [line.split("  ")[0] for line in lines if line.startswith("epoch ")] == \
        ["epoch 1/2", "epoch 2/2"]
    assert [bar.desc for bar in RecordedBars.made] == ["epoch 1", "epoch 2"]
    assert all(bar.closed and bar.n == bar.total == 12 for bar in RecordedBars.made)
    assert "finished" in lines[-1]


def test_quiet_shows_nothing(tmp_path, capsys):
    train(quick(runs_dir=str(tmp_path / "runs")), quiet=True)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


# --------------------------------------------------------------------- 3: checkpoints on a mount

def test_a_folder_fsync_the_mount_does_not_support_is_said_once_not_a_failure(
        tmp_path, monkeypatch):
    real_fsync = os.fsync

    def drive_fsync(fd):  # Google Drive's FUSE mount on Colab
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", drive_fsync)
    run_dir = tmp_path / "run"
    seen = []
    epochs = train(quick(epochs=2, run_dir=str(run_dir)), on_event=seen.append, quiet=True)
    assert len(epochs) == 2
    notes = [e.message for e in seen if isinstance(e, LogLine) and "fsync" in e.message]
    assert len(notes) == 1 and "mount" in notes[0], notes
    assert not any(isinstance(e, LogLine) and e.level == "error" for e in seen)
    assert list_checkpoints(checkpoint_dir(run_dir))


@pytest.mark.timeout(120)
def test_a_failed_save_inside_train_raises_instead_of_pausing_forever(tmp_path, monkeypatch):
    from ctui.engine import checkpoint

    def full_disk(state, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "write_atomically", full_disk)
    with pytest.raises(SaveFailed, match="No space left on device") as raised:
        train(quick(epochs=2, run_dir=str(tmp_path / "run")), quiet=True)
    assert "resume=True" in str(raised.value)


# --------------------------------------------------------------------- 4: threads and Ctrl-C

class Boom(Exception):
    pass


def test_an_exception_in_the_events_loop_stops_the_engine_with_a_checkpoint(tmp_path):
    engine = Engine(quick(epochs=1000, run_dir=str(tmp_path / "run"))).start()
    with pytest.raises(Boom):
        for event in engine.events():
            if isinstance(event, StepLogged):
                raise Boom  # the user's code inside the loop fails, or Ctrl-C lands there
    assert engine.wait(60) == State.STOPPED
    assert list_checkpoints(checkpoint_dir(tmp_path / "run"))


@pytest.mark.timeout(120)
def test_ctrl_c_while_waiting_for_the_next_event_stops_the_engine(tmp_path):
    engine = Engine(quick(epochs=1000, run_dir=str(tmp_path / "run"))).start()

    def ring(signum, frame):  # what a kernel interrupt does: raise in the main thread
        raise Boom

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(Boom):
            for _ in engine.events():
                pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert engine.wait(60) == State.STOPPED


def test_keep_running_leaves_the_engine_training(tmp_path):
    engine = Engine(quick(epochs=2, run_dir=str(tmp_path / "run"))).start()
    with pytest.raises(Boom):
        for event in engine.events(keep_running=True):
            if isinstance(event, StepLogged):
                raise Boom
    assert engine.wait(120) == State.FINISHED


TRAIN_ON_A_THREAD = textwrap.dedent("""
    import os, signal, sys, threading
    from ctui.engine import train
    from ctui.engine.events import StepLogged

    stepping = threading.Event()
    done = []

    def work():
        done.extend(train(task=sys.argv[2], epochs=2, batch_size=128, log_interval=4,
                          tensorboard=False, runs_dir=sys.argv[1],
                          on_event=lambda e: isinstance(e, StepLogged) and stepping.set()))

    worker = threading.Thread(target=work)
    worker.start()
    stepping.wait()
    try:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C
        worker.join()
    except KeyboardInterrupt:
        print("the main thread was interrupted")
    worker.join()
    print("epochs trained:", len(done))
""")


@pytest.mark.slow
def test_ctrl_c_does_not_reach_train_on_another_thread_and_it_says_so(tmp_path):
    result = subprocess.run([sys.executable, "-c", TRAIN_ON_A_THREAD, str(tmp_path / "runs"),
                             TINY_TASK],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "Ctrl-C cannot reach it" in result.stdout
    assert "the main thread was interrupted" in result.stdout
    assert "epochs trained: 2" in result.stdout


# --------------------------------------------------------------------- 16: crash in evaluation

@pytest.mark.slow
def test_a_crash_in_evaluation_resumes_at_evaluation(tmp_path, monkeypatch):
    uninterrupted = tmp_path / "uninterrupted"
    train(quick(epochs=2, run_dir=str(uninterrupted)), quiet=True)

    real_evaluate = Trainer.evaluate

    def crash_once(self):
        if self.progress.epoch == 1:
            raise MemoryError("evaluation ran out of memory")
        return real_evaluate(self)

    monkeypatch.setattr(Trainer, "evaluate", crash_once)
    run_dir = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="evaluation ran out of memory"):
        train(quick(epochs=2, run_dir=str(run_dir)), quiet=True)
    monkeypatch.setattr(Trainer, "evaluate", real_evaluate)
    seen = []
    epochs = train(quick(epochs=2, run_dir=str(run_dir)), resume=True, on_event=seen.append,
                   quiet=True)
    assert not [e for e in seen if isinstance(e, StepLogged) and e.epoch == 1]  # not retrained
    assert [e.epoch for e in epochs] == [1, 2] and epochs[0].train_seconds > 0
    for name, weights in final_weights(uninterrupted).items():
        assert torch.equal(weights, final_weights(run_dir)[name]), name


# --------------------------------------------------------------------- 17: a task's optimizer

SGD_TASK = (REPO / "assets/examples/tiny_task.py").read_text().replace(
    "torch.optim.AdamW(params, lr=1e-3)", "torch.optim.SGD(params, lr=0.05, momentum=0.5)"
).replace("        scheduler=lambda optimizer:", "        # scheduler=lambda optimizer:")


class SettingsRecorder:
    name = "recorder"

    def __init__(self) -> None:
        self.settings: dict = {}

    def __call__(self, event) -> None:
        pass

    def record_settings(self, settings: dict) -> None:
        self.settings.update(settings)


def test_loggers_get_the_real_settings_of_a_tasks_own_optimizer(tmp_path):
    task = tmp_path / "sgd_task.py"
    task.write_text(SGD_TASK)
    recorder = SettingsRecorder()
    engine = Engine(tiny(task=f"{task}:build", epochs=2, gamma=0.5,
                         run_dir=str(tmp_path / "run")), sinks=[recorder])
    engine.run()
    assert recorder.settings["lr"] == 0.05 and recorder.settings["optimizer"] == "SGD"
    assert recorder.settings["optimizer_settings"]["momentum"] == 0.5
    assert recorder.settings["scheduler"] == "none"  # no --gamma decay of the task's rate
    assert [e.lr for e in engine.history if isinstance(e, EpochEnded)] == [0.05, 0.05]


def test_the_default_optimizer_keeps_the_default_scheduler(tmp_path):
    task = tmp_path / "plain_task.py"  # no optimizer, no scheduler: ctui's Adadelta and StepLR
    task.write_text(SGD_TASK.replace("        optimizer=lambda params:",
                                     "        # optimizer=lambda params:"))
    recorder = SettingsRecorder()
    engine = Engine(tiny(task=f"{task}:build", epochs=2, gamma=0.5,
                         run_dir=str(tmp_path / "run")), sinks=[recorder])
    engine.run()
    assert recorder.settings["optimizer"] == "Adadelta" and recorder.settings["lr"] == 1.0
    assert [e.lr for e in engine.history if isinstance(e, EpochEnded)] == [1.0, 0.5]


@pytest.mark.slow
def test_wandb_config_records_the_optimizers_own_learning_rate(tmp_path, monkeypatch):
    from test_loggers import isolate_wandb, wandb_segments

    isolate_wandb(monkeypatch, tmp_path)
    task = tmp_path / "sgd_task.py"
    task.write_text(SGD_TASK)
    run_dir = tmp_path / "run"
    try:
        train(tiny(task=f"{task}:build", run_dir=str(run_dir), wandb="offline"), quiet=True)
        (segment,) = wandb_segments(run_dir / "wandb")
    finally:
        wandb = sys.modules.get("wandb")
        if wandb is not None:
            wandb.teardown()  # its service process ends with this test
    assert segment.config["lr"] == 0.05 and segment.config["optimizer"] == "SGD"
    assert segment.config["optimizer_settings"]["momentum"] == 0.5
