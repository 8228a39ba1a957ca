"""Checkpoints that survive anything: exact resume after SIGKILL (even mid-save), corrupt files,
mismatched models, code-running pickles, signals, a full disk and time limits."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ctui.engine import CheckpointError, Engine, State
from ctui.engine.checkpoint import checkpoint_dir, list_checkpoints, load_checkpoint
from ctui.engine.events import LogLine, StateChanged

from helpers import REPO, killed_before_its_first_checkpoint, run_ctui, tiny

# Two digits epochs of 23 steps, a checkpoint every 5 steps: kills land between, during and
# after mid-epoch saves. Deterministic on the CPU (same seed, same thread count), even on a GPU
# machine, where cuDNN's kernels would not be bit-reproducible (tests/test_cuda.py covers that).
RUN_FLAGS = ["--epochs", "2", "--batch-size", "64", "--log-interval", "1",
             "--checkpoint-every-steps", "5", "--no-tensorboard", "--device", "cpu"]
CHILD_ENV = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_training_left_behind():
    """A failing test must not leave a (paused) training process running."""
    yield
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait()


def start_training(run_dir: Path, *extra: str, env: dict | None = None,
                   **popen) -> subprocess.Popen:
    return spawn(["train", "--headless", *RUN_FLAGS, "--run-dir", str(run_dir), *extra], env,
                 **popen)


def spawn(args: list[str], env: dict | None = None, **popen) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "ctui.tui.main", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
        env={**os.environ, **CHILD_ENV, **(env or {})}, **popen)
    STARTED.append(process)
    return process


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.02)


def step_records(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return path.read_text().count('"type": "step"') if path.exists() else 0


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    newest = list_checkpoints(checkpoint_dir(run_dir))[-1]
    state = load_checkpoint(newest)
    assert state["progress"]["epoch"] == 3 and state["progress"]["position"] == 0, newest
    return state["model"]


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs"


def resume_to_the_end(run_dir: Path) -> subprocess.CompletedProcess:
    result = run_ctui("train", "--headless", "--resume", "--run-dir", str(run_dir), env=CHILD_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    process = start_training(run_dir)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    return final_weights(run_dir)


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_steps", [3, 12, 30])
def test_sigkill_then_resume_is_bit_identical(tmp_path, uninterrupted, kill_after_steps):
    run_dir = tmp_path / "run"
    process = start_training(run_dir)
    wait_for(lambda: step_records(run_dir) >= kill_after_steps)
    process.kill()
    process.wait()
    result = resume_to_the_end(run_dir)
    if kill_after_steps >= 5:
        assert "resumed from" in result.stdout
    assert_bit_identical(final_weights(run_dir), uninterrupted)
    # metrics.jsonl holds each step and each epoch once, however many were replayed after the
    # kill (3 steps: killed before the first checkpoint, which resume starts over)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["global_step"] for r in records if r["type"] == "step"] == list(range(1, 47))
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [1, 2]


@pytest.mark.slow
def test_sigkill_in_the_middle_of_writing_a_checkpoint(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    marker = tmp_path / "never-created"
    process = start_training(run_dir, env={"CTUI_TEST_PAUSE_SAVE_UNTIL": str(marker),
                                           "CTUI_TEST_PAUSE_SAVE_AT": "3"})
    waiting = tmp_path / "never-created.waiting"
    wait_for(waiting.exists)
    temporaries = [p for p in checkpoint_dir(run_dir).iterdir() if p.name.endswith(".tmp")]
    assert temporaries, "the writer should be stuck with a half-written file"
    process.kill()
    process.wait()
    committed = list_checkpoints(checkpoint_dir(run_dir))
    assert committed and all(load_checkpoint(p) for p in committed)  # the previous ones intact
    result = resume_to_the_end(run_dir)
    assert "half-written by a crash" in result.stdout
    assert not [p for p in checkpoint_dir(run_dir).iterdir() if p.name.endswith(".tmp")]
    assert_bit_identical(final_weights(run_dir), uninterrupted)


def _two_epoch_run(run_dir: Path) -> list[Path]:
    Engine(tiny(epochs=2, run_dir=str(run_dir))).start().wait()
    saved = list_checkpoints(checkpoint_dir(run_dir))
    assert len(saved) == 2  # keep_checkpoints defaults to 2
    return saved


@pytest.mark.slow
def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path):
    run_dir = tmp_path / "run"
    older, newest = _two_epoch_run(run_dir)
    newest.write_bytes(newest.read_bytes()[: 4096])  # truncated, as by a crash without fsync
    engine = Engine(tiny(epochs=2, run_dir=str(run_dir)), resume="latest")
    assert engine.resume_path == older
    assert (newest.parent / (newest.name + ".corrupt")).exists()
    engine.start().wait()
    warnings = [e.message for e in engine.history if isinstance(e, LogLine)]
    assert any("unreadable or truncated" in w and "previous checkpoint" in w for w in warnings)
    assert engine.state == State.FINISHED


TASK_WITH_WIDTH = """
import os, torch
from torch import nn
from torch.utils.data import TensorDataset
from ctui.engine import Task

def build(config):
    width = int(os.environ.get("TASK_WIDTH", "32"))
    data = TensorDataset(torch.randn(64, 8), torch.randint(0, 2, (64,)))
    return Task(model=nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, 2)),
                train_dataset=data, test_dataset=data)
