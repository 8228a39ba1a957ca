"""The bottleneck advisor: from a rolling window of data-wait fraction and GPU utilisation, one
plain line saying what limits training and what to try."""

from __future__ import annotations

import os
from collections import deque

from .events import Advice

INPUT_BOUND_WAIT = 0.25  # a quarter of step time waiting for the DataLoader
GPU_BUSY = 0.5  # below this, a GPU with no data wait is mostly idle between small kernels
MIN_SAMPLES = 5


class Advisor:
    def __init__(self, window: int = 20, cores: int | None = None) -> None:
        self._waits: deque[float] = deque(maxlen=window)
        self._gpu: deque[float] = deque(maxlen=window)
        self._last_verdict = ""
        self.cores = cores or os.cpu_count() or 1

    def reset(self) -> None:
        """Settings changed: judge the new ones afresh."""
        self._waits.clear()
        self._gpu.clear()
        self._last_verdict = ""

    def observe(self, data_wait: float, gpu_utilisation: float | None, *, batch_size: int,
                num_workers: int, device: str) -> Advice | None:
        """Record one logged interval; return an Advice when the verdict changes."""
        self._waits.append(data_wait)
        if gpu_utilisation is not None:
            self._gpu.append(gpu_utilisation)
        if len(self._waits) < MIN_SAMPLES:
            return None
        advice = self._judge(batch_size, num_workers, device)
        if advice.verdict == self._last_verdict:
            return None
        self._last_verdict = advice.verdict
        return advice

    def _judge(self, batch_size: int, num_workers: int, device: str) -> Advice:
        wait = sum(self._waits) / len(self._waits)
        gpu = sum(self._gpu) / len(self._gpu) if self._gpu else None
        if wait >= INPUT_BOUND_WAIT:
            more = min(max(1, num_workers * 2), self.cores)
            hint = (f"raise num_workers (now {num_workers}; try {more}, this machine has "
                    f"{self.cores} cores)" if num_workers < self.cores else
                    f"workers already match the {self.cores} cores: make loading cheaper "
                    "(pre-decoded data, lighter transforms)")
            return Advice(verdict="input-bound",
                          message=f"input-bound: {wait:.0%} of step time waits for data; {hint}")
        if gpu is not None and gpu < GPU_BUSY:
            return Advice(verdict="gpu-underused",
                          message=f"GPU underused: {gpu:.0%} busy with only {wait:.0%} data "
                          f"wait; try a larger batch size (now {batch_size})")
        busy = f", GPU {gpu:.0%} busy" if gpu is not None else ""
        return Advice(verdict="compute-bound",
                      message=f"compute-bound: only {wait:.0%} data wait{busy}; {device} is the "
                      "limit (a larger batch or --amp may help, more workers will not)")
