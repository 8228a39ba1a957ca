"""Each rank's share of the epoch, and the flags of a data-parallel job: fast, no processes."""

from __future__ import annotations

import pytest

from ctui.engine import RunConfig
from ctui.engine.config import ConfigError
from ctui.engine.distributed.sharding import ShardedBatchSampler, share_of
from ctui.engine.distributed.spec import check_job, ranks_per_node, wants_ranks
from ctui.engine.sampling import epoch_order

from helpers import ctui_in_process


def global_batches(num_samples: int, world: int, batch: int, position: int, epoch: int = 1):
    """What the ranks train together, global batch by global batch: the real pieces joined in
    rank order (an empty piece's stand-in sample is left out: it trains at weight 0)."""
    samplers = [ShardedBatchSampler(num_samples, 7, rank, world, batch) for rank in range(world)]
    for sampler in samplers:
        sampler.set_epoch(epoch, position)
    joined = []
    for pieces in zip(*samplers, strict=True):
        count = min(batch * world, num_samples - position)
        real = [piece for rank, piece in enumerate(pieces) if share_of(count, rank, world)[1]]
        joined.append([index for piece in real for index in piece])
        position += count
    return joined


@pytest.mark.parametrize("num_samples", [1, 3, 16, 97, 101])
@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("batch", [1, 4, 8])
def test_the_ranks_train_the_epoch_order_once(num_samples, world, batch):
    order = epoch_order(num_samples, 7, 2)
    batches = global_batches(num_samples, world, batch, 0, epoch=2)
    assert [index for joined in batches for index in joined] == order
    assert all(len(joined) == min(batch * world, num_samples - batch * world * i)
               for i, joined in enumerate(batches))


def test_pieces_differ_by_at_most_one_and_an_empty_piece_still_runs_one_sample():
    assert [share_of(5, rank, 2) for rank in range(2)] == [(0, 3), (3, 2)]
    assert [share_of(1, rank, 3) for rank in range(3)] == [(0, 1), (1, 0), (1, 0)]
    # 97 samples, 2 ranks of 8: the last global batch is 1 sample; rank 1 gets a stand-in
    last = list(ShardedBatchSampler(97, 7, 1, 2, 8))[-1]
    assert len(last) == 1 and last[0] == epoch_order(97, 7, 1)[96]


def test_a_position_from_one_rank_count_continues_exactly_on_another():
    order = epoch_order(101, 7, 1)
    position = 32  # two global batches of a 2-rank job at batch 8
    for world, batch in ((1, 16), (3, 5), (2, 8)):
        rest = global_batches(101, world, batch, position)
        assert [index for joined in rest for index in joined] == order[position:]


def test_one_rank_on_one_machine_needs_no_launcher():
    assert not wants_ranks(RunConfig())
    assert wants_ranks(RunConfig(nproc_per_node=2))
    assert wants_ranks(RunConfig(nproc_per_node="auto"))  # may mean several GPUs
    assert wants_ranks(RunConfig(nnodes=2, rdzv_endpoint="10.0.0.1:29500"))
    assert wants_ranks(RunConfig(max_restarts=3))  # one rank, restarted when it crashes
    assert ranks_per_node(RunConfig(nproc_per_node="auto"), gpus=0) == 1
    assert ranks_per_node(RunConfig(nproc_per_node="auto"), gpus=4) == 4
    assert ranks_per_node(RunConfig(nproc_per_node="gpu"), gpus=8) == 8
    with pytest.raises(ConfigError, match="no visible CUDA GPU"):
        ranks_per_node(RunConfig(nproc_per_node="gpu"), gpus=0)
    with pytest.raises(ConfigError, match="--rdzv-endpoint HOST:PORT"):
        check_job(RunConfig(nnodes=2), 1)
    with pytest.raises(ConfigError, match="4 ranks but 2 visible GPUs"):
        check_job(RunConfig(nproc_per_node=4), 4, gpus=2)
    check_job(RunConfig(nproc_per_node=4, device="cpu"), 4, gpus=2)  # CPU ranks: fine


@pytest.mark.parametrize("flags, named", [
    (["--nproc-per-node", "0"], "--nproc-per-node"),
    (["--nproc-per-node", "many"], "--nproc-per-node"),
    (["--nnodes", "0"], "--nnodes"),
    (["--max-restarts", "-1"], "--max-restarts"),
    (["--rdzv-endpoint", "nohost"], "--rdzv-endpoint"),
    (["--rdzv-endpoint", "10.0.0.1:99999"], "--rdzv-endpoint"),
    (["--nnodes", "2"], "--rdzv-endpoint"),
    (["--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "127.0.0.1:29500"],
     "--node-rank"),
])
def test_bad_job_flags_are_one_line_and_exit_2(capsys, tmp_path, flags, named):
    code, out, err = ctui_in_process(capsys, "train", "--headless", "--run-dir",
                                     str(tmp_path / "run"), *flags)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and named in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing was started
