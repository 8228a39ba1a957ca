"""CPU-sized stand-ins for the scripts students run under `ctui run`, written by the tests.

cdlab.py behaves like CDLab's train.py: a line of notes asked on stdin at start, a tqdm bar per
epoch, a checkpoint per epoch, `--resume PATH`. chexzero.py like CheXzero's run_train.py: a
DataLoader yielding dicts, tqdm, torch.save every N steps, no resume. eval_wandb.py trains over
one loader, evaluates over another, and logs to wandb (offline) once an epoch, printing its own
evaluation time.
"""

from __future__ import annotations

from pathlib import Path

CDLAB = r'''
import argparse, os, sys, time
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

parser = argparse.ArgumentParser()
parser.add_argument("cmd")
parser.add_argument("--exp_config", default="")
parser.add_argument("--resume", default="")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--step_sleep", type=float, default=0.0)
parser.add_argument("--tb_on", action="store_true")
args = parser.parse_args()
notes = input("Enter a line of notes for this experiment: ")
print(f"notes: {notes}", flush=True)


class Pairs(Dataset):
    def __len__(self):
        return 32

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(index)
        pair = torch.randn(2, 3, 8, 8, generator=generator)
        return pair[0], pair[1], torch.zeros(8, 8)


model = torch.nn.Conv2d(6, 1, 3, padding=1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
start = 0
if args.resume:
    state = torch.load(args.resume, weights_only=True)
    model.load_state_dict(state["model"])
    start = state["epoch"] + 1
    print(f"resumed from {args.resume} at epoch {start}", flush=True)
train = DataLoader(Pairs(), batch_size=4, shuffle=True, num_workers=0)
os.makedirs("checkpoints", exist_ok=True)
for epoch in range(start, args.epochs):
    for t1, t2, target in tqdm(train, desc=f"epoch {epoch}", mininterval=0):
        loss = (model(torch.cat([t1, t2], 1)).squeeze(1) - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        time.sleep(args.step_sleep)
    torch.save({"model": model.state_dict(), "epoch": epoch}, f"checkpoints/epoch_{epoch}.pth")
    print(f"epoch {epoch} done num_workers={train.num_workers}", flush=True)
print("training complete", flush=True)
'''

CHEXZERO = r'''
import argparse, os, sys
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

parser = argparse.ArgumentParser()
parser.add_argument("--batch_size", type=int, default=8)
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--save_interval", type=int, default=3)
parser.add_argument("--fail_first", default="")
args = parser.parse_args()


class Images(Dataset):
    def __len__(self):
        return 48

    def __getitem__(self, index):
        return {"img": torch.full((1, 4, 4), float(index)), "txt": f"report {index}"}


model = torch.nn.Linear(16, 4)
optimizer = torch.optim.Adam(model.parameters())
loader = DataLoader(Images(), batch_size=args.batch_size, shuffle=True)
os.makedirs("checkpoints", exist_ok=True)
step = 0
for epoch in range(args.epochs):
    for batch in tqdm(loader, mininterval=0):
        loss = model(batch["img"].flatten(1)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if step % args.save_interval == 0:
            torch.save(model.state_dict(), f"checkpoints/checkpoint_{step}.pt")
    if args.fail_first and not os.path.exists(args.fail_first):
        open(args.fail_first, "w").close()
        raise RuntimeError("CUDA error: an illegal memory access was encountered (simulated)")
print("done", flush=True)
'''


EVAL_WANDB = r'''
import time
import torch
import wandb
from torch.utils.data import DataLoader, TensorDataset

train = DataLoader(TensorDataset(torch.arange(64.0)), batch_size=8, shuffle=True)
test = DataLoader(TensorDataset(torch.arange(16.0)), batch_size=8)
run = wandb.init(mode="offline", project="ctui-test")
for epoch in range(3):
    for (x,) in train:
        time.sleep(0.01)
    began = time.perf_counter()
    for (x,) in test:
        time.sleep(0.1)
    took = time.perf_counter() - began
    print(f"EVAL {epoch} {took:.4f}", flush=True)
    wandb.log({"epoch/loss": 1.0 / (epoch + 1), "val": {"acc": 0.5 + epoch / 10}})
    time.sleep(1.0)  # not a pass: neither train nor eval time; the host reads the scalars
run.finish()
print("done", flush=True)
'''


def write_scripts(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_text(CDLAB)
    (folder / "run_train.py").write_text(CHEXZERO)
    (folder / "eval_wandb.py").write_text(EVAL_WANDB)
    return folder
