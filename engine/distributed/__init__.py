"""Data parallel training on PyTorch's own machinery: the elastic launcher behind torchrun
(`torch.distributed.launcher.api.elastic_launch`) starts the ranks, DistributedDataParallel
averages their gradients. ctui adds the rest:

    spec       torch-free: how many ranks, which rendezvous; checked before anything starts
    sharding   each rank's share of the one seeded epoch order, by global position
    group      inside a rank: the process group, DDP, and agreeing on commands and figures
    launch     the launcher process: the run folder, elastic_launch, how the job ended
    rank       the entry point each rank runs: `python -m ctui.engine.distributed.rank`
    oom        out of memory: a rank reports it, the launcher relaunches at half the batch
"""
