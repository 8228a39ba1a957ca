"""Out of memory in a data-parallel job: the launcher relaunches it from the newest checkpoint at
half the batch per rank (engine/distributed/oom.py), without spending --max-restarts, down to 1.

The jobs are 2 gloo ranks on the CPU with the tiny task; CTUI_TEST_RANK_OOM (tiny_ddp_task.py)
makes one rank run out, CTUI_TEST_OOM_ABOVE_BATCH (engine/loop.py) every rank at once.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from ctui.engine.checkpoint import list_checkpoints, load_checkpoint
from ctui.engine.distributed import oom

from helpers import run_ctui

TASK = f"{Path(__file__).parent / 'tiny_ddp_task.py'}:build"
SAMPLES = 400  # 25 global batches of 16, 50 of 8: no short tail, no stand-in samples
COMMON = ["train", "--headless", "--nproc-per-node", "2", "--task", TASK, "--epochs", "2",
          "--no-tensorboard", "--log-interval", "2", "--checkpoint-every-steps", "3"]


def records(folder: Path) -> dict[str, list[list[int]]]:
    """Each rank process's training forwards (tiny_ddp_task.py), one list of indices each."""
    return {path.name: [[int(i) for i in line.split()] for line in path.read_text().splitlines()]
            for path in folder.iterdir()}


def end_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "end.json").read_text())


def epoch_batch_sizes(run_dir: Path) -> list[int]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [record["batch_size"] for record in lines if record["type"] == "epoch"]


