"""Autotune: short timed trials of num_workers, then batch size, inside the live run.

The trainer's whole state (model, optimizer, scheduler, scaler, RNG, position in the epoch) is
copied aside first and put back afterwards, so training continues as if the trials never ran.
"""

from __future__ import annotations

import gc
import itertools
import time
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Sampler

from .checkpoint import StagingBuffers
from .config import max_num_workers
from .events import TuneReport
from .loop import Trainer
from .state import capture, restore

WARMUP_STEPS = 3
MEASURED_STEPS = 10
BATCH_CAP = 4096


def worker_options(cores: int) -> list[int]:
    """0, 1, 2, 4, ... up to the core count (and the workers bound)."""
    options, workers = [0], 1
    while workers <= min(cores, max_num_workers()):
        options.append(workers)
        workers *= 2
    return options


def batch_options(current: int, train_size: int) -> list[int]:
    """Powers of two above the current batch size, up to the cap or the training set."""
    cap = min(BATCH_CAP, train_size)
    size = 1 << current.bit_length()  # next power of two above current
    options = []
    while size <= cap:
        options.append(size)
        size *= 2
    return options


class _Cycle(Sampler[int]):
    """The epoch's order from the current position, wrapping around: trials never run dry."""

    def __init__(self, indices: list[int]) -> None:
        self.indices = indices

    def __iter__(self):
        return itertools.cycle(self.indices)


def autotune(trainer: Trainer, budget_seconds: float, cores: int,
             log: Callable[[str], None]) -> TuneReport:
    started = time.monotonic()
    saved = StagingBuffers().copy_and_sync(capture(trainer))
    original = (trainer.batch_size, trainer.num_workers)
    order = trainer.sampler.share()
    indices = order[trainer.progress.position:] + order[:trainer.progress.position]
    rows: list[tuple[int, int, float, str]] = []

    deadline = started + budget_seconds

    def over_budget() -> bool:
        return time.monotonic() > deadline

    trainer.restart_loader()  # the epoch's own loader resumes after the trials
    try:
        for workers in worker_options(cores):
            if over_budget():
                log(f"autotune: time budget of {budget_seconds:.0f}s used up")
                break
            speed = _trial(trainer, indices, original[0], workers, deadline)
            rows.append((original[0], workers, speed, ""))
            log(f"autotune: batch {original[0]}, {workers} workers: {speed:,.0f} samples/s")
        best_workers = max(rows, key=lambda row: row[2])[1] if rows else original[1]
        for batch_size in batch_options(original[0], len(indices)):
            # Even a cut-short trial runs its warm-up and two steps: skip one that cannot fit.
            speed = rows[-1][2] if rows else 0.0
            least = (WARMUP_STEPS + 2) * batch_size / speed if speed else 0.0
            if over_budget() or time.monotonic() + least > deadline:
                log(f"autotune: time budget of {budget_seconds:.0f}s used up before batch "
                    f"{batch_size}")
                break
            try:
                speed = _trial(trainer, indices, batch_size, best_workers, deadline)
            except torch.OutOfMemoryError:
                _free(trainer)
                rows.append((batch_size, best_workers, 0.0, "out of memory"))
                log(f"autotune: batch {batch_size} runs out of memory; stopping there")
                break
            rows.append((batch_size, best_workers, speed, ""))
            log(f"autotune: batch {batch_size}, {best_workers} workers: {speed:,.0f} samples/s")
    finally:
        trainer.close_loaders()
        trainer.batch_size, trainer.num_workers = original
        restore(trainer, saved)
    best = max(rows, key=lambda row: row[2]) if rows else (*original, 0.0, "")
    return TuneReport(rows=tuple(rows), best_batch_size=best[0], best_num_workers=best[1],
                      seconds=time.monotonic() - started)


def _trial(trainer: Trainer, indices: list[int], batch_size: int, workers: int,
           deadline: float = float("inf")) -> float:
    """Samples per second over MEASURED_STEPS real training steps after a warm-up; fewer (but
    at least two) when the deadline comes first, so slow trials cannot overrun the budget."""
    loader = DataLoader(trainer.task.train_dataset, batch_size=batch_size,
                        sampler=_Cycle(indices), num_workers=workers,
                        pin_memory=trainer.placement.is_cuda,
                        collate_fn=trainer.task.collate_fn)
    batches = iter(loader)
    try:
        trainer.model.train()
        for step in range(WARMUP_STEPS + MEASURED_STEPS):
            if step == WARMUP_STEPS:
                _sync(trainer)
                start = time.perf_counter()
                samples = 0
            if step >= WARMUP_STEPS + 2 and time.monotonic() > deadline:
                break
            batch = next(batches)
            trainer.train_step(batch)
            if step >= WARMUP_STEPS:
                samples += trainer.samples_in(batch)
        _sync(trainer)
        return samples / (time.perf_counter() - start)
    finally:
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def _sync(trainer: Trainer) -> None:
    if trainer.placement.is_cuda:
        torch.cuda.synchronize(trainer.device)


def _free(trainer: Trainer) -> None:
    trainer.optimizer.zero_grad(set_to_none=True)
    gc.collect()
    if trainer.placement.is_cuda:
        torch.cuda.empty_cache()
