"""Autotune on an input-bound task: the `fake` task's images with a deliberately expensive
transform. Prints the throughput after autotune as a ratio of the default settings' (median of
several repetitions of the same timed trial), and the autotune's time against the time of the
full grid of the same trials (every num_workers with every batch size).

    python tests/bench/bench_autotune.py [--repeats 3] [--budget 60]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from torchvision import datasets, transforms

from ctui.engine import RunConfig, Task, tuning
from ctui.engine.device import choose_placement
from ctui.engine.loop import Trainer, seed_everything
from ctui.engine.tasks.models import Net, nll_loss
from ctui.engine.tuning import _trial, autotune, batch_options, worker_options


def build(config: RunConfig) -> Task:
    """FakeData at 1x28x28 through a costly blur-and-resize chain: loading dominates."""
    expensive = transforms.Compose([
        transforms.Resize(224), transforms.GaussianBlur(25, sigma=6.0), transforms.Resize(28),
        transforms.ToTensor(), transforms.Normalize((0.5,), (0.25,)),
    ])
    train = datasets.FakeData(size=2048, image_size=(1, 28, 28), transform=expensive)
    test = datasets.FakeData(size=256, image_size=(1, 28, 28), transform=expensive,
                             random_offset=2048)
    return Task(model=Net(), train_dataset=train, test_dataset=test, loss=nll_loss,
                name="fake-expensive")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--batch-cap", type=int, default=256,
                        help="largest batch size tried (the engine's cap is 4096; on a CPU-only "
                        "machine the full grid up to that would take hours)")
    args = parser.parse_args()
    tuning.BATCH_CAP = args.batch_cap
    config = RunConfig(task=f"{__file__}:build", device="cpu", tensorboard=False)
    seed_everything(config.seed)
    trainer = Trainer(config, build(config), choose_placement("cpu", False), lambda e: None)
    cores = os.cpu_count() or 1
    indices = trainer.sampler.share()

    report = autotune(trainer, args.budget, cores, log=print)
    print(f"autotune: best batch size {report.best_batch_size}, "
          f"{report.best_num_workers} workers, in {report.seconds:.1f}s")

    default = (config.batch_size, config.num_workers)
    best = (report.best_batch_size, report.best_num_workers)
    default_speeds, best_speeds = [], []
    for _ in range(args.repeats):
        default_speeds.append(_trial(trainer, indices, *default))
        best_speeds.append(_trial(trainer, indices, *best))
    ratio = statistics.median(best_speeds) / statistics.median(default_speeds)
    print(f"default {statistics.median(default_speeds):,.0f} samples/s, after autotune "
          f"{statistics.median(best_speeds):,.0f} samples/s: ratio {ratio:.2f} "
          f"(median of {args.repeats})")

    grid_start = time.monotonic()
    sizes = [config.batch_size, *batch_options(config.batch_size, len(indices))]
    for batch_size in sizes:
        for workers in worker_options(cores):
            _trial(trainer, indices, batch_size, workers)
    grid = time.monotonic() - grid_start
    print(f"autotune {report.seconds:.1f}s vs full grid of {len(sizes)} batch sizes x "
          f"{len(worker_options(cores))} worker counts {grid:.1f}s: "
          f"ratio {report.seconds / grid:.2f}")


if __name__ == "__main__":
    main()
