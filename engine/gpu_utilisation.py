"""How busy the training GPU is, read through NVML (nvidia-ml-py) for the advisor."""

from __future__ import annotations

import time

import torch

READ_EVERY_SECONDS = 1.0  # NVML itself averages utilisation over 1/6 s to 1 s


class GpuUtilisation:
    """Reads one CUDA device's utilisation; None when there is no GPU or NVML cannot say."""

    def __init__(self, device: torch.device) -> None:
        self._nvml = None
        self._handle = None
        self._last: tuple[float, float | None] = (float("-inf"), None)  # (when, value)
        if device.type != "cuda":
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            index = device.index if device.index is not None else torch.cuda.current_device()
            self._handle = _handle(pynvml, index)
            self._nvml = pynvml
        except Exception:
            self._handle = None

    def read(self) -> float | None:
        """At most one NVML call a second: the training thread calls this at each log line."""
        if self._handle is None:
            return None
        now = time.monotonic()
        if now - self._last[0] < READ_EVERY_SECONDS:
            return self._last[1]
        try:
            value = self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu / 100.0
        except Exception:
            value = None
        self._last = (now, value)
        return value


def _handle(pynvml, index: int):
    # CUDA and NVML number devices differently under CUDA_VISIBLE_DEVICES: match by UUID.
    try:
        uuid = str(torch.cuda.get_device_properties(index).uuid)
        return pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
    except Exception:
        return pynvml.nvmlDeviceGetHandleByIndex(index)
