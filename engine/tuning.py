"""Autotune: timed trials of num_workers, then batch size, inside the live run.

Each setting is timed several times, interleaved with the others, until the fastest is apart
from the rest by more than the spread of the repeats and at least MIN_GAIN (or the time budget
ends). A difference within that noise keeps the current setting. Which worker counts are tried
follows the bottleneck verdict the advisor shows (`bottleneck`), so the two cannot contradict
each other.

The trainer's whole state (model, optimizer, scheduler, scaler, RNG, position in the epoch) is
copied aside first and put back afterwards, so training continues as if the trials never ran.
"""

from __future__ import annotations

import gc
import itertools
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Sampler

from .bottleneck import Bottleneck, judge, worker_candidates, worker_options
from .checkpoint import StagingBuffers
from .events import TuneReport
from .loop import Trainer
from .state import capture, restore

__all__ = ["autotune", "batch_options", "choose", "search", "worker_options"]

WARMUP_STEPS = 2  # worker start-up and first allocations; _rate discounts the queue's fill
MIN_MEASURED_STEPS = 3
MIN_REPEATS = 3  # a setting is apart from another only when both were timed this often
MAX_REPEATS = 5
MIN_GAIN = 0.05  # a smaller gain is not worth a change: short trials err by about this much
MIN_TRIAL_SECONDS = 0.25
MAX_TRIAL_SECONDS = 2.0
BATCH_CAP = 4096
BATCH_SHARE = 4  # never offer a batch above a quarter of the training set: too few steps
OUT_OF_MEMORY = "out of memory"


