"""Data-parallel jobs for real: 2 gloo ranks on the CPU through PyTorch's elastic launcher.

The reference is one rank at twice the batch, trained in this process: with no dropout the two
must end with the same weights (to float rounding), and a checkpoint of either continues exactly
on the other. Each job starts 3 Python processes that import torch: a few seconds each.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
import torch

from ctui.engine import Engine, RunConfig, State
from ctui.engine.checkpoint import list_checkpoints, load_checkpoint

from helpers import REPO, run_ctui, wait_until

pytestmark = pytest.mark.slow

TASK = f"{Path(__file__).parent / 'tiny_ddp_task.py'}:build"
EPOCHS = 3
COMMON = ["--task", TASK, "--epochs", str(EPOCHS), "--no-tensorboard", "--log-interval", "2",
          "--checkpoint-every-steps", "3", "--keep-checkpoints", "100"]


def reference(run_dir: Path, resume: str | None = None) -> Engine:
    """One rank at batch 16, in this process."""
    engine = Engine(RunConfig(task=TASK, epochs=EPOCHS, batch_size=16, tensorboard=False,
                              log_interval=2, checkpoint_every_steps=3, keep_checkpoints=100,
                              checkpoint_every_minutes=0, run_dir=str(run_dir)), resume=resume)
    assert engine.run() == State.FINISHED
    return engine


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(list_checkpoints(run_dir / "checkpoints")[-1])["model"]


def epoch_losses(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [record["train_loss"] for record in records if record["type"] == "epoch"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)


def mid_epoch_checkpoint(run_dir: Path, into: Path) -> Path:
    """A copy, outside any run folder, of a checkpoint taken inside epoch 2."""
    for path in list_checkpoints(run_dir / "checkpoints"):
        progress = load_checkpoint(path)["progress"]
        if progress["epoch"] == 2 and progress["position"] > 0:
            return Path(shutil.copy(path, into))
    raise AssertionError("no checkpoint inside epoch 2")


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("one") / "run"
    reference(run_dir)
    return run_dir


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("two") / "run"
    result = run_ctui("train", "--headless", "--nproc-per-node", "2", "--batch-size", "8",
                      "--run-dir", str(run_dir), *COMMON, timeout=240)
    assert result.returncode == 0, result.stderr
    assert "2 ranks (gloo" in result.stdout and "global batch 16" in result.stdout
    return run_dir


def test_two_ranks_train_as_one_rank_at_twice_the_batch(one_rank, two_ranks):
    # 97 samples: each epoch ends on a 1-sample global batch, where rank 1 runs at weight 0
    assert_same_weights(final_weights(two_ranks), final_weights(one_rank))
    assert epoch_losses(two_ranks) == pytest.approx(epoch_losses(one_rank), rel=1e-5)
    assert len(epoch_losses(two_ranks)) == EPOCHS


def test_a_two_rank_checkpoint_resumes_exactly_on_one_rank(one_rank, two_ranks, tmp_path):
    checkpoint = mid_epoch_checkpoint(two_ranks, tmp_path / "mid.pt")
    assert load_checkpoint(checkpoint)["world_size"] == 2
    resumed = reference(tmp_path / "resumed", resume=str(checkpoint))
    assert_same_weights(final_weights(resumed.run_dir), final_weights(one_rank))


def ranks_of(launcher: int) -> dict[int, psutil.Process]:
    found = {}
    for child in psutil.Process(launcher).children(recursive=True):
        try:
            if "ctui.engine.distributed.rank" in " ".join(child.cmdline()):
                found[int(child.environ().get("RANK", -1))] = child
        except psutil.Error:
            continue
    return found


def test_a_killed_rank_restarts_the_group_and_sigterm_stops_it_with_a_checkpoint(
        one_rank, tmp_path):
    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    env = {**os.environ, "CTUI_TEST_STEP_SLEEP": "0.15"}
    # Files, not pipes: a pipe nobody reads until the end would stall the ranks' writes.
    stdout, stderr = tmp_path / "out.txt", tmp_path / "err.txt"
    with open(stdout, "w") as out_file, open(stderr, "w") as err_file:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "ctui.tui.main", "train", "--headless", "--nproc-per-node",
             "2", "--batch-size", "8", "--max-restarts", "1", "--run-dir", str(run_dir),
             *COMMON], stdout=out_file, stderr=err_file, env=env, cwd=REPO)
    try:
        assert wait_until(lambda: len(list_checkpoints(checkpoints)) >= 1, timeout=120)
        assert 1 in ranks_of(launcher.pid)
        first = ranks_of(launcher.pid)[1]
        first.send_signal(signal.SIGKILL)
        # The launcher starts a new group, which resumes and saves again
        assert wait_until(lambda: ranks_of(launcher.pid).get(1, first).pid != first.pid,
                          timeout=60)
        saved = len(list_checkpoints(checkpoints))
        assert wait_until(lambda: len(list_checkpoints(checkpoints)) > saved, timeout=60)
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(timeout=150)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    out, err = stdout.read_text(), stderr.read_text()
    assert launcher.returncode == 3, err
    assert "restart 1 of the ranks" in out and "resumed from" in out
    assert "SIGTERM received" in out and json.loads(
        (run_dir / "end.json").read_text())["state"] == "stopped"
    # The stop saved one checkpoint for the whole job: it continues exactly (here on 1 rank)
    resumed = reference(run_dir, resume="latest")
    assert_same_weights(final_weights(resumed.run_dir), final_weights(one_rank))


def test_live_control_lands_on_every_rank_and_each_sample_is_trained_once(tmp_path):
    runs, records = tmp_path / "runs", tmp_path / "records"
    records.mkdir()
    env = {"CTUI_RUNS": str(runs), "CTUI_TEST_RECORD_DIR": str(records),
           "CTUI_TEST_TRAIN_SIZE": "400", "CTUI_TEST_STEP_SLEEP": "0.05"}
    run_dir = runs / "live"
    result = run_ctui("train", "--detach", "--nproc-per-node", "2", "--batch-size", "8",
                      "--run-dir", str(run_dir), "--task", TASK, "--epochs", "2",
                      "--no-tensorboard", "--log-interval", "2", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    metrics, end = run_dir / "metrics.jsonl", run_dir / "end.json"
    try:
        assert wait_until(lambda: metrics.exists() and metrics.read_text().strip(), timeout=60)
        # Pause the whole job at one step, change and save while paused, go on
        for command, answer in ((["pause"], "is paused"), (["set", "batch_size=5"], "8 -> 5"),
                                (["checkpoint"], "saved "), (["resume"], "is running")):
            done = run_ctui(command[0], str(run_dir), *command[1:], env=env, timeout=60)
            assert done.returncode == 0 and answer in done.stdout, done.stdout + done.stderr
        assert wait_until(lambda: end.exists() and "state" in end.read_text(), timeout=120)
    finally:  # a failed check leaves no job behind: its ranks exit with their host
        host = json.loads((run_dir / "host.json").read_text())["pid"]
        if not end.exists() and psutil.pid_exists(host):
            os.kill(host, signal.SIGKILL)
    assert json.loads(end.read_text())["state"] == "finished"
    trained: Counter[int] = Counter()
    sizes: dict[str, set[int]] = {}
    for path in records.iterdir():
        lines = [[int(i) for i in line.split()] for line in path.read_text().splitlines()]
        sizes[path.name.split("-")[0]] = {len(line) for line in lines}
        trained.update(index for line in lines for index in line)
    # 400 samples, 2 epochs, an even count: no stand-in samples, each trained once per epoch
    assert trained == Counter({index: 2 for index in range(400)})
    assert sizes.keys() == {"rank0", "rank1"}
    assert all({8, 5} <= seen for seen in sizes.values())  # both ranks changed
    epochs = [json.loads(line) for line in metrics.read_text().splitlines()
              if json.loads(line)["type"] == "epoch"]
    assert [record["batch_size"] for record in epochs] == [5, 5]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_launchers_with_nnodes_2_form_one_job_resuming_a_one_rank_checkpoint(
        one_rank, tmp_path):
    checkpoint = mid_epoch_checkpoint(one_rank, tmp_path / "mid.pt")
    endpoint = f"127.0.0.1:{free_port()}"
    flags = ["train", "--headless", "--nnodes", "2", "--rdzv-endpoint", endpoint,
             "--batch-size", "8", *COMMON]
    stdout, stderr = tmp_path / "out.txt", tmp_path / "err.txt"
    with open(stdout, "w") as out_file, open(stderr, "w") as err_file:
        # Machine 0 first, as the README says: machine 1 then finds its store at once
        first = subprocess.Popen(
            [sys.executable, "-m", "ctui.tui.main", *flags, "--node-rank", "0", "--run-dir",
             str(tmp_path / "a"), "--resume", str(checkpoint)], stdout=out_file,
            stderr=err_file, text=True, cwd=REPO)
    try:
        time.sleep(1.0)
        second = run_ctui(*flags, "--node-rank", "1", "--run-dir", str(tmp_path / "b"),
                          timeout=240)
        first.wait(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    out, err = stdout.read_text(), stderr.read_text()
    assert first.returncode == 0 and second.returncode == 0, err + second.stderr
    assert "2 ranks" in out and "resumed from" in out
    assert second.stdout == ""  # machine 1 trains too; rank 0 speaks for the job
    assert not (tmp_path / "b" / "checkpoints").exists()
    assert json.loads((tmp_path / "b" / "end.json").read_text())["state"] == "finished"
    assert_same_weights(final_weights(tmp_path / "a"), final_weights(one_rank))


def test_a_rendezvous_that_cannot_complete_names_the_endpoint(tmp_path):
    endpoint = f"127.0.0.1:{free_port()}"  # nobody listens: machine 0 never comes
    started = time.monotonic()
    result = run_ctui("train", "--headless", "--nnodes", "2", "--node-rank", "1",
                      "--rdzv-endpoint", endpoint, "--rdzv-timeout", "1", "--task", TASK,
                      "--run-dir", str(tmp_path / "run"), timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and endpoint in lines[0] and "did not meet" in lines[0], \
        result.stderr
    assert time.monotonic() - started < 60
