"""The engine against a bare PyTorch loop doing identical work: same model, data, sample order,
seed and batch size. Prints the engine's throughput as a ratio of the bare loop's (median of
several repetitions, alternating the two) and checks both produce the same losses.

    python tests/bench/bench_engine.py [--repeats 7] [--epochs 3] [--task digits]

Target: ratio >= 0.98.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ctui.engine import Engine, RunConfig
from ctui.engine.events import EpochEnded, StepLogged
from ctui.engine.loop import seed_everything
from ctui.engine.sampling import epoch_order
from ctui.engine.tasks import load_task


def bare_loop(config: RunConfig) -> tuple[list[float], list[float]]:
    """pytorch/examples mnist/main.py's train() and test(), with the engine's sample order.
    Returns (samples/s per epoch, loss per step)."""
    seed_everything(config.seed)
    task = load_task(config)
    model = task.model
    optimizer = torch.optim.Adadelta(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=config.gamma)
    dataset = task.train_dataset
    throughput, losses = [], []
    for epoch in range(1, config.epochs + 1):
        loader = DataLoader(dataset, batch_size=config.batch_size,
                            sampler=epoch_order(len(dataset), config.seed, epoch),
                            generator=torch.Generator().manual_seed(config.seed))
        model.train()
        start = time.perf_counter()
        for data, target in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = F.nll_loss(model(data), target)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        throughput.append(len(dataset) / (time.perf_counter() - start))
        evaluate(model, task.test_dataset, config.test_batch_size)  # test() as in mnist/main.py
        scheduler.step()
    return throughput, losses


@torch.no_grad()
def evaluate(model, dataset, batch_size: int) -> float:
    model.eval()
    loss = sum(F.nll_loss(model(data), target, reduction="sum").item()
               for data, target in DataLoader(dataset, batch_size=batch_size,
                                              generator=torch.Generator().manual_seed(0)))
    return loss / len(dataset)


def engine_run(config: RunConfig) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as folder:
        engine = Engine(config.replace(run_dir=folder)).start()
        events = list(engine.events())
    throughput = [e.samples_per_second for e in events if isinstance(e, EpochEnded)]
    losses = [e.loss for e in events if isinstance(e, StepLogged)]
    return throughput, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--task", default="digits")
    parser.add_argument("--no-checkpoints", action="store_true",
                        help="skip the engine's epoch-end checkpoints, to see what they cost: "
                        "the bare loop saves none")
    args = parser.parse_args()
    if args.no_checkpoints:
        Engine._save_checkpoint = lambda self, trainer: None
    config = RunConfig(task=args.task, epochs=args.epochs, log_interval=1, tensorboard=False,
                       checkpoint_every_minutes=0)
    ratios = []
    for repeat in range(args.repeats):
        # Alternate which goes first, so drift in the machine's speed falls on both.
        if repeat % 2:
            engine_speed, engine_losses = engine_run(config)
            bare_speed, bare_losses = bare_loop(config)
        else:
            bare_speed, bare_losses = bare_loop(config)
            engine_speed, engine_losses = engine_run(config)
        if repeat == 0:
            same = len(bare_losses) == len(engine_losses) and all(
                abs(a - b) <= 1e-6 * max(1.0, abs(a))
                for a, b in zip(bare_losses, engine_losses, strict=True))
            print(f"same losses for the same seed: {same} ({len(bare_losses)} steps)")
        ratio = statistics.median(engine_speed) / statistics.median(bare_speed)
        ratios.append(ratio)
        print(f"repeat {repeat + 1}: bare {statistics.median(bare_speed):,.0f} samples/s, "
              f"engine {statistics.median(engine_speed):,.0f} samples/s, ratio {ratio:.3f}")
    print(f"engine/bare throughput ratio: median {statistics.median(ratios):.3f} "
          f"over {args.repeats} repetitions (target >= 0.98)")


if __name__ == "__main__":
    main()
