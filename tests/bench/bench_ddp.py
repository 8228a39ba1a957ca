"""Data parallel: N ranks against 1 rank at the same per-rank batch, through the real
`ctui train --headless --nproc-per-node N`, and what agreeing on commands costs.

    python tests/bench/bench_ddp.py [--repeats 3] [--ranks 2] [--task digits] [--epochs 2]

Throughput is the last epoch's samples/s (train time only: process start-up and evaluation are
left out), median of the repetitions, the two orders alternating. Scaling efficiency is
N-rank throughput / (N x 1-rank throughput): 1.0 is perfect. On a CPU-only machine the ranks
share the cores that one process would use alone (each rank gets cores/N threads), so expect
well under 1 there; on N GPUs the same command measures the real thing.

The agreement (engine/distributed/group.py) is one all-reduce of a short float64 vector per
--log-interval steps, carrying the interval's loss and timings (needed anyway) and up to 4
commands. Its cost is timed in a 2-rank gloo group and shown against a training step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def throughput(ranks: int, args: argparse.Namespace, folder: Path, env: dict) -> float:
    run_dir = folder / f"run-{ranks}-{time.monotonic_ns()}"
    command = [sys.executable, "-m", "ctui.tui.main", "train", "--headless",
               "--nproc-per-node", str(ranks), "--task", args.task, "--epochs",
               str(args.epochs), "--batch-size", str(args.batch_size), "--no-tensorboard",
               "--checkpoint-every-minutes", "0", "--run-dir", str(run_dir)]
    subprocess.run(command, check=True, capture_output=True, cwd=REPO,
                   env={**os.environ, "CTUI_RUNS": str(folder), **env})
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["type"] == "epoch"]
    return epochs[-1]["samples_per_second"]


def agreement_cost() -> None:
    """Time RankGroup.agree() in a 2-rank gloo group (elastic launcher, as a job does)."""
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=2, run_id="bench",
                          rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0)
    results = elastic_launch(config, _time_agreement)()
    agree, step = results[0]
    print(f"agreement: {agree * 1e6:,.0f} us per all-reduce (median of 200); a DDP step of "
          f"the digits Net at batch 64: {step * 1e3:,.1f} ms; at --log-interval 10 the "
          f"agreement adds {agree / (10 * step):.2%} to training time")


def _time_agreement() -> tuple[float, float]:
    import torch

    from ctui.engine.distributed.group import RankGroup
    from ctui.engine.tasks.models import Net

    torch.set_num_threads(1)
    group = RankGroup.from_environment("cpu")
    times = []
    for _ in range(200):
        start = time.perf_counter()
        group.agree(1.0, 64, 0.01, 0.1)
        times.append(time.perf_counter() - start)
    model = group.wrap(Net())
    optimizer = torch.optim.Adadelta(model.parameters())
    data, target = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    steps = []
    for _ in range(30):
        start = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(data), target).backward()
        optimizer.step()
        steps.append(time.perf_counter() - start)
    group.close()
    return statistics.median(times), statistics.median(steps[5:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--task", default="digits")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPU cores, python {sys.version.split()[0]}")
    # The ranks of a CPU job get cores/N threads each; "1 rank, same threads" is one process
    # with a rank's share, so the comparison shows what splitting the work costs apart from
    # what the thread count alone does (on a busy machine, fewer threads can be faster).
    threads = str(max(1, (os.cpu_count() or 1) // args.ranks))
    variants = {"1 rank": (1, {}), f"1 rank, {threads} thread(s)": (1, {"OMP_NUM_THREADS":
                                                                         threads}),
                f"{args.ranks} ranks": (args.ranks, {})}
    results: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):  # rotate which goes first
            names = list(variants)
            names = names[repeat % len(names):] + names[:repeat % len(names)]
            for name in names:
                ranks, env = variants[name]
                results[name].append(throughput(ranks, args, Path(folder), env))
    medians = {name: statistics.median(values) for name, values in results.items()}
    for name, value in medians.items():
        print(f"{name}: {value:,.0f} samples/s (batch {args.batch_size} per rank, median of "
              f"{args.repeats})")
    several = medians[f"{args.ranks} ranks"]
    for name in list(variants)[:2]:
        print(f"{args.ranks} ranks vs {name}: speed-up {several / medians[name]:.2f}x, "
              f"scaling efficiency {several / (args.ranks * medians[name]):.0%}")
    agreement_cost()


if __name__ == "__main__":
    main()
