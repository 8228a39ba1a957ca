"""Pick the device and the precision a run trains with."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import ConfigError


@dataclass(frozen=True)
class Placement:
    device: torch.device
    amp_dtype: torch.dtype | None  # None: full fp32

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]

    @property
    def needs_grad_scaler(self) -> bool:
        return self.amp_dtype == torch.float16

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"


def resolve_device(spec: str) -> torch.device:
    """'auto' picks CUDA, then MPS, then CPU; an explicit device must exist on this machine."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("device", f"{spec} asked for, but this machine has no usable CUDA "
                              "GPU; use --device cpu or auto")
        index = int(spec.split(":")[1]) if ":" in spec else torch.cuda.current_device()
        count = torch.cuda.device_count()
        if index >= count:
            raise ConfigError("device", f"{spec} does not exist: this machine has {count} CUDA "
                              f"device(s), cuda:0 to cuda:{count - 1}")
        return torch.device("cuda", index)
    if spec == "mps" and not _mps_available():
        raise ConfigError("device", "mps asked for, but Apple's MPS backend is not available "
                          "here; use --device cpu or auto")
    return torch.device(spec)


def choose_placement(device_spec: str, amp: bool) -> Placement:
    device = resolve_device(device_spec)
    if not amp:
        return Placement(device, None)
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        return Placement(device, torch.bfloat16 if bf16 else torch.float16)
    if device.type == "mps":
        return Placement(device, torch.float16)
    return Placement(device, torch.bfloat16)  # CPU autocast supports bf16


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())
