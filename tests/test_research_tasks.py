"""Research models in ctui's own loop: any batch structure, the task's own step and metrics,
the best checkpoint, accumulation, clipping, compile, the optimizer and scheduler flags, and
one-line errors for the mistakes a user makes with them."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from test_checkpoints import (
    CHILD_ENV,
    assert_bit_identical,
    spawn,
    step_records,
    wait_for,
)

from ctui.engine import Engine, RunConfig, State
from ctui.engine.best import BEST_CHECKPOINT
from ctui.engine.checkpoint import checkpoint_dir, list_checkpoints, load_checkpoint
from ctui.engine.events import BestCheckpoint, EpochEnded, Failed
from ctui.engine.runs import read_best

from helpers import REPO, run_ctui

EXAMPLES = REPO / "assets" / "examples"
CONTRASTIVE = f"{EXAMPLES / 'contrastive_task.py'}:build"
CHANGE_DETECTION = f"{EXAMPLES / 'change_detection_task.py'}:build"

# A linear regression without randomness in its steps: what accumulation must reproduce.
REGRESSION = """
import torch
from torch import nn
from torch.utils.data import Dataset
from ctui.engine import Task

class Pairs(Dataset):
    def __init__(self, n):
        g = torch.Generator().manual_seed(n)
        self.x = torch.randn(n, 8, generator=g)
        self.y = self.x @ torch.arange(8.0) + 0.1 * torch.randn(n, generator=g)
    def __len__(self):
        return len(self.x)
    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}

def step(model, batch):
    error = model(batch["x"]).squeeze(-1) - batch["y"]
    return {"loss": (error ** 2).mean(), "mae": error.abs().mean()}

def build(config):
    torch.manual_seed(0)
    return Task(model=nn.Linear(8, 1), train_dataset=Pairs(200), test_dataset=Pairs(50),
                step=step)