@pytest.mark.slow
def test_one_rank_out_of_memory_relaunches_from_the_newest_checkpoint_at_half_the_batch(
        tmp_path):
    run_dir, folder = tmp_path / "run", tmp_path / "records"
    folder.mkdir()
    # Rank 1 runs out at its 32nd step (epoch 2), after checkpoints; --max-restarts 0 stays 0
    env = {"CTUI_TEST_RECORD_DIR": str(folder), "CTUI_TEST_TRAIN_SIZE": str(SAMPLES),
           "CTUI_TEST_RANK_OOM": "1:4:31"}
    result = run_ctui(*COMMON, "--batch-size", "8", "--max-restarts", "0", "--run-dir",
                      str(run_dir), env=env, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    said = re.search(r"rank 1 ran out of memory at batch size 8 per rank: continuing from the "
                     r"newest checkpoint \(epoch (\d+), sample (\d+)\) at 4 per rank",
                     result.stdout)
    assert said, result.stdout
    assert "restart" not in result.stdout and "global batch 8" in result.stdout
    assert end_of(run_dir)["state"] == "finished"
    assert epoch_batch_sizes(run_dir) == [8, 4]
    assert load_checkpoint(list_checkpoints(run_dir / "checkpoints")[-1])["settings"][
        "batch_size"] == 4
    assert json.loads((run_dir / "config.json").read_text())["config"]["batch_size"] == 4
    # Each sample once per epoch: the first launch's steps up to the checkpoint (one forward a
    # step on each rank), then all of the relaunch's; the steps since the checkpoint were redone
    epoch, sample = int(said.group(1)), int(said.group(2))
    kept_steps = (epoch - 1) * SAMPLES // 16 + sample // 16
    trained: Counter[int] = Counter()
    launches = {8: 0, 4: 0}
    for lines in records(folder).values():
        size = len(lines[0])
        launches[size] += 1
        for line in lines[:kept_steps] if size == 8 else lines:
            trained.update(line)
    assert launches == {8: 2, 4: 2}
    assert trained == Counter({index: 2 for index in range(SAMPLES)})


@pytest.mark.slow
def test_every_rank_out_of_memory_spends_no_restart(tmp_path):
    run_dir, folder = tmp_path / "run", tmp_path / "records"
    folder.mkdir()
    # The loop's hook counts the step's samples of all ranks: 2 x 8 > 12 >= 2 x 4
    env = {"CTUI_TEST_RECORD_DIR": str(folder), "CTUI_TEST_TRAIN_SIZE": str(SAMPLES),
           "CTUI_TEST_OOM_ABOVE_BATCH": "12"}
    result = run_ctui(*COMMON, "--batch-size", "8", "--max-restarts", "1", "--run-dir",
                      str(run_dir), env=env, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"rank 0 ran out of memory at batch size 8 per rank: continuing from the "
                     r"first sample \(no checkpoint yet\) at 4 per rank", result.stdout)
    assert "restart" not in result.stdout and not result.stderr.strip(), result.stderr
    assert end_of(run_dir)["state"] == "finished"
    assert epoch_batch_sizes(run_dir) == [4, 4]
    # Nothing was trained before the first step ran out: every forward is the relaunch's
    trained = Counter(index for lines in records(folder).values() for line in lines
                      for index in line)
    assert trained == Counter({index: 2 for index in range(SAMPLES)})


@pytest.mark.slow
def test_out_of_memory_down_to_batch_size_1_ends_failed_with_the_reason(tmp_path):
    run_dir = tmp_path / "run"
    result = run_ctui(*COMMON, "--batch-size", "2", "--run-dir", str(run_dir),
                      env={"CTUI_TEST_OOM_ABOVE_BATCH": "1"}, timeout=240)
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("ctui: error: rank 0 ran out of memory at batch size 1 per rank, "
                           "the smallest there is"), result.stderr
    assert "at 1 per rank" in result.stdout  # the relaunch from 2 came first
    end = end_of(run_dir)
    assert end["state"] == "failed" and "at batch size 1 per rank" in end["reason"]
    assert not list(run_dir.glob("rank-oom-*"))


# ------------------------------------------------------------ the reports, without a job


def test_a_report_is_read_back_type_checked_and_the_lowest_rank_wins(tmp_path):
    assert oom.first_report(tmp_path, 4) is None
    oom.report(tmp_path, 3, 64)
    oom.report(tmp_path, 1, 64)
    assert oom.first_report(tmp_path, 4) == oom.OutOfMemory(1, 64)
    oom.clear_reports(tmp_path, 4)
    assert oom.first_report(tmp_path, 4) is None
    # A tampered folder: wrong types, out of range, another rank's name, not JSON, a link
    for rank, data in ((0, {"rank": 0, "batch_size": "64"}), (1, {"rank": 1, "batch_size": 0}),
                       (2, {"rank": 3, "batch_size": 8}), (3, {"rank": True, "batch_size": 8})):
        (tmp_path / oom.report_name(rank)).write_text(json.dumps(data))
    (tmp_path / oom.report_name(4)).write_text("{")
    (tmp_path / "elsewhere.json").write_text(json.dumps({"rank": 5, "batch_size": 8}))
    (tmp_path / oom.report_name(5)).symlink_to(tmp_path / "elsewhere.json")
    assert oom.first_report(tmp_path, 6) is None
    assert oom.OutOfMemory.parse({"rank": 0, "batch_size": 2**40}, 1) is None
    assert oom.OutOfMemory.parse({"rank": 2, "batch_size": 8}, 2) is None


def test_what_the_launcher_does_and_says():
    ran_out = oom.OutOfMemory(rank=1, batch_size=256)
    assert oom.relaunches(ran_out, nnodes=1) and ran_out.relaunch_batch_size == 128
    assert not oom.relaunches(ran_out, nnodes=2)
    assert not oom.relaunches(oom.OutOfMemory(0, 1), nnodes=1)
    line = oom.relaunch_line(ran_out, 128, {"epoch": 3, "position": 5120},
                             "the newest checkpoint")
    assert line == ("rank 1 ran out of memory at batch size 256 per rank: continuing from the "
                    "newest checkpoint (epoch 3, sample 5120) at 128 per rank")
    several = oom.failure_line(ran_out, nnodes=2, node_rank=0, run_dir=Path("/runs/a"))
    assert "rank 1" in several and "batch size 256" in several
    assert "--resume --run-dir /runs/a --batch-size 128" in several
    assert "--batch-size 128" in oom.failure_line(ran_out, 2, 1, Path("/runs/b"))
    assert "the smallest" in oom.failure_line(oom.OutOfMemory(1, 1), 1, 0, Path("/runs/a"))


def test_only_a_training_step_counts():
    def _micro_step():
        raise MemoryError

    def evaluate():
        raise MemoryError

    for function, expected in ((_micro_step, True), (evaluate, False)):
        # the frames must come from the training loop's file
        function.__code__ = function.__code__.replace(co_filename="/x/ctui/engine/loop.py")
        try:
            function()
        except MemoryError:
            assert oom.in_a_training_step(sys.exc_info()[2]) is expected