def batch_options(current: int, train_size: int) -> list[int]:
    """Powers of two above the current batch size, up to the cap or a quarter of the
    training set."""
    cap = min(BATCH_CAP, train_size // BATCH_SHARE)
    size = 1 << current.bit_length()  # next power of two above current
    options = []
    while size <= cap:
        options.append(size)
        size *= 2
    return options


@dataclass(frozen=True)
class Measurement:
    samples_per_second: float
    data_wait_fraction: float
    step_seconds: float = 0.0  # the mean step's wall time: how long the next trial will take


@dataclass
class Candidate:
    """One setting and its repeated timings."""

    batch_size: int
    num_workers: int
    speeds: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    note: str = ""  # "out of memory": no timing

    @property
    def key(self) -> tuple[int, int]:
        return self.batch_size, self.num_workers

    @property
    def trials(self) -> int:
        return len(self.speeds)

    @property
    def median(self) -> float:
        return statistics.median(self.speeds) if self.speeds else 0.0

    @property
    def low(self) -> float:
        return min(self.speeds, default=0.0)

    @property
    def high(self) -> float:
        return max(self.speeds, default=0.0)

    def add(self, measured: Measurement) -> None:
        self.speeds.append(measured.samples_per_second)
        self.waits.append(measured.data_wait_fraction)


def separated(faster: Candidate, slower: Candidate) -> bool:
    """Apart beyond the noise: both timed MIN_REPEATS times, every timing of the faster above
    every timing of the slower, and the medians at least MIN_GAIN apart."""
    return (faster.trials >= MIN_REPEATS and slower.trials >= MIN_REPEATS
            and faster.low > slower.high and faster.median >= slower.median * (1 + MIN_GAIN))


@dataclass(frozen=True)
class Choice:
    candidate: Candidate
    within_noise: bool  # the fastest was not apart from every other setting


def choose(candidates: list[Candidate], current: Candidate,
           distance: Callable[[Candidate], float]) -> Choice:
    """The fastest when it is apart from every other setting; otherwise, of the settings within
    noise of the fastest, the current one if it is among them, else the one nearest to it."""
    timed = [c for c in candidates if c.trials and not c.note]
    if not timed:
        return Choice(current, True)
    best = max(timed, key=lambda c: c.median)
    tied = [c for c in timed if c is best or not separated(best, c)]
    if len(tied) == 1:
        return Choice(best, False)
    if current in tied:
        return Choice(current, True)
    return Choice(min(tied, key=lambda c: (distance(c), -c.median)), True)


Measure = Callable[[int, int, float, float], Measurement | None]


def search(current: tuple[int, int], train_size: int, cores: int, budget_seconds: float,
           measure: Measure, log: Callable[[str], None], *,
           bottleneck: Bottleneck | None = None,
           clock: Callable[[], float] = time.monotonic) -> TuneReport:
    """Time worker counts at the current batch size, then larger batch sizes at the chosen
    workers. measure(batch_size, num_workers, seconds, deadline) times one trial (None: out of
    memory). bottleneck: the advisor's verdict for the current settings, if it has one; else
    the first trial's data wait decides."""
    started = clock()
    deadline = started + budget_seconds
    batch_sizes = batch_options(current[0], train_size)
    planned = len(worker_options(cores)) + 1 + len(batch_sizes)
    trial_seconds = min(MAX_TRIAL_SECONDS, max(MIN_TRIAL_SECONDS,
                                               budget_seconds / (planned * MIN_REPEATS * 2)))
    race = _Race(measure, log, clock, trial_seconds)

    baseline = Candidate(*current)
    race.trial(baseline, deadline, always=True)
    if bottleneck is None:
        wait = statistics.median(baseline.waits) if baseline.waits else 0.0
        bottleneck = judge(wait)
        source = "in the first trial"
    else:
        source = "in training"
    workers = [baseline] + [Candidate(current[0], w) for w in
                            worker_candidates(bottleneck, current[1], cores) if w != current[1]]
    stage_end = started + budget_seconds * len(workers) / (len(workers) + len(batch_sizes))
    race.run(workers, stage_end)
    picked = choose(workers, baseline, lambda c: abs(c.num_workers - current[1]))
    alone = "more cannot help" if not bottleneck.more_workers_can_help else \
        f"no more on {cores} cores"
    summary = [f"{bottleneck.verdict} ({bottleneck.data_wait_fraction:.0%} data wait "
               f"{source}): " + _said(picked, workers, _workers(picked.candidate.num_workers),
                                      race.cut_short, alone)]

    start = picked.candidate
    batches = [start] + [Candidate(size, start.num_workers) for size in batch_sizes]
    if len(batches) > 1:
        race.cut_short = False
        race.run(batches, deadline)
        picked = choose(batches, start, lambda c: abs(math.log2(c.batch_size / current[0])))
        summary.append(_said(picked, batches, f"batch size {picked.candidate.batch_size}",
                             race.cut_short, "nothing else to time"))
    elif current[0] * 2 > train_size // BATCH_SHARE:
        summary.append(f"no larger batch tried (above a quarter of the {train_size} samples)")

    rows = [c for c in workers + batches[1:] if c.trials or c.note == OUT_OF_MEMORY]
    best = picked.candidate if picked.candidate.trials else baseline
    return TuneReport(
        rows=tuple((c.batch_size, c.num_workers, c.median, c.note) for c in rows),
        spreads=tuple((c.low, c.high, c.trials) for c in rows),
        best_batch_size=best.batch_size, best_num_workers=best.num_workers,
        verdict=bottleneck.verdict, data_wait_fraction=bottleneck.data_wait_fraction,
        summary="; ".join(summary), seconds=clock() - started)


def _workers(count: int) -> str:
    return f"{count} worker" if count == 1 else f"{count} workers"


def _said(choice: Choice, candidates: list[Candidate], setting: str, cut_short: bool,
          alone: str) -> str:
    """Why this setting: apart beyond the noise, within it, or nothing else timed."""
    if len(candidates) < 2:
        return f"{setting} ({alone})"
    if len([c for c in candidates if c.trials]) < 2:
        return f"{setting} (the time budget ended before another was timed)"
    if not choice.within_noise:
        return f"{setting}: faster beyond the noise"
    why = "the time budget ended before the timings were apart" if cut_short else \
        "differences within the noise"
    return f"{setting} ({why})"


class _Race:
    """Times candidates in rounds, one trial each per round, until the fastest is apart from
    the rest, MAX_REPEATS, or the deadline."""

    def __init__(self, measure: Measure, log: Callable[[str], None],
                 clock: Callable[[], float], trial_seconds: float) -> None:
        self.measure, self.log, self.clock = measure, log, clock
        self.trial_seconds = trial_seconds
        self.cut_short = False
        self.seconds_per_sample: dict[tuple[int, int], float] = {}  # a step's, per setting

    def run(self, candidates: list[Candidate], deadline: float) -> None:
        while True:
            timed = [c for c in candidates if not c.note]
            if len(timed) < 2:
                return  # nothing to compare with
            best = max((c for c in timed if c.trials), key=lambda c: c.median, default=None)
            todo = [c for c in timed if c.trials < MIN_REPEATS]
            if not todo and best is not None:
                todo = [c for c in timed if c.trials < MAX_REPEATS and
                        any(not separated(best, o) for o in timed if o is not best) and
                        (c is best or not separated(best, c))]
            if not todo:
                return
            for candidate in sorted(todo, key=lambda c: c.trials):
                if candidate.note:
                    continue  # a smaller batch ran out of memory this round
                if not self.trial(candidate, deadline):
                    self.cut_short = True
                    return
                if candidate.note:
                    for other in candidates:
                        if other.batch_size > candidate.batch_size:
                            other.note = other.note or "skipped"

    def trial(self, candidate: Candidate, deadline: float, always: bool = False) -> bool:
        """One timing; False when it does not fit before the deadline (unless always)."""
        # Even a trial cut short runs its warm-up and two steps: skip one that cannot fit.
        per_sample = self.seconds_per_sample.get(
            candidate.key, max(self.seconds_per_sample.values(), default=0.0))
        least = (WARMUP_STEPS + 2) * candidate.batch_size * per_sample
        if not always and self.clock() + max(least, self.trial_seconds / 2) > deadline:
            return False
        measured = self.measure(candidate.batch_size, candidate.num_workers,
                                self.trial_seconds, deadline)
        if measured is None:
            candidate.note = OUT_OF_MEMORY
            self.log(f"autotune: batch {candidate.batch_size} runs out of memory; stopping "
                     "there")
            return True
        candidate.add(measured)
        self.seconds_per_sample[candidate.key] = measured.step_seconds / candidate.batch_size
        self.log(f"autotune: batch {candidate.batch_size}, {candidate.num_workers} workers: "
                 f"{measured.samples_per_second:,.0f} samples/s "
                 f"({measured.data_wait_fraction:.0%} data wait)")
        return True


class _Cycle(Sampler[int]):
    """The epoch's order from the current position, wrapping around: trials never run dry."""

    def __init__(self, indices: list[int]) -> None:
        self.indices = indices

    def __iter__(self):
        return itertools.cycle(self.indices)


def autotune(trainer: Trainer, budget_seconds: float, cores: int,
             log: Callable[[str], None], bottleneck: Bottleneck | None = None) -> TuneReport:
    """search() with real training steps of this trainer, which is left exactly as it was."""
    saved = StagingBuffers().copy_and_sync(capture(trainer))
    original = (trainer.batch_size, trainer.num_workers)
    order = trainer.sampler.share()
    indices = order[trainer.progress.position:] + order[:trainer.progress.position]

    def measure(batch_size: int, workers: int, seconds: float,
                deadline: float) -> Measurement | None:
        try:
            return _trial(trainer, indices, batch_size, workers, seconds, deadline)
        except torch.OutOfMemoryError:
            _free(trainer)
            return None

    trainer.restart_loader()  # the epoch's own loader resumes after the trials
    try:
        return search(original, len(indices), cores, budget_seconds, measure, log,
                      bottleneck=bottleneck)
    finally:
        trainer.close_loaders()
        trainer.batch_size, trainer.num_workers = original
        restore(trainer, saved)


def _trial(trainer: Trainer, indices: list[int], batch_size: int, workers: int,
           seconds: float = 1.0, deadline: float = float("inf")) -> Measurement:
    """Samples per second of real training steps after a warm-up, for at least `seconds` and
    MIN_MEASURED_STEPS steps (at least two when the deadline comes first)."""
    loader = DataLoader(trainer.task.train_dataset, batch_size=batch_size,
                        sampler=_Cycle(indices), num_workers=workers,
                        pin_memory=trainer.placement.is_cuda,
                        collate_fn=trainer.task.collate_fn)
    batches = iter(loader)
    try:
        trainer.model.train()
        for _ in range(WARMUP_STEPS):
            trainer.train_step(next(batches))
        _sync(trainer)
        start = time.perf_counter()
        fetched: list[tuple[float, float, int]] = []  # (wait, when it came, samples before)
        samples = 0
        while True:
            asked = time.perf_counter()
            batch = next(batches)
            came = time.perf_counter()
            fetched.append((came - asked, came, samples))
            trainer.train_step(batch)
            samples += trainer.samples_in(batch)
            now = time.perf_counter()
            steps = len(fetched)
            if steps >= 2 and time.monotonic() > deadline:
                break
            if steps >= MIN_MEASURED_STEPS and now - start >= seconds:
                break
        _sync(trainer)
        end = time.perf_counter()
        wait = sum(w for w, _, _ in fetched) / (end - start)
        return Measurement(_rate(fetched, samples, start, end), wait,
                           (end - start) / len(fetched))
    finally:
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def _rate(fetched: list[tuple[float, float, int]], samples: int, start: float,
          end: float) -> float:
    """Samples per second. Workers deliver in bursts, and the queue holds up to two batches
    per worker: counted from one wait for data to another, the window holds whole bursts and
    the same (empty) queue at both ends, so a full queue at the start cannot flatter it."""
    spent = (end - start) / len(fetched)
    blocked = [(when, before) for wait, when, before in fetched
               if wait > max(0.001, 0.1 * spent)]
    if len(blocked) >= 3 and blocked[-1][0] - blocked[0][0] >= (end - start) / 2:
        (first, before_first), (last, before_last) = blocked[0], blocked[-1]
        return (before_last - before_first) / (last - first)
    return samples / (end - start)


def _sync(trainer: Trainer) -> None:
    if trainer.placement.is_cuda:
        torch.cuda.synchronize(trainer.device)


def _free(trainer: Trainer) -> None:
    trainer.optimizer.zero_grad(set_to_none=True)
    gc.collect()
    if trainer.placement.is_cuda:
        torch.cuda.empty_cache()
