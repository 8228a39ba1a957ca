"""Attacks on run folders and checkpoints (issue: security and integrity of run folders).

Each test reproduces an attack that worked before: a checkpoint naming code to import, a loose
checkpoint adopting its grandparent, folders and links planted by another user, two resumes at
once, a kill before the first checkpoint, a damaged or unloadable checkpoint, a full disk."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ctui.engine import CheckpointError, Engine
from ctui.engine.checkpoint import (
    checkpoint_dir,
    find_resume_point,
    list_checkpoints,
    load_checkpoint,
    payload_checksum,
)

from helpers import REPO, ctui_in_process, killed_before_its_first_checkpoint, run_ctui, tiny

CHILD_ENV = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
EVIL_TASK = """
from pathlib import Path
Path({marker!r}).touch()
def build(config):
    raise SystemExit("never")
"""


def trained_run(run_dir: Path, epochs: int = 1, **settings) -> list[Path]:
    Engine(tiny(epochs=epochs, run_dir=str(run_dir), **settings)).start().wait()
    return list_checkpoints(checkpoint_dir(run_dir))


def rewrite(path: Path, change) -> None:
    """Edit a checkpoint as an attacker would, with a valid checksum so only ctui's rules
    stand between the file and the code."""
    state = torch.load(path, weights_only=True)
    change(state)
    state.pop("checksum", None)
    state["checksum"] = payload_checksum(state)
    torch.save(state, path)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def ctui_train(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_ctui("train", "--headless", "--no-tensorboard", *args, env=CHILD_ENV,
                    timeout=timeout)


def refused_in_process(capsys, *args: str) -> tuple[int, str]:
    """A start refused before any training: the real CLI, in this process (fast)."""
    code, _, err = ctui_in_process(capsys, "train", "--headless", "--no-tensorboard", *args)
    return code, one_line_error(subprocess.CompletedProcess([], code, "", err))


# ---------------------------------------------------------------- 1. no code from a checkpoint


@pytest.mark.slow
def test_a_loose_checkpoint_naming_a_task_file_never_imports_it(tmp_path):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil_task.py"
    evil.write_text(EVIL_TASK.format(marker=str(marker)))
    (newest,) = trained_run(tmp_path / "run")
    loose = tmp_path / "model.pt"
    shutil.copy(newest, loose)
    rewrite(loose, lambda state: (state["config"].update(task=f"{evil}:build"),
                                  state.update(task=f"{evil}:build")))
    result = ctui_train("--resume", str(loose), "--runs-dir", str(tmp_path / "runs"))
    assert result.returncode == 1
    assert "imports no code a checkpoint names" in one_line_error(result)
    assert f"--task {evil}:build" in result.stderr  # what to type, if the user trusts it
    assert not marker.exists()


@pytest.mark.slow
def test_a_checkpoint_in_a_run_folder_cannot_change_the_runs_task(tmp_path):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil_task.py"
    evil.write_text(EVIL_TASK.format(marker=str(marker)))
    run_dir = tmp_path / "run"
    (newest,) = trained_run(run_dir)
    rewrite(newest, lambda state: state["config"].update(task=f"{evil}:build"))
    result = ctui_train("--resume", "--run-dir", str(run_dir))
    assert not marker.exists()  # the task is config.json's (digits), not the checkpoint's
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- 2. a loose file


@pytest.mark.slow
def test_resuming_a_loose_file_starts_a_new_run_and_touches_nothing_near_it(tmp_path):
    (newest,) = trained_run(tmp_path / "run", epochs=1)
    home = tmp_path / "home"
    downloads = home / "downloads"
    downloads.mkdir(parents=True)
    os.chmod(home, 0o755)
    loose = downloads / "model.pt"
    shutil.copy(newest, loose)
    runs = tmp_path / "runs"
    result = ctui_train("--resume", str(loose), "--epochs", "2", "--runs-dir", str(runs))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(home.stat().st_mode) == 0o755  # not chmodded
    assert sorted(p.name for p in home.rglob("*")) == ["downloads", "model.pt"]
    (new_run,) = runs.iterdir()
    assert list_checkpoints(checkpoint_dir(new_run))
    assert "resumed from" in result.stdout  # from those weights, at epoch 2


# ---------------------------------------------------------------- 3. folders and links


def test_a_folder_others_can_write_into_is_refused(capsys, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    code, error = refused_in_process(capsys, "--epochs", "1", "--run-dir", str(shared))
    assert code == 2 and "writable by other users" in error
    assert list(shared.iterdir()) == []


def test_a_folder_holding_other_files_is_not_adopted(capsys, tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    (home / "notes.txt").write_text("mine")
    code, error = refused_in_process(capsys, "--epochs", "1", "--run-dir", str(home))
    assert code == 2 and "not a run folder" in error
    assert sorted(p.name for p in home.iterdir()) == ["notes.txt"]
    assert stat.S_IMODE(home.stat().st_mode) == 0o755


def test_a_symlinked_run_folder_is_refused(capsys, tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    code, error = refused_in_process(capsys, "--epochs", "1", "--run-dir", str(link))
    assert code == 2 and "symbolic link" in error


@pytest.mark.parametrize("where", ["run", "checkpoints"])
def test_a_folder_of_another_user_is_refused(capsys, tmp_path, other_user, where):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True, mode=0o700)
    (run_dir / "config.json").write_text(json.dumps({"config": {"task": "digits"}}))
    os.chown(run_dir if where == "run" else run_dir / "checkpoints", other_user.pw_uid,
             other_user.pw_gid)
    before = sorted(p.name for p in run_dir.rglob("*"))
    code, error = refused_in_process(capsys, "--resume", "--run-dir", str(run_dir))
    assert code == 2 and f"belongs to uid {other_user.pw_uid}" in error
    assert sorted(p.name for p in run_dir.rglob("*")) == before


@pytest.mark.slow
def test_links_planted_at_every_name_ctui_writes_are_never_written_through(tmp_path):
    run_dir = tmp_path / "run"
    trained_run(run_dir, epochs=1)
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    names = ["config.json.tmp", "host.json.tmp", "end.json.tmp", "metrics.jsonl.tmp",
             "checkpoints/ckpt-e0002-s000000012.pt.tmp", "checkpoints/ckpt-e0002-s000000012.pt"]
    for name in names:
        (run_dir / name).symlink_to(victim)
    result = ctui_train("--resume", "--run-dir", str(run_dir), "--epochs", "2")
    assert result.returncode == 0, result.stderr
    assert victim.read_text() == "root's file\n"


def test_new_run_folders_have_names_nobody_can_plant_beforehand(tmp_path):
    runs = tmp_path / "runs"
    first = Engine(tiny(runs_dir=str(runs))).run_dir
    second = Engine(tiny(runs_dir=str(runs))).run_dir
    assert first != second and first.parent == second.parent == runs
    # digits-YYYYmmdd-HHMMSS-<random>: the time alone would be guessable
    assert len(first.name.split("-")[-1]) == 6


# ---------------------------------------------------------------- 5, 6: resume races


@pytest.mark.slow
def test_two_resumes_of_one_run_at_once_lose_nothing(tmp_path):
    run_dir = tmp_path / "run"
    trained_run(run_dir, epochs=1, log_interval=1)
    args = [sys.executable, "-m", "ctui.tui.main", "train", "--headless", "--resume",
            "--run-dir", str(run_dir), "--epochs", "3", "--no-tensorboard"]
    env = {**os.environ, **CHILD_ENV}
    both = [subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in both]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "being trained by another live process" in loser
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["global_step"] for r in records if r["type"] == "step"]
    epochs = [r["epoch"] for r in records if r["type"] == "epoch"]
    assert steps == sorted(set(steps)) and steps[0] == 1  # each step once, in order
    assert epochs == [1, 2, 3]


def test_config_json_is_written_before_anything_can_kill_the_run(tmp_path):
    run_dir = tmp_path / "run"
    Engine(tiny(run_dir=str(run_dir), epochs=5, task="fake", fake_size=64))
    recorded = json.loads((run_dir / "config.json").read_text())["config"]
    assert recorded["task"] == "fake" and recorded["epochs"] == 5


@pytest.mark.slow
def test_resume_after_a_kill_before_the_first_checkpoint_keeps_the_runs_task(tmp_path):
    run_dir = tmp_path / "run"
    killed_before_its_first_checkpoint(**tiny(run_dir=str(run_dir), epochs=1, task="fake",
                                              fake_size=64).to_dict())
    result = ctui_train("--resume", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert "epoch 1/1" in result.stdout  # the run's own 1 epoch of fake data, not 14 of digits
    assert json.loads((run_dir / "config.json").read_text())["config"]["task"] == "fake"


@pytest.mark.parametrize("folder", ["typo", "empty"])
def test_resume_of_a_folder_with_nothing_to_resume_is_a_usage_error(capsys, tmp_path, folder):
    target = tmp_path / folder
    if folder == "empty":
        (target / "checkpoints").mkdir(parents=True, mode=0o700)
        os.chmod(target, 0o700)
    code, _ = refused_in_process(capsys, "--resume", "--run-dir", str(target))
    assert code == 2
    assert not (target / "config.json").exists()


# ---------------------------------------------------------------- 8. an epoch recorded once


@pytest.mark.slow
def test_a_kill_between_the_last_step_and_the_epoch_end_checkpoint_records_the_epoch_once(
        tmp_path):
    run_dir = tmp_path / "run"
    marker = tmp_path / "never"
    # digits: 23 steps of 64 per epoch; save 1 is the step checkpoint at the epoch's last
    # step, save 2 the epoch-end one, held half-written until the kill.
    process = subprocess.Popen(
        [sys.executable, "-m", "ctui.tui.main", "train", "--headless", "--epochs", "2",
         "--batch-size", "64", "--checkpoint-every-steps", "23", "--no-tensorboard",
         "--device", "cpu", "--run-dir", str(run_dir)], cwd=REPO, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **CHILD_ENV, "CTUI_TEST_PAUSE_SAVE_UNTIL": str(marker),
             "CTUI_TEST_PAUSE_SAVE_AT": "2"})
    try:
        waiting = tmp_path / "never.waiting"
        deadline = time.monotonic() + 180
        while not waiting.exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        process.kill()
        process.wait()
    (committed,) = list_checkpoints(checkpoint_dir(run_dir))
    assert load_checkpoint(committed)["progress"]["position"] == 1437  # the whole epoch
    result = ctui_train("--resume", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert epochs[0]["train_seconds"] > 0 and epochs[0]["samples_per_second"] > 0
    history = load_checkpoint(list_checkpoints(checkpoint_dir(run_dir))[-1])["history"]
    assert [h["epoch"] for h in history] == [1, 2] and history[0]["samples_per_second"] > 0


# ---------------------------------------------------------------- 9. damaged vs unloadable


@pytest.mark.slow
def test_out_of_memory_while_loading_leaves_the_checkpoint_alone(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    (newest,) = trained_run(run_dir)

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate "
                           "1073741824 bytes")

    monkeypatch.setattr(torch, "load", out_of_memory)
    with pytest.raises(CheckpointError, match="could not be loaded now") as raised:
        find_resume_point("latest", run_dir)
    assert not raised.value.corrupt
    assert list_checkpoints(checkpoint_dir(run_dir)) == [newest]
    assert not list(checkpoint_dir(run_dir).glob("*.corrupt"))


@pytest.mark.slow
def test_a_flipped_byte_in_the_weights_is_detected_and_the_previous_checkpoint_used(tmp_path):
    run_dir = tmp_path / "run"
    older, newest = trained_run(run_dir, epochs=2)
    data = bytearray(newest.read_bytes())
    middle = len(data) // 2  # inside the tensor data, where torch.load notices nothing
    data[middle] ^= 0xFF
    newest.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(newest)
    point = find_resume_point("latest", run_dir)
    assert point.path == older
    assert (newest.parent / (newest.name + ".corrupt")).exists()


# ---------------------------------------------------------------- 10. say what exists


@pytest.mark.slow
def test_a_stop_when_no_checkpoint_could_be_saved_says_there_is_none(tmp_path):
    import resource

    run_dir = tmp_path / "run"

    def small_files() -> None:  # checkpoints (MBs) fail with EFBIG; metrics lines fit
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))

    process = subprocess.Popen(
        [sys.executable, "-m", "ctui.tui.main", "train", "--headless", "--epochs", "3",
         "--checkpoint-every-steps", "3", "--no-tensorboard", "--run-dir", str(run_dir)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **CHILD_ENV}, preexec_fn=small_files)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("paused"):
            break
    process.send_signal(signal.SIGTERM)
    rest, _ = process.communicate(timeout=120)
    output = "".join(lines) + rest
    assert process.returncode == 1, output
    assert "None" not in output
    assert "stopped without a checkpoint" in output and "nothing to resume" in output


# ---------------------------------------------------------------- 12. fields of a checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("damage", [
    lambda state: state.pop("optimizer"),
    lambda state: state.update(progress={"epoch": "2", "position": 0, "global_step": 0}),
    lambda state: state["settings"].update(batch_size=-3),
])
def test_a_loadable_checkpoint_with_a_missing_or_wrong_field_is_one_line(tmp_path, damage):
    (newest,) = trained_run(tmp_path / "run")
    loose = tmp_path / "model.pt"
    shutil.copy(newest, loose)
    rewrite(loose, damage)
    result = ctui_train("--resume", str(loose), "--runs-dir", str(tmp_path / "runs"))
    assert result.returncode == 1
    assert "not a usable ctui checkpoint" in one_line_error(result)


# ---------------------------------------------------------------- 13. folders given on the CLI


@pytest.mark.slow
@pytest.mark.parametrize(("args", "expected"), [
    (["--run-dir", "/dev/null"], "is not a folder"),
    (["--run-dir", "/etc/passwd/sub"], "/etc/passwd is not a folder"),
    (["--runs-dir", "/dev/null"], "runs folder /dev/null is not a folder"),
    (["--resume", "--run-dir", "typo-that-does-not-exist"], "does not exist"),
    (["--resume="], "'' is not a checkpoint"),
    (["--run-dir="], "'' is not a folder path"),
], ids=lambda value: " ".join(value) if isinstance(value, list) else None)
def test_folders_that_cannot_be_run_folders_are_one_line_exit_2(args, expected):
    result = ctui_train("--epochs", "1", *args)
    assert result.returncode == 2
    assert expected in one_line_error(result)
