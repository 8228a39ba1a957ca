"""Live tuning: batch size and num_workers change at the next step with every sample of the epoch
trained exactly once, no leaked workers, OOM rollback, limits, the advisor and autotune."""

from __future__ import annotations

import os

import psutil
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from ctui.engine import Engine, State
from ctui.engine.advisor import Advisor
from ctui.engine.checkpoint import checkpoint_dir, list_checkpoints, load_checkpoint
from ctui.engine.events import (
    Answer,
    EpochEnded,
    LogLine,
    Settings,
    StepLogged,
    TuneReport,
)
from ctui.engine.tasks import Task

from helpers import tiny

SAMPLES = 600


class IndexDataset(Dataset):
    """Sample i is (i, pid of the process that loaded it): the model sees what was served."""

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, index: int):
        return torch.tensor([float(index), float(os.getpid())]), index % 2


class RecordingModel(nn.Module):
    """Records the sample indices (and loader pids) of every training forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(1, 2)
        self.trained: list[int] = []
        self.loader_pids: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.trained.extend(int(i) for i in x[:, 0].tolist())
            self.loader_pids.extend(int(p) for p in x[:, 1].tolist())
        return self.linear(x[:, :1] / SAMPLES)


def build(config):
    return Task(model=RecordingModel(), train_dataset=IndexDataset(),
                test_dataset=IndexDataset())


def recording_run(tmp_path, **overrides) -> Engine:
    config = tiny(task=f"{__file__}:build", batch_size=8, log_interval=1,
                  run_dir=str(tmp_path / "run"), **overrides)
    return Engine(config)


def change_at(engine: Engine, plan: dict[int, list]) -> list:
    """Send the planned commands as the epoch passes each sample count; returns all events."""
    events = []
    engine.start()
    for event in engine.events():
        events.append(event)
        if isinstance(event, StepLogged):
            due = [mark for mark in plan if event.samples_seen >= mark]
            for mark in sorted(due):
                engine.pause()  # hold the loop so the whole group lands on one boundary
                for command in plan.pop(mark):
                    engine.send(command)
                engine.resume()
    return events


def test_every_sample_is_trained_exactly_once_across_changes(tmp_path):
    from ctui.engine.events import SetBatchSize, SetNumWorkers

    engine = recording_run(tmp_path)
    events = change_at(engine, {
        40: [SetBatchSize(16), SetNumWorkers(2)],
        250: [SetBatchSize(7)],
        400: [SetNumWorkers(0), SetBatchSize(32)],
        500: [SetNumWorkers(1)],
    })
    assert engine.state == State.FINISHED
    assert sorted(engine.task.model.trained) == list(range(SAMPLES))
    (epoch,) = [e for e in events if isinstance(e, EpochEnded)]
    assert epoch.settings_changed and (epoch.batch_size, epoch.num_workers) == (32, 1)
    sizes = [e.batch_size for e in events if isinstance(e, Settings)]
    assert sizes[0] == 8 and 16 in sizes and 7 in sizes and sizes[-1] == 32
    # workers really served batches after the change
    assert len(set(engine.task.model.loader_pids) - {os.getpid()}) >= 2


def test_no_worker_process_outlives_a_change_or_the_run(tmp_path):
    from ctui.engine.events import SetNumWorkers

    engine = recording_run(tmp_path, num_workers=2, epochs=2)
    seen_children = []

    def children() -> set[int]:
        return {p.pid for p in psutil.Process().children(recursive=True)}

    engine.start()
    for event in engine.events():
        if isinstance(event, StepLogged) and event.epoch == 1 and event.step == 5:
            seen_children.append(children())
            engine.send(SetNumWorkers(1))
        # Settings come again at each epoch end: the children right after the change count.
        if isinstance(event, Settings) and event.num_workers == 1 and len(seen_children) == 1:
            seen_children.append(children())
    assert engine.state == State.FINISHED
    two, one = seen_children
    assert len(two) >= 2 and not (two & one), "the old loader's workers must have exited"
    assert children() == set()


def test_workers_persist_across_epochs_while_settings_stay(tmp_path):
    engine = recording_run(tmp_path, num_workers=2, epochs=2)
    engine.start().wait()
    pids = engine.task.model.loader_pids
    first, second = set(pids[: len(pids) // 2]), set(pids[len(pids) // 2:])
    assert first == second and os.getpid() not in first


def test_out_of_memory_rolls_back_the_batch_size_and_loses_nothing(tmp_path, monkeypatch):
    from ctui.engine.events import SetBatchSize

    monkeypatch.setenv("CTUI_TEST_OOM_ABOVE_BATCH", "20")
    engine = recording_run(tmp_path)
    events = change_at(engine, {100: [SetBatchSize(64)]})
    assert engine.state == State.FINISHED
    assert sorted(engine.task.model.trained) == list(range(SAMPLES))
    warnings = [e.message for e in events if isinstance(e, LogLine) and e.level == "warning"]
    assert any("out of memory at batch size 64: back to 8" in w for w in warnings)
    assert [e for e in events if isinstance(e, Settings)][-1].batch_size == 8


def test_out_of_memory_with_nothing_smaller_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("CTUI_TEST_OOM_ABOVE_BATCH", "4")
    engine = recording_run(tmp_path)
    engine.start().wait()
    assert engine.state == State.FAILED
    failure = [e for e in engine.history if e.kind == "error"][0]
    assert "out of memory at batch size 8" in failure.message and "--batch-size" in failure.message


def test_limits_are_refused_or_warned(tmp_path):
    from ctui.engine.config import max_num_workers
    from ctui.engine.events import SetBatchSize, SetNumWorkers

    engine = recording_run(tmp_path)
    cores = os.cpu_count()
    events = change_at(engine, {8: [SetNumWorkers(max_num_workers() + 1),
                                    SetBatchSize(SAMPLES + 1), SetBatchSize(0),
                                    SetNumWorkers(cores + 1)]})
    refused = [e.message for e in events if isinstance(e, Answer) and not e.accepted]
    assert f"num_workers={max_num_workers() + 1} refused" in refused[0]
    assert "per CPU core" in refused[0]
    assert f"batch_size={SAMPLES + 1} refused" in refused[1] and f"1 to {SAMPLES}" in refused[1]
    assert "batch_size=0 refused" in refused[2] and len(refused) == 3
    warnings = [e.message for e in events if isinstance(e, LogLine) and e.level == "warning"]
    assert any(f"{cores + 1} workers on {cores} CPU cores" in w for w in warnings)
    assert sorted(engine.task.model.trained) == list(range(SAMPLES))


def test_scale_lr_follows_the_batch_size(tmp_path):
    from ctui.engine.events import SetBatchSize

    engine = recording_run(tmp_path, scale_lr=True)
    events = change_at(engine, {16: [SetBatchSize(32)]})
    settings = [e for e in events if isinstance(e, Settings)]
    assert settings[0].lr == pytest.approx(1.0) and settings[-1].lr == pytest.approx(4.0)


@pytest.mark.slow
def test_autotune_leaves_training_exactly_as_it_was(tmp_path):
    def final_model(run_dir, tune: bool):
        engine = Engine(tiny(epochs=1, batch_size=64, run_dir=str(run_dir)))
        engine.start()
        if tune:
            engine.tune(budget_seconds=2)
        engine.wait()
        assert engine.state == State.FINISHED
        state = load_checkpoint(list_checkpoints(checkpoint_dir(run_dir))[-1])
        return engine, state

    plain, plain_state = final_model(tmp_path / "plain", tune=False)
    tuned, tuned_state = final_model(tmp_path / "tuned", tune=True)
    (report,) = [e for e in tuned.history if isinstance(e, TuneReport)]
    assert report.rows and report.rows[0][:2] == (64, 0) and report.rows[0][2] > 0
    assert (report.best_batch_size, report.best_num_workers) in {r[:2] for r in report.rows}
    for key in ("model", "optimizer"):
        flat_plain = torch.utils._pytree.tree_leaves(plain_state[key])
        flat_tuned = torch.utils._pytree.tree_leaves(tuned_state[key])
        assert all(torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b
                   for a, b in zip(flat_plain, flat_tuned, strict=True)), key
    assert tuned_state["progress"] == plain_state["progress"]
    epoch = [e for e in tuned.history if isinstance(e, EpochEnded)][0]
    assert not epoch.settings_changed and epoch.batch_size == 64


def test_advisor_verdicts():
    clock = [0.0]
    advisor = Advisor(cores=8, clock=lambda: clock[0])

    def observe(*figures, **settings):
        clock[0] += 1.0  # one logged interval a second: the advisor speaks after 3 s
        return advisor.observe(*figures, **settings)

    verdicts = [observe(0.6, None, batch_size=64, num_workers=0, device="cuda:0")
                for _ in range(4)]
    assert verdicts[:3] == [None] * 3
    assert verdicts[3].verdict == "input-bound"
    assert "raise num_workers (now 0; try 1, this machine has 8 cores)" in verdicts[3].message
    assert observe(0.6, None, batch_size=64, num_workers=0, device="cuda:0") is None
    advisor.reset()
    for _ in range(4):
        advice = observe(0.02, 0.3, batch_size=32, num_workers=4, device="cuda:0")
    assert advice.verdict == "gpu-underused" and "larger batch size (now 32)" in advice.message
    advisor.reset()
    for _ in range(4):
        advice = observe(0.02, 0.97, batch_size=256, num_workers=4, device="cuda:0")
    assert advice.verdict == "compute-bound" and "GPU 97% busy" in advice.message