"""


def test_checkpoint_of_another_architecture_is_refused_and_nothing_overwritten(
        tmp_path, monkeypatch):
    task_file = tmp_path / "width_task.py"
    task_file.write_text(TASK_WITH_WIDTH)
    run_dir = tmp_path / "run"
    config = tiny(task=f"{task_file}:build", run_dir=str(run_dir))
    Engine(config).start().wait()
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    monkeypatch.setenv("TASK_WIDTH", "16")
    with pytest.raises(CheckpointError, match=r"does not fit this model: 0\.bias: checkpoint "
                                              r"\[32\], model \[16\]"):
        Engine(config, resume="latest")
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.slow
def test_checkpoint_of_another_task_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    Engine(tiny(run_dir=str(run_dir))).start().wait()
    result = run_ctui("train", "--headless", "--resume", "--run-dir", str(run_dir),
                      "--task", "fake")
    assert result.returncode == 1
    assert "from task 'digits', not 'fake'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


class RunsCodeWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.slow
def test_a_checkpoint_that_would_run_code_is_refused_and_the_code_does_not_run(tmp_path):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "model": RunsCodeWhenUnpickled(marker)}, evil)
    with pytest.raises(CheckpointError, match="refused.*would run code"):
        load_checkpoint(evil)
    result = run_ctui("train", "--headless", "--resume", str(evil))
    assert result.returncode == 1 and "refused" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_checkpoints_at_the_next_step_and_exits_cleanly(tmp_path, signum):
    run_dir = tmp_path / "run"
    process = start_training(run_dir, "--epochs", "50")
    wait_for(lambda: step_records(run_dir) >= 2)
    process.send_signal(signum)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 3, output
    assert f"{signal.Signals(signum).name} received" in output
    newest_path = list_checkpoints(checkpoint_dir(run_dir))[-1]
    assert f"the last checkpoint is {newest_path}" in output and "--resume" in output
    newest = load_checkpoint(newest_path)
    last_step = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text()
                 .splitlines()][-1]
    # saved exactly where training stopped: the next run continues at the next step
    assert newest["progress"]["global_step"] == last_step["global_step"]
    assert newest["progress"]["position"] == last_step["samples_seen"]


@pytest.mark.slow
def test_full_disk_keeps_the_previous_checkpoint_and_pauses(tmp_path):
    run_dir = tmp_path / "run"
    first = run_ctui("train", "--headless", "--epochs", "1", "--batch-size", "128",
                     "--no-tensorboard", "--run-dir", str(run_dir))
    assert first.returncode == 0, first.stderr
    (previous,) = list_checkpoints(checkpoint_dir(run_dir))

    def small_files() -> None:  # any file past 1 MB fails with EFBIG, like a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))

    process = spawn(["train", "--headless", "--resume", "--run-dir", str(run_dir), "--epochs",
                     "3", "--checkpoint-every-steps", "3"], preexec_fn=small_files)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("paused"):
            break
    failure = next(line for line in lines if "File too large" in line)
    assert str(checkpoint_dir(run_dir)) in failure and "File too large" in failure
    assert "previous checkpoint is intact" in failure
    assert load_checkpoint(previous)["progress"]["epoch"] == 2
    assert not [p for p in checkpoint_dir(run_dir).iterdir() if p.name.endswith(".tmp")]
    process.send_signal(signal.SIGUSR1)  # "continue": it retries, fails again, pauses again
    for line in process.stdout:
        lines.append(line)
        if line.startswith("paused"):
            break
    assert sum("File too large" in line for line in lines) == 2
    process.terminate()
    process.communicate(timeout=60)
    assert load_checkpoint(previous)["progress"]["epoch"] == 2


def test_time_limit_checkpoints_and_stops_before_the_limit(tmp_path):
    # The engine keeps 30 s in reserve for the final save, so a 31 s limit stops after ~1 s.
    engine = Engine(tiny(epochs=1000, time_limit=31.0, run_dir=str(tmp_path / "run")))
    started = time.monotonic()
    engine.start().wait(timeout=60)
    assert time.monotonic() - started < 30
    assert engine.state == State.STOPPED
    ended = [e for e in engine.history if isinstance(e, StateChanged)][-1]
    assert "time limit" in ended.reason
    messages = [e.message for e in engine.history if isinstance(e, LogLine)]
    assert any("will checkpoint and stop by" in m for m in messages)
    assert list_checkpoints(checkpoint_dir(tmp_path / "run"))


@pytest.mark.slow
def test_checkpoint_now_and_keep_last_k(tmp_path):
    run_dir = tmp_path / "run"
    engine = Engine(tiny(epochs=4, run_dir=str(run_dir), keep_checkpoints=3)).start()
    engine.checkpoint()
    engine.wait()
    saved = list_checkpoints(checkpoint_dir(run_dir))
    assert len(saved) == 3
    assert (checkpoint_dir(run_dir).stat().st_mode & 0o777) == 0o700
    assert all((p.stat().st_mode & 0o777) == 0o600 for p in saved)
    state = load_checkpoint(saved[-1])
    for key in ("model", "optimizer", "scheduler", "scaler", "rng", "progress", "config",
                "history", "loggers", "settings"):
        assert key in state
    assert set(state["rng"]) >= {"python", "numpy", "torch", "loader"}
    assert len(state["history"]) == 4


@pytest.mark.slow
def test_resume_without_a_checkpoint_starts_fresh_with_the_runs_own_settings(tmp_path):
    run_dir = tmp_path / "run"
    killed_before_its_first_checkpoint(**tiny(run_dir=str(run_dir), batch_size=256).to_dict())
    result = run_ctui("train", "--headless", "--resume", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert "starting fresh" in result.stdout and "bs 256" in result.stdout
