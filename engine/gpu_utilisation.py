"""How busy the training GPU is, read through NVML (nvidia-ml-py) for the advisor."""

from __future__ import annotations

import torch


class GpuUtilisation:
    """Reads one CUDA device's utilisation; None when there is no GPU or NVML cannot say."""

    def __init__(self, device: torch.device) -> None:
        self._nvml = None
        self._handle = None
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
        if self._handle is None:
            return None
        try:
            return self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu / 100.0
        except Exception:
            return None


def _handle(pynvml, index: int):
    # CUDA and NVML number devices differently under CUDA_VISIBLE_DEVICES: match by UUID.
    try:
        uuid = str(torch.cuda.get_device_properties(index).uuid)
        return pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
    except Exception:
        return pynvml.nvmlDeviceGetHandleByIndex(index)
