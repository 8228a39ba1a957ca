"""The engine against a bare PyTorch loop doing identical work: same model, data, sample order,
seed and batch size. Prints the engine's throughput as a ratio of the bare loop's (median of
several repetitions, alternating the order) and checks both produce the same losses.

    python tests/bench/bench_engine.py [--repeats 7] [--epochs 3] [--task digits] [--device auto]

Target: ratio >= 0.98. "engine" is `Engine.run()`, training on the main thread as the headless
command and the run host do. `Engine.start()` trains on a thread of its own (a notebook stays
live); it is timed too, against the bare loop on a thread, because PyTorch's CPU kernels run
slower off the thread that owns the process's first OpenMP team: "bare on a thread / bare"
shows that cost apart from the engine's own.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ctui.engine import Engine, RunConfig
from ctui.engine.device import choose_placement
from ctui.engine.events import EpochEnded, StepLogged
from ctui.engine.loop import seed_everything
from ctui.engine.sampling import epoch_order
from ctui.engine.tasks import load_task


def bare_loop(config: RunConfig) -> tuple[list[float], list[float]]:
    """pytorch/examples mnist/main.py's train() and test(), with the engine's sample order and,
    on CUDA, its pinned memory and non-blocking copies. Returns (samples/s per epoch, the loss
    of every log_interval-th step)."""
    device = choose_placement(config.device, amp=False).device
    cuda = device.type == "cuda"
    seed_everything(config.seed)
    task = load_task(config)
    model = task.model.to(device)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=config.gamma)
    dataset = task.train_dataset
    throughput, losses = [], []
    for epoch in range(1, config.epochs + 1):
        loader = DataLoader(dataset, batch_size=config.batch_size, pin_memory=cuda,
                            sampler=epoch_order(len(dataset), config.seed, epoch),
                            generator=torch.Generator().manual_seed(config.seed))
        model.train()
        start = time.perf_counter()
        for step, (data, target) in enumerate(loader, 1):
            data, target = data.to(device, non_blocking=cuda), target.to(device, non_blocking=cuda)
            optimizer.zero_grad(set_to_none=True)
            loss = F.nll_loss(model(data), target)
            loss.backward()
            optimizer.step()
            if step % config.log_interval == 0:
                losses.append(loss.item())
        if cuda:
            torch.cuda.synchronize(device)
        throughput.append(len(dataset) / (time.perf_counter() - start))
        evaluate(model, task.test_dataset, config.test_batch_size, device)  # test(), as there
        scheduler.step()
    return throughput, losses


def on_a_thread(run, config: RunConfig):
    result = []
    thread = threading.Thread(target=lambda: result.append(run(config)))
    thread.start()
    thread.join()
    return result[0]


@torch.no_grad()
def evaluate(model, dataset, batch_size: int, device: torch.device) -> float:
    model.eval()
    loss = sum(F.nll_loss(model(data.to(device)), target.to(device), reduction="sum").item()
               for data, target in DataLoader(dataset, batch_size=batch_size,
                                              generator=torch.Generator().manual_seed(0)))
    return loss / len(dataset)


def engine_run(config: RunConfig, thread: bool = False) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as folder:
        engine = Engine(config.replace(run_dir=folder))
        if thread:
            events = list(engine.start().events())
        else:
            engine.run()
            events = engine.history
    throughput = [e.samples_per_second for e in events if isinstance(e, EpochEnded)]
    losses = [e.loss for e in events if isinstance(e, StepLogged)]
    return throughput, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--task", default="digits")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--log-interval", type=int, default=1,
                        help="both read the loss every this many steps (a device sync on GPUs)")
    parser.add_argument("--with-checkpoints", action="store_true",
                        help="let the engine save its epoch-end checkpoints (the bare loop saves "
                        "none, so the work is no longer identical): what checkpointing costs")
    args = parser.parse_args()
    if not args.with_checkpoints:
        Engine._save_checkpoint = lambda self, trainer: None  # identical work: no saves
    config = RunConfig(task=args.task, epochs=args.epochs, log_interval=args.log_interval,
                       device=args.device, tensorboard=False, checkpoint_every_minutes=0)
    print(f"device {choose_placement(config.device, False).device}, task {config.task}, "
          f"{config.epochs} epochs, loss read every {config.log_interval} steps, engine "
          f"checkpoints {'on' if args.with_checkpoints else 'off'}")
    runs = {"bare": lambda: bare_loop(config),
            "engine": lambda: engine_run(config),
            "bare on a thread": lambda: on_a_thread(bare_loop, config),
            "engine on a thread": lambda: engine_run(config, thread=True)}
    speeds: dict[str, list[float]] = {name: [] for name in runs}
    ratios, thread_ratios = [], []
    for repeat in range(args.repeats):
        # Alternate the order, so drift in the machine's speed falls on all three.
        order = list(runs) if repeat % 2 == 0 else list(reversed(runs))
        losses = {}
        for name in order:
            per_epoch, losses[name] = runs[name]()
            speeds[name].append(statistics.median(per_epoch))
        if repeat == 0:
            bare, engine = losses["bare"], losses["engine"]
            if len(bare) != len(engine):
                print(f"same losses for the same seed: False ({len(bare)} logged steps bare, "
                      f"{len(engine)} engine)")
            else:
                worst = max(abs(a - b) / max(1.0, abs(a))
                            for a, b in zip(bare, engine, strict=True))
                # cuDNN's fastest kernels are not bit-reproducible: allow float noise there.
                print(f"same losses for the same seed: {worst <= 1e-5} ({len(bare)} logged "
                      f"steps, largest relative difference {worst:.1e})")
        now = {name: values[-1] for name, values in speeds.items()}
        ratios.append(now["engine"] / now["bare"])
        thread_ratios.append(now["engine on a thread"] / now["bare on a thread"])
        print(f"repeat {repeat + 1}: " + ", ".join(f"{name} {speed:,.0f}"
                                                   for name, speed in now.items())
              + f" samples/s; engine/bare {ratios[-1]:.3f}, "
              f"on a thread {thread_ratios[-1]:.3f}")
    print(f"engine/bare throughput ratio: median {statistics.median(ratios):.3f} over "
          f"{args.repeats} repetitions (target >= 0.98)")
    threaded = statistics.median(speeds["bare on a thread"]) / statistics.median(speeds["bare"])
    print(f"engine/bare, both on a thread (Engine.start()): median "
          f"{statistics.median(thread_ratios):.3f}; bare on a thread / bare: {threaded:.3f}")


if __name__ == "__main__":
    main()
