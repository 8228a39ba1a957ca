"""How long a checkpoint blocks the training loop, against a synchronous torch.save of the same
state (serialise + fsync), for a model of at least 50 MB. Median of several repetitions.

    python tests/bench/bench_checkpoint.py [--repeats 5] [--megabytes 64]

Target: blocked / synchronous <= 0.2.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from ctui.engine.checkpoint import CheckpointWriter, SaveResult


def big_state(megabytes: int) -> dict:
    width = 2048
    layers = max(1, megabytes * 2**20 // (width * width * 4))
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])
    optimizer = torch.optim.Adadelta(model.parameters())
    model(torch.randn(2, width)).sum().backward()
    optimizer.step()  # fill the optimizer state, as in a real checkpoint (2 tensors per weight)
    size = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict()}, size


def synchronous_save(state: dict, path: Path) -> float:
    start = time.perf_counter()
    with open(path, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return time.perf_counter() - start


def blocked_time(state: dict, writer: CheckpointWriter, folder: Path, repeat: int) -> float:
    """What the engine's loop pays: the copy off the device and handing it to the writer."""
    start = time.perf_counter()
    copy = writer.stage(state)
    writer.submit(copy, SaveResult(str(folder / f"ckpt-e0001-s{repeat:09d}.pt"), 1, repeat, 0.0))
    blocked = time.perf_counter() - start
    writer.wait()  # not counted: happens while training goes on
    return blocked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--megabytes", type=int, default=64)
    args = parser.parse_args()
    state, size = big_state(args.megabytes)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        writer = CheckpointWriter(folder, keep=2, on_done=lambda result: None)
        sync_times, blocked_times = [], []
        for repeat in range(args.repeats):
            sync_times.append(synchronous_save(state, folder / "sync.pt"))
            blocked_times.append(blocked_time(state, writer, folder, repeat))
    sync, blocked = statistics.median(sync_times), statistics.median(blocked_times)
    print(f"model {size:.0f} MB (+ optimizer state): synchronous torch.save + fsync "
          f"{sync * 1000:.0f} ms, loop blocked {blocked * 1000:.0f} ms")
    print(f"blocked/synchronous ratio: {blocked / sync:.3f} (median of {args.repeats}; "
          "target <= 0.2)")


if __name__ == "__main__":
    main()