"""


def task_file(tmp_path: Path, source: str, name: str = "task.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return f"{path}:build"


def settings(tmp_path: Path, task: str, **overrides) -> RunConfig:
    values = dict(task=task, epochs=1, batch_size=16, test_batch_size=64, log_interval=1,
                  tensorboard=False, checkpoint_every_minutes=0, device="cpu",
                  runs_dir=str(tmp_path / "runs"))
    values.update(overrides)
    return RunConfig(**values)


def trained(config: RunConfig) -> tuple[Engine, list]:
    engine = Engine(config)
    events = []
    engine.add_sink(events.append)
    engine.run()
    return engine, events


def epochs_of(events: list) -> list[EpochEnded]:
    return [event for event in events if isinstance(event, EpochEnded)]


def failure(config: RunConfig) -> str:
    engine, events = trained(config)
    assert engine.state == State.FAILED
    return next(event.message for event in events if isinstance(event, Failed))


# ------------------------------------------------------------------ batches, step, metrics

def test_dict_batches_train_with_the_tasks_own_step_and_its_figures_are_logged(tmp_path):
    config = settings(tmp_path, task_file(tmp_path, REGRESSION), epochs=3,
                      optimizer="sgd", lr=0.01)
    engine, events = trained(config)
    assert engine.state == State.FINISHED
    epochs = epochs_of(events)
    assert epochs[-1].train_loss < epochs[0].train_loss / 4
    figures = dict(epochs[-1].metrics)
    # step's other figure, averaged over the epoch and over the test set without evaluate()
    assert set(figures) == {"train_mae", "test_mae"}
    assert epochs[-1].test_loss is not None and epochs[-1].test_accuracy is None
    records = [json.loads(line) for line in (engine.run_dir / "metrics.jsonl").open()]
    logged = [r for r in records if r["type"] == "epoch"][-1]
    assert dict(logged["metrics"]) == figures


def test_nested_batches_with_strings_reach_the_step_on_the_device_in_their_own_shape(tmp_path):
    source = """
    import torch
    from torch import nn
    from torch.utils.data import Dataset
    from ctui.engine import Task

    class Nested(Dataset):
        def __len__(self):
            return 40
        def __getitem__(self, i):
            return {"pair": (torch.full((3,), float(i)), [torch.tensor(i % 2)]),
                    "caption": f"sample {i}", "weight": 1.0}

    SEEN = []

    def step(model, batch):
        assert isinstance(batch["pair"][1], list)  # default_collate: tuples become lists
        assert batch["caption"][0].startswith("sample ")
        SEEN.append(len(batch["caption"]))
        return model(batch["pair"][0]).mean() ** 2

    def build(config):
        return Task(model=nn.Linear(3, 1), train_dataset=Nested(), test_dataset=Nested(),
                    step=step, batch_size_of=lambda batch: len(batch["caption"]))
    """
    engine, events = trained(settings(tmp_path, task_file(tmp_path, source)))
    assert engine.state == State.FINISHED, [e for e in events if isinstance(e, Failed)]
    epoch = epochs_of(events)[0]
    assert epoch.samples_per_second > 0 and epoch.global_step == 3  # 16 + 16 + 8 samples


def test_every_tensor_of_a_nested_batch_moves_and_the_containers_keep_their_types():
    from collections import namedtuple

    from ctui.engine.batches import default_batch_size, to_device

    Pair = namedtuple("Pair", "before after")
    batch = {"pair": Pair(torch.ones(4, 2), torch.zeros(4, 2)), "masks": [torch.ones(4)],
             "ids": (torch.arange(4), "names"), "weight": 0.5, "note": None}
    moved = to_device(batch, torch.device("meta"))
    assert isinstance(moved["pair"], Pair) and moved["pair"].after.device.type == "meta"
    assert isinstance(moved["masks"], list) and moved["masks"][0].device.type == "meta"
    assert isinstance(moved["ids"], tuple) and moved["ids"][1] == "names"
    assert moved["weight"] == 0.5 and moved["note"] is None
    assert batch["pair"].before.device.type == "cpu"  # a copy: the loader's batch is untouched
    assert default_batch_size(batch) == 4


def test_per_batch_metrics_are_averaged_by_batch_size_over_the_test_set(tmp_path):
    source = """
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset
    from ctui.engine import Task

    def build(config):
        x = torch.randn(90, 4)
        y = torch.arange(90) % 3
        return Task(model=nn.Linear(4, 3), train_dataset=TensorDataset(x, y),
                    test_dataset=TensorDataset(x, y),
                    metrics={"target_mean": lambda output, target: target.float().mean()})
    """
    _, events = trained(settings(tmp_path, task_file(tmp_path, source), test_batch_size=64))
    epoch = epochs_of(events)[0]
    # batches of 64 and 26: a plain mean of the two batch means would not be exactly 1.0
    assert dict(epoch.metrics)["target_mean"] == pytest.approx(1.0)
    assert epoch.test_accuracy is not None  # the default accuracy is still there


@pytest.mark.slow
def test_the_two_examples_train_and_improve_as_shipped(tmp_path):
    result = run_ctui("train", "--headless", "--task", CONTRASTIVE, "--epochs", "3",
                      "--runs-dir", str(tmp_path), "--no-tensorboard", env=CHILD_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    epochs = [line for line in result.stdout.splitlines() if line.startswith("epoch ")
              and "/3 " in line]
    assert len(epochs) == 3 and "i2t_top1" in epochs[0]

    def figure(line: str, name: str) -> float:
        return float(line.split(f"{name} ")[1].split()[0])

    assert figure(epochs[-1], "i2t_top1") > figure(epochs[0], "i2t_top1")
    assert figure(epochs[-1], "train loss") < figure(epochs[0], "train loss")

    run_dir = tmp_path / "cd"
    result = run_ctui("train", "--headless", "--task", CHANGE_DETECTION, "--epochs", "4",
                      "--run-dir", str(run_dir), "--no-tensorboard", "--monitor", "f1",
                      env=CHILD_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    f1 = {r["epoch"]: dict(r["metrics"])["f1"] for r in history if r["type"] == "epoch"}
    assert max(f1.values()) > f1[1] > 0.1
    best_epoch = max(f1, key=f1.get)
    best = load_checkpoint(checkpoint_dir(run_dir) / BEST_CHECKPOINT)
    assert best["progress"]["epoch"] == best_epoch + 1 and best["progress"]["position"] == 0
    assert dict(best["history"][-1]["metrics"])["f1"] == f1[best_epoch]
    assert f"best f1 so far: {f1[best_epoch]:.4g} at epoch {best_epoch}" in result.stdout


# ------------------------------------------------------------------ best checkpoint

def test_best_checkpoint_follows_the_monitored_figure_and_mode(tmp_path):
    # train_loss falls every epoch: with min the last epoch is best, with max the first
    task = task_file(tmp_path, REGRESSION)
    for mode, expected in (("min", 3), ("max", 1)):
        config = settings(tmp_path, task, epochs=3, optimizer="sgd", lr=0.01,
                          monitor="train_loss", mode=mode, keep_checkpoints=1)
        engine, events = trained(config)
        bests = [e for e in events if isinstance(e, BestCheckpoint)]
        assert bests[-1].epoch == expected and bests[-1].mode == mode
        state = load_checkpoint(checkpoint_dir(engine.run_dir) / BEST_CHECKPOINT)
        assert state["history"][-1]["epoch"] == expected
        assert read_best(engine.run_dir) == ("train_loss", bests[-1].value, expected)
        # the best is kept beside the last K, never pruned by them
        assert len(list_checkpoints(checkpoint_dir(engine.run_dir))) == 1


def test_resumed_run_knows_the_best_so_far_and_does_not_replace_it_with_a_worse_one(tmp_path):
    task = task_file(tmp_path, REGRESSION)
    config = settings(tmp_path, task, epochs=2, optimizer="sgd", lr=0.01,
                      monitor="train_loss", mode="max", run_dir=str(tmp_path / "run"))
    trained(config)
    best_path = checkpoint_dir(tmp_path / "run") / BEST_CHECKPOINT
    before = best_path.read_bytes()
    engine = Engine(config.replace(epochs=3), resume="latest")
    events = []
    engine.add_sink(events.append)
    engine.run()
    assert engine.state == State.FINISHED
    assert not [e for e in events if isinstance(e, BestCheckpoint)]  # epoch 3 is not better
    assert best_path.read_bytes() == before


def test_monitor_naming_a_figure_that_does_not_exist_lists_those_that_do(tmp_path):
    task = task_file(tmp_path, REGRESSION)
    config = settings(tmp_path, task, monitor="f2", run_dir=str(tmp_path / "run"))
    message = failure(config)
    assert "--monitor f2" in message and "train_loss, test_loss, train_mae, test_mae" in message
    assert "\n" not in message
    # the epoch it trained is kept, to resume with a --monitor that exists
    assert list_checkpoints(checkpoint_dir(tmp_path / "run"))


# ------------------------------------------------------------------ accumulation

def final_weights(config: RunConfig) -> dict[str, torch.Tensor]:
    engine, events = trained(config)
    assert engine.state == State.FINISHED, [e for e in events if isinstance(e, Failed)]
    return {k: v.clone() for k, v in engine.trainer.model.state_dict().items()}


def test_accumulation_takes_the_step_of_the_equivalent_larger_batch(tmp_path):
    task = task_file(tmp_path, REGRESSION)
    common = dict(epochs=2, optimizer="sgd", lr=0.01, scheduler="none")
    # 200 samples: steps of 64, 64, 64 and 8, taken as 4+4+4+1 batches of 16 (the last of 8)
    accumulated = final_weights(settings(tmp_path, task, batch_size=16, accumulate=4, **common))
    one_batch = final_weights(settings(tmp_path, task, batch_size=64, accumulate=1, **common))
    unaccumulated = final_weights(settings(tmp_path, task, batch_size=16, **common))
    for name in one_batch:
        torch.testing.assert_close(accumulated[name], one_batch[name], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(unaccumulated["weight"], one_batch["weight"], atol=1e-4)


def test_accumulated_steps_are_counted_and_logged_as_optimizer_steps(tmp_path):
    task = task_file(tmp_path, REGRESSION)
    _, events = trained(settings(tmp_path, task, batch_size=16, accumulate=4))
    epoch = epochs_of(events)[0]
    assert epoch.global_step == 4  # 13 batches of 16 (the last of 8): 4 optimizer steps


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_steps", [3, 8, 15])
def test_dict_batches_with_accumulation_resume_bit_identically_after_sigkill(
        tmp_path, kill_after_steps):
    # 32 batches of 64 per epoch in steps of 3: most kills land between a step's batches
    flags = ["train", "--headless", "--task", CONTRASTIVE, "--epochs", "2", "--accumulate", "3",
             "--log-interval", "1", "--checkpoint-every-steps", "4", "--no-tensorboard",
             "--device", "cpu"]
    reference = tmp_path / "reference"
    process = spawn([*flags, "--run-dir", str(reference)])
    process.communicate(timeout=300)
    assert process.returncode == 0
    run_dir = tmp_path / "run"
    process = spawn([*flags, "--run-dir", str(run_dir)])
    wait_for(lambda: step_records(run_dir) >= kill_after_steps)
    process.kill()
    process.wait()
    result = run_ctui("train", "--headless", "--resume", "--run-dir", str(run_dir),
                      env=CHILD_ENV)
    assert result.returncode == 0, result.stdout + result.stderr

    def final(folder: Path) -> dict[str, torch.Tensor]:
        state = load_checkpoint(list_checkpoints(checkpoint_dir(folder))[-1])
        assert state["progress"]["epoch"] == 3
        return state["model"]

    assert_bit_identical(final(run_dir), final(reference))


def test_a_checkpoint_asked_for_inside_an_accumulated_step_waits_for_its_end(tmp_path):
    task = task_file(tmp_path, REGRESSION)
    config = settings(tmp_path, task, batch_size=16, accumulate=3, checkpoint_every_steps=1,
                      epochs=1, keep_checkpoints=20)
    engine, _ = trained(config)
    positions = [load_checkpoint(path)["progress"]["position"]
                 for path in list_checkpoints(checkpoint_dir(engine.run_dir))]
    assert positions and all(position % 48 == 0 for position in positions)


# ------------------------------------------------------------------ training options

def test_clip_grad_norm_bounds_each_step(tmp_path):
    task = task_file(tmp_path, REGRESSION)
    start = final_weights(settings(tmp_path, task, epochs=1, lr=1e-12, optimizer="sgd"))
    config = settings(tmp_path, task, epochs=1, batch_size=200, optimizer="sgd", lr=1.0,
                      scheduler="none", clip_grad_norm=1e-3)
    clipped = final_weights(config)  # one step: SGD's first step moves by lr * gradient
    moved = torch.cat([(clipped[k] - start[k]).flatten() for k in start]).norm()
    assert moved <= 1e-3 * 1.0001


def test_optimizer_scheduler_and_val_every_flags(tmp_path):
    engine, events = trained(RunConfig(
        task="digits", epochs=3, batch_size=256, test_batch_size=2000, tensorboard=False,
        checkpoint_every_minutes=0, runs_dir=str(tmp_path), optimizer="adamw", lr=1e-3,
        scheduler="cosine", val_every=2))
    assert type(engine.trainer.optimizer).__name__ == "AdamW"
    epochs = epochs_of(events)
    assert [e.test_loss is not None for e in epochs] == [False, True, True]  # and the last
    # the rate each epoch trained at: cosine, reaching 0 after the last epoch
    assert [round(e.lr, 6) for e in epochs] == [0.001, 0.00075, 0.00025]


@pytest.mark.slow
def test_compile_time_is_shown_apart_from_the_epochs_train_time(tmp_path):
    result = run_ctui("train", "--headless", "--task", "digits", "--epochs", "2",
                      "--compile", "--runs-dir", str(tmp_path), "--no-tensorboard",
                      "--device", "cpu", env=CHILD_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("epoch ")
             and "/2 " in line]
    assert "compile " in lines[0] and "compile " not in lines[1]
    compile_seconds = float(lines[0].split("compile ")[1].split("s")[0])
    train_seconds = float(lines[0].split("train ")[1].split("s")[0])
    assert compile_seconds > 0 and train_seconds > 0


# ------------------------------------------------------------------ one-line errors

BAD_TASKS = {
    "custom object": ("""
        import torch
        from torch import nn
        from torch.utils.data import TensorDataset
        from ctui.engine import Task
        class Thing:
            pass
        def collate(items):
            return {"x": torch.stack([x for x, in items]), "meta": Thing()}
        def build(config):
            data = TensorDataset(torch.ones(8, 2))
            return Task(model=nn.Linear(2, 1), train_dataset=data, test_dataset=data,
                        collate_fn=collate, step=lambda model, batch: model(batch["x"]).mean())
        """, "batch['meta'] is a Thing, which ctui cannot move to the device"),
    "non-scalar step": ("""
        import torch
        from torch import nn
        from torch.utils.data import TensorDataset
        from ctui.engine import Task
        def build(config):
            data = TensorDataset(torch.ones(8, 2), torch.zeros(8))
            return Task(model=nn.Linear(2, 1), train_dataset=data, test_dataset=data,
                        step=lambda model, batch: model(batch[0]))
        """, "Task.step returned a loss of shape (8, 1): return one number"),
    "non-number metric": ("""
        import torch
        from torch import nn
        from torch.utils.data import TensorDataset
        from ctui.engine import Task
        def build(config):
            data = TensorDataset(torch.ones(8, 2), torch.zeros(8, dtype=torch.long))
            return Task(model=nn.Linear(2, 2), train_dataset=data, test_dataset=data,
                        metrics={"f1": lambda output, target: "high"})
        """, "Task.metrics['f1'] is a str, not a number"),
    "dict batches without a step": ("""
        import torch
        from torch import nn
        from torch.utils.data import Dataset
        from ctui.engine import Task
        class Data(Dataset):
            def __len__(self):
                return 8
            def __getitem__(self, i):
                return {"img": torch.ones(2), "txt": torch.ones(2)}
        def build(config):
            return Task(model=nn.Linear(2, 1), train_dataset=Data(), test_dataset=Data())
        """, "batches are a dict with keys ['img', 'txt'], not (input, target) pairs: "
             "give Task.step"),
}


@pytest.mark.parametrize("case", sorted(BAD_TASKS))
def test_mistakes_with_the_new_task_fields_get_one_line(tmp_path, case):
    source, expected = BAD_TASKS[case]
    message = failure(settings(tmp_path, task_file(tmp_path, source), batch_size=8))
    assert expected in message, message
    assert "\n" not in message


def test_cli_prints_the_mistake_in_one_line_without_a_traceback(tmp_path):
    source, expected = BAD_TASKS["non-scalar step"]
    task = task_file(tmp_path, source)
    result = run_ctui("train", "--headless", "--task", task, "--epochs", "1",
                      "--runs-dir", str(tmp_path / "runs"), "--no-tensorboard")
    assert result.returncode == 1
    assert expected in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_out_of_memory_inside_accumulation_rolls_back_and_trains_each_sample_once(
        tmp_path, monkeypatch):
    from test_live_tuning import SAMPLES, change_at, recording_run

    from ctui.engine.events import LogLine, SetBatchSize

    monkeypatch.setenv("CTUI_TEST_OOM_ABOVE_BATCH", "20")
    engine = recording_run(tmp_path, accumulate=3)
    events = change_at(engine, {96: [SetBatchSize(64)]})
    assert engine.state == State.FINISHED
    assert sorted(engine.task.model.trained) == list(range(SAMPLES))
    warnings = [e.message for e in events if isinstance(e, LogLine) and e.level == "warning"]
    assert any("out of memory at batch size 64: back to 8" in w for w in warnings)
    assert epochs_of(events)[-1].global_step == SAMPLES // 24  # steps of 3 batches of 8
