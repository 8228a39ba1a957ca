"""How busy the training GPU is, for the advisor: the telemetry's NVML reader, asked about
the one GPU this process trains on, at most once a second."""

from __future__ import annotations

import time

import torch

from .telemetry import GpuSampler

READ_EVERY_SECONDS = 1.0  # NVML itself averages utilisation over 1/6 s to 1 s


class GpuUtilisation:
    """Reads one CUDA device's utilisation; None when there is no GPU or NVML cannot say."""

    def __init__(self, device: torch.device, sampler: GpuSampler | None = None) -> None:
        self._sampler: GpuSampler | None = None
        self.index: int | None = None  # the training GPU's NVML index
        self._last: tuple[float, float | None] = (float("-inf"), None)  # (when, value)
        if device.type != "cuda":
            return
        sampler = sampler or GpuSampler()
        if not sampler.available:
            return
        cuda_index = device.index if device.index is not None else torch.cuda.current_device()
        uuid = str(torch.cuda.get_device_properties(cuda_index).uuid)
        found = sampler.index_of(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
        self.index = cuda_index if found is None else found
        self._sampler = sampler

    def read(self) -> float | None:
        """At most one NVML call a second: the training thread calls this at each log line."""
        if self._sampler is None:
            return None
        now = time.monotonic()
        if now - self._last[0] < READ_EVERY_SECONDS:
            return self._last[1]
        value = self._sampler.utilisation(self.index)
        self._last = (now, value)
        return value
