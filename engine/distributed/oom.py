"""Out of memory in a data-parallel job: relaunch the whole job at half the batch per rank.

One process recovers in place (engine/loop.py), but one rank shrinking its batch alone would
cut its shards differently from its peers and break DDP's collectives. So in a job the rank
that ran out says so in the run folder, a file per rank (any rank may run out, several at
once), and exits; the launcher (launch.py) reads the lowest rank's report and calls
elastic_launch again from the newest checkpoint at half the per-rank batch, down to 1. Several
machines cannot be relaunched from one: the job fails with the command to continue.
Torch-free; the files are read back bounded and type-checked (a run folder may be tampered with).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from ..config import MAX_COUNT
from ..host.registry import read_json, write_json

# Where a rank's batch size meets its memory: the forward and backward of a batch, and the
# optimizer step (its state is made at the first one). An OOM elsewhere (evaluation) is not one
# a smaller training batch helps with.
_STEP_FRAMES = {"_micro_step", "_optimizer_step"}


def report_name(rank: int) -> str:
    return f"rank-oom-{rank}.json"


@dataclass(frozen=True)
class OutOfMemory:
    """A rank ran out of memory at this batch size per rank."""

    rank: int
    batch_size: int

    @property
    def relaunch_batch_size(self) -> int:
        return self.batch_size // 2

    @classmethod
    def parse(cls, data: Any, world_size: int) -> OutOfMemory | None:
        """From a report or a request: None unless every field has a plausible value."""
        if not isinstance(data, dict):
            return None
        rank, batch_size = data.get("rank"), data.get("batch_size")
        if not (_whole(rank) and 0 <= rank < world_size and _whole(batch_size)
                and 1 <= batch_size <= MAX_COUNT):
            return None
        return cls(rank, batch_size)

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "batch_size": self.batch_size}


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def in_a_training_step(trace: TracebackType | None) -> bool:
    """Whether an out-of-memory error came from a training step (forward, backward, optimizer),
    where a smaller batch per rank needs less memory."""
    while trace is not None:
        code = trace.tb_frame.f_code
        if code.co_name in _STEP_FRAMES and code.co_filename.endswith("loop.py"):
            return True
        trace = trace.tb_next
    return False


def report(run_dir: Path, rank: int, batch_size: int) -> None:
    """This rank ran out of memory: its own file, written atomically, before it exits (so a
    peer that sees it gone already finds the report)."""
    write_json(run_dir / report_name(rank), OutOfMemory(rank, batch_size).to_dict())


def first_report(run_dir: Path, world_size: int) -> OutOfMemory | None:
    """The lowest rank's report of this launch (the launcher clears them before each), or None.
    Often every rank runs out at once: rank 0's own, when it ran out, is the one its launcher
    names too. Only this machine's ranks write into this folder."""
    for rank in range(world_size):
        found = OutOfMemory.parse(read_json(run_dir / report_name(rank)), world_size)
        if found is not None and found.rank == rank:
            return found
    return None


def clear_reports(run_dir: Path, world_size: int) -> None:
    for rank in range(world_size):
        (run_dir / report_name(rank)).unlink(missing_ok=True)


def relaunches(oom: OutOfMemory, nnodes: int) -> bool:
    """Whether the launcher relaunches the job by itself: one machine, a batch left to halve."""
    return nnodes == 1 and oom.batch_size > 1


def failure_line(oom: OutOfMemory, nnodes: int, node_rank: int, run_dir: Path) -> str:
    """Why the job ends instead of being relaunched, and what to do next: one line."""
    said = f"rank {oom.rank} ran out of memory at batch size {oom.batch_size} per rank"
    if oom.batch_size <= 1:
        return (f"{said}, the smallest there is: the model and its training state do not fit "
                "on the device; try --amp, a smaller model or a device with more memory")
    half = oom.relaunch_batch_size
    here = f"--run-dir {run_dir}" if node_rank == 0 else "--run-dir RUN_DIR"
    return (f"{said}; a job on several machines is not relaunched by itself: continue from the "
            f"newest checkpoint at {half} per rank by starting every machine again with "
            f"--batch-size {half}, machine 0 with `ctui train --resume {here} --batch-size "
            f"{half} ...`")


def relaunch_line(oom: OutOfMemory, batch_size: int, progress: dict | None,
                  source: str) -> str:
    """What rank 0 of the relaunched job says first. progress: the resumed checkpoint's (None:
    from the first sample); source: "the newest checkpoint" or the file asked for."""
    where = f"{source} (epoch {progress.get('epoch')}, sample {progress.get('position')})" \
        if progress else "the first sample (no checkpoint yet)"
    return (f"rank {oom.rank} ran out of memory at batch size {oom.batch_size} per rank: "
            f"continuing from {where} at {batch_size} per rank")
