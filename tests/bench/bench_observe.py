"""An unmodified training script observed by ctui (`ctui run -- python train.py`'s start-up
hook) against the same script bare. Target: throughput ratio >= 0.99.

    python tests/bench/bench_observe.py [--repeats 9] [--epochs 5] [--batch-size 64] [--size 40000]
    python tests/bench/bench_observe.py --under-run      # observed = the whole `ctui run`

The script (written to a temporary folder) trains a two-layer MNIST network (small steps, so
the observer's per-batch cost weighs the most) on random 28x28 images, times its own epochs and
prints samples/s; each repetition runs it bare and observed, in alternating order (so drift in
the machine's speed falls on both), and takes the median over the epochs after the first
(warm-up). Printed: each repetition's pair and ratio, the ratio of the medians, the same for
each run's fastest epoch (the least disturbed by other work on a shared machine), and the
observer's cost per batch measured alone (a loader of 1-sample batches iterated with and
without the hook in this process), which bounds its cost for any script: cost per batch / time
per batch. With --under-run the observed side is the whole of `ctui run -- python train.py`: a
run host, the pseudo-terminal, the supervisor's process sampling, the reader of the script's
own TensorBoard files, and the hook; its SPEED lines are read back from the run's output.log.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ctui.engine.observe import ENV_DIR, RecordFollower, child_environment

SCRIPT = '''
import sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

class Net(nn.Module):  # a first MNIST network: small steps, so the observer's share is large
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 256)
        self.dropout = nn.Dropout(0.2)
        self.fc2 = nn.Linear(256, 10)

    def forward(self, x):
        x = self.dropout(F.relu(self.fc1(torch.flatten(x, 1))))
        return F.log_softmax(self.fc2(x), dim=1)

epochs, batch_size, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(1)
data = TensorDataset(torch.randn(size, 1, 28, 28), torch.randint(0, 10, (size,)))
loader = DataLoader(data, batch_size=batch_size, shuffle=True)
model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for epoch in range(epochs):
    start, cpu = time.perf_counter(), time.process_time()
    for x, y in loader:
        optimizer.zero_grad()
        loss = F.nll_loss(model(x), y)
        loss.backward()
        optimizer.step()
    print("SPEED", size / (time.perf_counter() - start), loss.item(),
          size / (time.process_time() - cpu), flush=True)
'''


def run(script: Path, args: list[str], env: dict[str, str]) -> tuple[list[float], list[str]]:
    out = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True,
                         text=True, check=True).stdout
    return speeds_in(out)


CPU_SPEEDS: dict[str, list[float]] = {"bare": [], "observed": []}  # samples per CPU second


def speeds_in(output: str) -> tuple[list[float], list[str]]:
    """Samples per wall second of each epoch, and the losses; samples per second of the
    process's CPU time go to CPU_SPEEDS (main() files them under bare or observed): CPU time
    is what the observer adds, and other people's work on a shared machine changes it far less
    than the wall time."""
    lines = [line.split() for line in output.splitlines() if line.startswith("SPEED")]
    CPU_SPEEDS.setdefault("last", [])[:] = [float(line[3]) for line in lines]
    return [float(line[1]) for line in lines], [line[2] for line in lines]


def run_under_ctui(script: Path, args: list[str], runs: Path) -> tuple[list[float], list[str],
                                                                       Path]:
    """The script under a real `ctui run` host, to its end: its SPEED lines, and the run folder."""
    from ctui.engine.host import RunClient
    from ctui.engine.program import ProgramSpec, start_program

    spec = ProgramSpec(argv=(sys.executable, str(script), *args), cwd=str(script.parent))
    run_dir = start_program(spec, runs)
    with RunClient.connect(run_dir) as client:
        end = client.wait_for(lambda e: getattr(e, "state", "") in ("finished", "failed",
                                                                     "stopped"), 1800)
    assert end is not None and end.state == "finished", end
    return (*speeds_in((run_dir / "output.log").read_text()), run_dir)


def cost_per_batch(batches: int = 20_000) -> tuple[float, float]:
    """Microseconds per batch of a loader of 1-sample batches, bare and observed, in-process."""
    import torch
    import torch.utils.data.dataloader as module
    from torch.utils.data import DataLoader, TensorDataset

    from ctui.engine.observe import hook

    data = TensorDataset(torch.zeros(batches, 1), torch.zeros(batches))

    def per_batch() -> float:
        loader = DataLoader(data, batch_size=1)
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _batch in loader:
                pass
            best = min(best, time.perf_counter() - start)
        return best / batches * 1e6

    bare = per_batch()
    with tempfile.TemporaryDirectory() as folder:
        hook.install(module, folder)
        try:
            observed = per_batch()
        finally:
            hook.uninstall()
    return bare, observed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=40_000, help="training samples per epoch")
    parser.add_argument("--under-run", action="store_true",
                        help="observed = the script under a whole `ctui run` host")
    args = parser.parse_args()
    script_args = [str(args.epochs), str(args.batch_size), str(args.size)]
    bare_env = {key: value for key, value in os.environ.items() if key != ENV_DIR}
    speeds: dict[str, list[float]] = {"bare": [], "observed": []}
    fastest: dict[str, list[float]] = {"bare": [], "observed": []}
    ratios = []
    with tempfile.TemporaryDirectory() as temp:
        script = Path(temp) / "train.py"
        script.write_text(SCRIPT)
        for repeat in range(args.repeats):
            order = ["bare", "observed"] if repeat % 2 == 0 else ["observed", "bare"]
            now, losses = {}, {}
            for name in order:
                observe = Path(temp) / f"observe-{repeat}"
                env = bare_env
                if name == "observed" and args.under_run:
                    per_epoch, losses[name], run_dir = run_under_ctui(
                        script, script_args, Path(temp) / "runs")
                    observe = run_dir / "observe"
                elif name == "observed":
                    observe.mkdir(mode=0o700)
                    env = child_environment(observe, bare_env)
                if name == "bare" or not args.under_run:
                    per_epoch, losses[name] = run(script, script_args, env)
                now[name] = statistics.median(per_epoch[1:])
                CPU_SPEEDS[name].append(statistics.median(CPU_SPEEDS["last"][1:]))
                fastest[name].append(max(per_epoch[1:]))
                if name == "observed":
                    passes = [r for r in RecordFollower(observe).poll() if r["kind"] == "pass"]
                    assert len(passes) == args.epochs, "the observer saw every epoch"
                speeds[name].append(now[name])
            ratios.append(now["observed"] / now["bare"])
            print(f"repeat {repeat + 1}: bare {now['bare']:,.0f}, observed "
                  f"{now['observed']:,.0f} samples/s; observed/bare {ratios[-1]:.3f}; same "
                  f"losses: {losses['bare'] == losses['observed']}", flush=True)
    median = statistics.median(speeds["observed"]) / statistics.median(speeds["bare"])
    what = "under `ctui run`" if args.under_run else "observed"
    print(f"{what}/bare throughput, ratio of medians: {median:.3f} (median of ratios "
          f"{statistics.median(ratios):.3f}) over {args.repeats} repetitions (target >= 0.99); "
          f"of the runs' fastest epochs: "
          f"{statistics.median(fastest['observed']) / statistics.median(fastest['bare']):.3f}")
    cpu = statistics.median(CPU_SPEEDS["observed"]) / statistics.median(CPU_SPEEDS["bare"])
    print(f"{what}/bare samples per CPU second of the program, ratio of medians: {cpu:.3f} "
          f"(bare {statistics.median(CPU_SPEEDS['bare']):,.0f}, {what} "
          f"{statistics.median(CPU_SPEEDS['observed']):,.0f})")
    bare, observed = cost_per_batch()
    print(f"observer cost per batch, alone: {observed - bare:.2f} us ({bare:.2f} us bare, "
          f"{observed:.2f} us observed, 1-sample batches)")


if __name__ == "__main__":
    main()
