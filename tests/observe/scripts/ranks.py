"""A DistributedDataParallel script for torchrun (gloo on the CPU): each rank reads its share."""

import os

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

dist.init_process_group("gloo")
dataset = TensorDataset(torch.arange(400).float().unsqueeze(1))
sampler = DistributedSampler(dataset, shuffle=True, seed=0)
loader = DataLoader(dataset, batch_size=16, sampler=sampler)
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(1, 1))
for epoch in range(2):
    sampler.set_epoch(epoch)
    for (x,) in loader:
        model(x).sum().backward()
# One write: the ranks share the pipe, and print() under PYTHONUNBUFFERED writes piecewise.
os.write(1, f"RANK {dist.get_rank()} done\n".encode())
dist.barrier()  # no rank tears gloo down while the other still talks to it (an abort, -6)
dist.destroy_process_group()
