"""Inside one rank: the process group, DDP, and what the ranks agree on.

Commands reach rank 0 only (its socket, its queue). The ranks agree on them where they already
synchronise: the log step, where the losses and timings of the last interval are summed with one
all-reduce of a short float64 vector anyway. Rank 0 writes up to SLOTS commands into it (every
other rank writes zeros), any rank may raise the stop flag (a signal it got), and each rank
fills its own slot of per-rank timings. So the agreement adds no collective to the per-step
path; a command waits at most --log-interval steps (bench_ddp.py measures the all-reduce).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..events import (
    CheckpointNow,
    Command,
    Pause,
    Resume,
    SetBatchSize,
    SetNumWorkers,
    Stop,
)

SLOTS = 4  # commands per agreement; more wait for the next one
CODES: dict[type, int] = {Pause: 1, Resume: 2, Stop: 3, CheckpointNow: 4, SetBatchSize: 5,
                          SetNumWorkers: 6}
_HEAD = 3  # loss total, samples, stop flag
_PER_RANK = 3  # samples, data seconds, compute seconds
TIMEOUT = timedelta(minutes=30)  # a collective waiting longer than this means a lost rank


@dataclass(frozen=True)
class Agreed:
    """What every rank learns at an agreement: job totals, commands, per-rank timings."""

    loss_total: float
    samples: int
    commands: tuple[Command, ...]
    ranks: tuple[tuple[int, float, float, float], ...]  # (rank, samples, data s, compute s)


class RankGroup:
    def __init__(self, rank: int, world_size: int, local_rank: int, device: str,
                 backend: str) -> None:
        self.rank = rank
        self.world_size = world_size
        self.local_rank = local_rank
        self.device = device  # this rank's: cuda:LOCAL_RANK or cpu
        self.backend = backend
        self.outbox: list[Command] = []  # rank 0: commands every rank applies at the next agreement
        self.stop_asked = ""  # a signal asked this rank to stop: the whole job stops

    @classmethod
    def from_environment(cls, device_setting: str) -> RankGroup:
        """Join the group the elastic launcher set up (RANK, WORLD_SIZE, LOCAL_RANK, ...)."""
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = device_setting in ("auto", "cuda") and torch.cuda.is_available()
        device = f"cuda:{local_rank}" if cuda else "cpu"
        if cuda:
            torch.cuda.set_device(local_rank)
        backend = "nccl" if cuda else "gloo"
        # The launcher's store outlives a restart: a key space per attempt, or a restarted
        # rank may read a dead peer's address before the new one is written (seen with gloo).
        from .spec import restarts_so_far

        store, rank, world = next(dist.rendezvous("env://", timeout=TIMEOUT))
        store = dist.PrefixStore(f"ctui/attempt-{restarts_so_far()}", store)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world,
                                timeout=TIMEOUT)
        return cls(rank, world, local_rank, device, backend)

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if self.device.startswith("cuda") else None
        return DistributedDataParallel(model, device_ids=ids)

    # ------------------------------------------------------------ agreement

    def agree(self, loss_total: float = 0.0, samples: int = 0, data_seconds: float = 0.0,
              compute_seconds: float = 0.0) -> Agreed:
        """One all-reduce: sums the interval's figures, shares rank 0's commands and every
        rank's timings. Every rank must call it at the same step."""
        vector = torch.zeros(_HEAD + 2 * SLOTS + _PER_RANK * self.world_size,
                             dtype=torch.float64)
        vector[0], vector[1] = loss_total, samples
        vector[2] = 1.0 if self.stop_asked else 0.0
        sent = self.outbox[:SLOTS] if self.is_writer else []
        del self.outbox[:len(sent)]
        for slot, command in enumerate(sent):
            vector[_HEAD + 2 * slot] = CODES[type(command)]
            vector[_HEAD + 2 * slot + 1] = _argument(command)
        mine = _HEAD + 2 * SLOTS + _PER_RANK * self.rank
        vector[mine:mine + _PER_RANK] = torch.tensor([samples, data_seconds, compute_seconds],
                                                     dtype=torch.float64)
        on_device = vector.to(self.device)
        dist.all_reduce(on_device)
        summed = on_device.cpu().tolist()
        commands = list(sent) if self.is_writer else _decoded(summed)
        if summed[2] and not any(isinstance(command, Stop) for command in commands):
            commands.append(Stop(self.stop_asked or "a rank was asked to stop"))
        base = _HEAD + 2 * SLOTS
        ranks = tuple((r, *summed[base + _PER_RANK * r: base + _PER_RANK * (r + 1)])
                      for r in range(self.world_size))
        return Agreed(summed[0], round(summed[1]), tuple(commands), ranks)

    def share_resume(self, found: tuple[str | None, dict | None, tuple[str, ...]] | None
                     ) -> tuple[str | None, dict | None, tuple[str, ...]]:
        """Rank 0's resume point (path, checkpoint, notes) for every rank: rank 0 alone reads
        the run folder (the others may be on machines without it). The bytes are torch.save's
        and are loaded weights_only, as a checkpoint file is: nothing in them can run code."""
        length = torch.zeros(1, dtype=torch.int64, device=self.device)
        payload = None
        if self.is_writer:
            path, state, notes = found
            buffer = io.BytesIO()
            torch.save({"path": path, "state": state, "notes": list(notes)}, buffer)
            payload = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
            length[0] = payload.numel()
        dist.broadcast(length, src=0)
        if payload is None:
            payload = torch.empty(int(length.item()), dtype=torch.uint8)
        on_device = payload.to(self.device)
        dist.broadcast(on_device, src=0)
        if self.is_writer:
            return found
        shared = torch.load(io.BytesIO(on_device.cpu().numpy().tobytes()), weights_only=True)
        return shared["path"], shared["state"], tuple(shared["notes"])

    def close(self) -> None:
        """Meet at a barrier, then leave: a rank that tears down while another still talks to it
        makes that one abort (seen under CI load)."""
        if not dist.is_initialized():
            return
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def _argument(command: Command) -> int:
    if isinstance(command, SetBatchSize):
        return command.batch_size
    if isinstance(command, SetNumWorkers):
        return command.num_workers
    return 0


def _decoded(summed: list[float]) -> list[Command]:
    commands: list[Command] = []
    for slot in range(SLOTS):
        code, argument = int(summed[_HEAD + 2 * slot]), int(summed[_HEAD + 2 * slot + 1])
        if code == CODES[Pause]:
            commands.append(Pause())
        elif code == CODES[Resume]:
            commands.append(Resume())
        elif code == CODES[Stop]:
            commands.append(Stop("stop agreed with rank 0"))
        elif code == CODES[CheckpointNow]:
            commands.append(CheckpointNow())
        elif code == CODES[SetBatchSize]:
            commands.append(SetBatchSize(argument))
        elif code == CODES[SetNumWorkers]:
            commands.append(SetNumWorkers(argument))
    return commands
