"""One model of what limits training, behind both the advisor and autotune so they cannot
contradict each other: the share of step time spent waiting for the DataLoader (and, on NVIDIA
GPUs, how busy the GPU is) decides the verdict, and the verdict decides which worker counts are
worth trying. Torch-free, so the panel and the CLI may use it too."""

from __future__ import annotations

from dataclasses import dataclass

from .config import max_num_workers

INPUT_BOUND = "input-bound"
COMPUTE_BOUND = "compute-bound"
GPU_UNDERUSED = "gpu-underused"

INPUT_BOUND_WAIT = 0.25  # a quarter of step time waiting for the DataLoader
GPU_BUSY = 0.5  # below this, a GPU with no data wait is mostly idle between small kernels


@dataclass(frozen=True)
class Bottleneck:
    verdict: str  # INPUT_BOUND, COMPUTE_BOUND or GPU_UNDERUSED
    data_wait_fraction: float
    gpu_utilisation: float | None = None

    @property
    def more_workers_can_help(self) -> bool:
        return self.verdict == INPUT_BOUND


def judge(data_wait_fraction: float, gpu_utilisation: float | None = None) -> Bottleneck:
    """The verdict for a measured data-wait share of step time (and GPU utilisation, 0-1)."""
    if data_wait_fraction >= INPUT_BOUND_WAIT:
        verdict = INPUT_BOUND
    elif gpu_utilisation is not None and gpu_utilisation < GPU_BUSY:
        verdict = GPU_UNDERUSED
    else:
        verdict = COMPUTE_BOUND
    return Bottleneck(verdict, data_wait_fraction, gpu_utilisation)


def worker_options(cores: int) -> list[int]:
    """0, 1, 2, 4, ... up to the core count (and the workers bound)."""
    options, workers = [0], 1
    while workers <= min(cores, max_num_workers()):
        options.append(workers)
        workers *= 2
    return options


def worker_candidates(bottleneck: Bottleneck, current: int, cores: int) -> list[int]:
    """The worker counts worth timing: input-bound, the current one and more; otherwise the
    current one and fewer (more cannot help, fewer may free CPU for the training process)."""
    options = sorted({*worker_options(cores), current})
    if bottleneck.more_workers_can_help:
        return [w for w in options if w >= current]
    return [w for w in options if w <= current]


def more_workers_to_try(current: int, cores: int) -> int | None:
    """The next worker count above the current one that autotune would time; None at the top."""
    above = [w for w in worker_options(cores) if w > current]
    return above[0] if above else None
