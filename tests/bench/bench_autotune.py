"""Autotune on an input-bound task: are its picks right, and do they agree?

The task: FakeData images through a costly blur-and-resize chain and a one-layer model, so loading
dominates. First the real throughput of every setting autotune may pick (each num_workers with
each batch size) is measured with the real training loop, the second of two epochs per
repetition, the settings' order alternating between repetitions; then autotune runs --runs
times from the default settings. It reports each pick's real throughput as a ratio of the best
setting's (target >= 0.90), whether the picks agree, and autotune's time against the grid's.

    python tests/bench/bench_autotune.py [--runs 10] [--repeats 2] [--budget 60]

On a shared machine the absolute numbers move with the other load: read the ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import Counter

import torch
from torch import nn
from torchvision import datasets, transforms

from ctui.engine import RunConfig, Task, tuning
from ctui.engine.bottleneck import worker_options
from ctui.engine.cli.tune_cmd import report_table
from ctui.engine.device import choose_placement
from ctui.engine.events import EpochEnded
from ctui.engine.loop import Trainer, seed_everything
from ctui.engine.tasks.models import nll_loss
from ctui.engine.tuning import autotune, batch_options

TRAIN_SIZE = 1024


def build(config: RunConfig) -> Task:
    """FakeData at 1x28x28 through a blur at 112x112: loading costs far more than the model."""
    expensive = transforms.Compose([
        transforms.Resize(112), transforms.GaussianBlur(9, sigma=3.0), transforms.Resize(28),
        transforms.ToTensor(), transforms.Normalize((0.5,), (0.25,)),
    ])
    train = datasets.FakeData(size=TRAIN_SIZE, image_size=(1, 28, 28), transform=expensive)
    test = datasets.FakeData(size=64, image_size=(1, 28, 28), transform=expensive,
                             random_offset=TRAIN_SIZE)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10), nn.LogSoftmax(dim=1))
    return Task(model=model, train_dataset=train, test_dataset=test, loss=nll_loss,
                name="fake-expensive")


def config_for(batch_size: int = 64, num_workers: int = 0, epochs: int = 1) -> RunConfig:
    return RunConfig(task=f"{__file__}:build", device="cpu", tensorboard=False, epochs=epochs,
                     batch_size=batch_size, num_workers=num_workers, test_batch_size=64,
                     checkpoint_every_minutes=0)


def trainer_for(config: RunConfig, events: list | None = None) -> Trainer:
    seed_everything(config.seed)
    emit = events.append if events is not None else (lambda event: None)
    return Trainer(config, build(config), choose_placement("cpu", False), emit)


def real_speed(batch_size: int, num_workers: int) -> float:
    """Samples/s of the real training loop at these settings: the second of two epochs, as
    its workers persist from the first (start-up is not a setting's steady cost)."""
    events: list = []
    trainer_for(config_for(batch_size, num_workers, epochs=2), events).fit()
    epochs = [e for e in events if isinstance(e, EpochEnded)]
    return epochs[-1].samples_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="autotune runs (default 10)")
    parser.add_argument("--repeats", type=int, default=4,
                        help="real runs per setting for the reference table, half before and "
                        "half after the autotune runs (default 4)")
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--batch-cap", type=int, default=256,
                        help="largest batch size tried (the engine's cap is 4096)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the training process (default 1: on a shared "
                        "machine more threads than free cores make every timing erratic)")
    args = parser.parse_args()
    tuning.BATCH_CAP = args.batch_cap
    torch.set_num_threads(args.threads)
    cores = os.cpu_count() or 1
    print(f"{cores} cores, load average {os.getloadavg()[0]:.1f}, torch threads "
          f"{torch.get_num_threads()}")

    default = (64, 0)
    settings = [(size, workers)
                for size in (default[0], *batch_options(default[0], TRAIN_SIZE))
                for workers in worker_options(cores)]
    # The reference grid, half before and half after the autotune runs (each half in the
    # other order), so a load that drifts during the bench weighs on both alike.
    speeds: dict[tuple[int, int], list[float]] = {setting: [] for setting in settings}
    grid_seconds = 0.0

    def grid(repeats: range) -> None:
        nonlocal grid_seconds
        start = time.monotonic()
        for repeat in repeats:
            for setting in settings if repeat % 2 == 0 else reversed(settings):
                speeds[setting].append(real_speed(*setting))
        grid_seconds += time.monotonic() - start

    grid(range(args.repeats // 2 or 1))
    picks, seconds = [], []
    for run in range(args.runs):
        trainer = trainer_for(config_for(*default))
        report = autotune(trainer, args.budget, cores, log=lambda line: None)
        trainer.close_loaders()
        pick = (report.best_batch_size, report.best_num_workers)
        picks.append(pick)
        seconds.append(report.seconds)
        print(f"autotune {run + 1} (load average {os.getloadavg()[0]:.1f}):")
        print("    " + report_table(report).replace("\n", "\n    "))
    grid(range(args.repeats // 2 or 1, args.repeats))

    real = {setting: statistics.median(values) for setting, values in speeds.items()}
    fastest = max(real, key=real.get)
    print("real throughput, the second of two epochs per repetition (median, lowest-highest):")
    for setting, values in speeds.items():
        print(f"  batch {setting[0]:>4}, {setting[1]} workers: {real[setting]:7,.0f} samples/s "
              f"({min(values):,.0f}-{max(values):,.0f}), {real[setting] / real[fastest]:.2f} "
              "of the fastest")
    load = os.getloadavg()[0]
    if load > cores:
        print(f"warning: load average {load:.1f} on {cores} cores: other work shares the "
              "machine, and every timing above moves with it")

    ratios = [real[pick] / real[fastest] for pick in picks]
    counts = Counter(picks)
    print(f"picks: {dict(counts)}; agree: {len(counts) == 1}")
    print(f"real throughput of the picks / the fastest setting's: lowest {min(ratios):.2f}, "
          f"median {statistics.median(ratios):.2f} (target >= 0.90): "
          f"{'ok' if min(ratios) >= 0.9 else 'MISSED'}")
    print(f"after autotune vs default settings: ratio "
          f"{statistics.median(real[p] for p in picks) / real[default]:.2f}")
    print(f"autotune {statistics.median(seconds):.0f}s (median) vs the grid of {len(settings)} "
          f"settings x {args.repeats} repetitions {grid_seconds:.0f}s")


if __name__ == "__main__":
    main()
