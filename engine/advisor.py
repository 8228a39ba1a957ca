"""The bottleneck advisor: from the data-wait share of step time (and GPU utilisation) over the
last WINDOW_SECONDS of training, one plain line saying what limits training and what to try.
It speaks once the logged intervals it has seen span SETTLE_SECONDS, not after a count of
them, so short epochs get advice too; the verdict itself comes from `bottleneck`, as autotune's
does."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable

from .bottleneck import GPU_UNDERUSED, INPUT_BOUND, Bottleneck, judge, more_workers_to_try
from .events import Advice

SETTLE_SECONDS = 3.0  # of training with the same settings before the first verdict
WINDOW_SECONDS = 30.0  # judge on this much recent training
MIN_OBSERVATIONS = 2  # one logged interval alone may be all start-up


class Advisor:
    def __init__(self, cores: int | None = None, *, settle_seconds: float = SETTLE_SECONDS,
                 window_seconds: float = WINDOW_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cores = cores or os.cpu_count() or 1
        self.settle_seconds = settle_seconds
        self.window_seconds = window_seconds
        self._clock = clock
        self._seen: deque[tuple[float, float, float | None]] = deque()  # (when, wait, gpu)
        self._first = 0.0
        self._last_verdict = ""
        self._more_workers_timed_no_faster = False  # autotune's finding for these settings

    def reset(self) -> None:
        """Settings changed: judge the new ones afresh."""
        self._seen.clear()
        self._last_verdict = ""
        self._more_workers_timed_no_faster = False

    def observe(self, data_wait: float, gpu_utilisation: float | None, *, batch_size: int,
                num_workers: int, device: str) -> Advice | None:
        """Record one logged interval; return an Advice when the verdict changes."""
        now = self._clock()
        if not self._seen:
            self._first = now
        self._seen.append((now, data_wait, gpu_utilisation))
        while len(self._seen) > MIN_OBSERVATIONS and self._seen[0][0] < now - self.window_seconds:
            self._seen.popleft()
        bottleneck = self.judgement()
        if bottleneck is None or bottleneck.verdict == self._last_verdict:
            return None
        self._last_verdict = bottleneck.verdict
        return self.advice(bottleneck, batch_size=batch_size, num_workers=num_workers,
                           device=device)

    def judgement(self) -> Bottleneck | None:
        """The current verdict, or None before SETTLE_SECONDS of training have been seen."""
        if len(self._seen) < MIN_OBSERVATIONS or \
                self._seen[-1][0] - self._first < self.settle_seconds:
            return None
        waits = [wait for _, wait, _ in self._seen]
        gpus = [gpu for _, _, gpu in self._seen if gpu is not None]
        return judge(sum(waits) / len(waits), sum(gpus) / len(gpus) if gpus else None)

    def adopt(self, bottleneck: Bottleneck, *, more_workers_timed_no_faster: bool = False,
              batch_size: int, num_workers: int, device: str) -> Advice | None:
        """Take autotune's verdict and findings for the current settings, so the advisor never
        says "try more workers" after autotune timed them no faster; an Advice when what is to
        be said changed."""
        if bottleneck.verdict == self._last_verdict and \
                more_workers_timed_no_faster == self._more_workers_timed_no_faster:
            return None
        self._last_verdict = bottleneck.verdict
        self._more_workers_timed_no_faster = more_workers_timed_no_faster
        return self.advice(bottleneck, batch_size=batch_size, num_workers=num_workers,
                           device=device)

    def advice(self, bottleneck: Bottleneck, *, batch_size: int, num_workers: int,
               device: str) -> Advice:
        wait, gpu = bottleneck.data_wait_fraction, bottleneck.gpu_utilisation
        if bottleneck.verdict == INPUT_BOUND:
            more = more_workers_to_try(num_workers, self.cores)
            cheaper = "make loading cheaper (pre-decoded data, lighter transforms)"
            if self._more_workers_timed_no_faster:
                hint = f"autotune timed more workers no faster: {cheaper}"
            elif more is not None:
                hint = (f"raise num_workers (now {num_workers}; try {more}, this machine has "
                        f"{self.cores} cores)")
            else:
                hint = f"workers already match the {self.cores} cores: {cheaper}"
            return Advice(verdict=INPUT_BOUND,
                          message=f"input-bound: {wait:.0%} of step time waits for data; {hint}")
        if bottleneck.verdict == GPU_UNDERUSED:
            return Advice(verdict=GPU_UNDERUSED,
                          message=f"GPU underused: {gpu:.0%} busy with only {wait:.0%} data "
                          f"wait; try a larger batch size (now {batch_size})")
        busy = f", GPU {gpu:.0%} busy" if gpu is not None else ""
        return Advice(verdict=bottleneck.verdict,
                      message=f"compute-bound: only {wait:.0%} data wait{busy}; {device} is the "
                      "limit (a larger batch or --amp may help, more workers will not)")
