"""How many ranks a job has and where its machines meet, checked before torch loads.

torchrun's meanings: --nproc-per-node ranks on this machine, --nnodes machines, --node-rank this
machine's place (0 runs rank 0, its checkpoints and the panel), --rdzv-endpoint HOST:PORT of
machine 0. One rank on one machine is the plain single-process run: no launcher at all.
"""

from __future__ import annotations

import os

from ..config import ConfigError, RunConfig


def wants_ranks(config: RunConfig) -> bool:
    """Whether this run goes through the elastic launcher: more than one rank, "gpu"/"auto"
    (which may mean more), or --max-restarts (the launcher restarts a crashed rank)."""
    return config.nproc_per_node != 1 or config.nnodes > 1 or config.max_restarts > 0


def visible_gpus() -> int:
    """CUDA devices this process may use (loads torch: only once a job is starting)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def ranks_per_node(config: RunConfig, gpus: int | None = None) -> int:
    """--nproc-per-node as a number: auto is one per visible GPU, else 1; gpu needs GPUs."""
    value = config.nproc_per_node
    if isinstance(value, int):
        return value
    gpus = visible_gpus() if gpus is None else gpus
    if value == "gpu" and gpus == 0:
        raise ConfigError("nproc_per_node", "gpu: this machine has no visible CUDA GPU; use a "
                          "number of ranks (CPU ranks use gloo) or auto")
    return max(gpus, 1)


def check_job(config: RunConfig, nproc: int, gpus: int = 0) -> None:
    """What no single setting can check alone; one ConfigError line each. gpus: visible CUDA
    devices (CUDA ranks take one each)."""
    if gpus and config.device in ("auto", "cuda") and nproc > gpus:
        raise ConfigError("nproc_per_node", f"{nproc} ranks but {gpus} visible GPU"
                          f"{'s' * (gpus != 1)}: each CUDA rank needs a GPU of its own; use "
                          "--nproc-per-node gpu, or --device cpu for CPU ranks")
    if config.nnodes > 1 and not config.rdzv_endpoint:
        raise ConfigError("rdzv_endpoint", f"--nnodes {config.nnodes} needs the address every "
                          "machine can reach machine 0 at: --rdzv-endpoint HOST:PORT")
    if config.node_rank >= config.nnodes:
        raise ConfigError("node_rank", f"{config.node_rank} is not below --nnodes "
                          f"{config.nnodes}; use 0 to {config.nnodes - 1}")
    if config.device == "mps" and nproc * config.nnodes > 1:
        raise ConfigError("device", "mps trains one rank: use --nproc-per-node 1, or cpu "
                          "ranks")
    if config.device.startswith("cuda:") and nproc > 1:
        raise ConfigError("device", f"{config.device} names one GPU but {nproc} ranks each "
                          "need one: use --device cuda (rank i takes cuda:i)")


def cpu_threads_per_rank(nproc: int) -> int:
    """CPU ranks share the cores: each gets its part, as torchrun's OMP_NUM_THREADS=1 intends
    but without leaving cores idle."""
    return max(1, (os.cpu_count() or 1) // max(nproc, 1))


def restarts_so_far() -> int:
    """How often the elastic launcher has restarted this job's ranks (0 outside a job)."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def ranks_line(group, batch_size: int) -> str:
    """The job in one log line: ranks, backend, the per-rank and global batch, restarts."""
    world = group.world_size
    ranks = f"{world} rank" + ("" if world == 1 else "s")
    line = (f"{ranks} ({group.backend}, rank 0 on {group.device}): batch {batch_size} "
            f"per rank, global batch {batch_size * world}")
    restarts = restarts_so_far()
    if restarts:
        line += f"; restart {restarts} of the ranks, from the newest checkpoint"
    return line
