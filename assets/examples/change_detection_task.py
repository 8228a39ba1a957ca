"""A change-detection model (CDLab style), trained in ctui's own loop: two images in, a
per-pixel mask out, judged by F1 and IoU, keeping the checkpoint with the best F1.

Run it with:
  ctui train --headless --task assets/examples/change_detection_task.py:build --epochs 5 \\
      --monitor f1

Each sample is (before, after, mask): two 1x32x32 images of the same place and the pixels that
changed between them. Task.step returns the per-pixel loss; Task.evaluate counts true and false
positives over the whole test set for F1 and IoU (averaging per-batch F1 would weigh a batch
with few changed pixels like one with many). The data is synthetic and CPU-sized.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ctui.engine import Task

SIDE = 32


class SyntheticChanges(Dataset):
    """Textured scenes where a rectangle or two changed brightness between the two images."""

    def __init__(self, count: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.before = torch.rand(count, 1, SIDE, SIDE, generator=generator)
        self.mask = torch.zeros(count, 1, SIDE, SIDE)
        for index in range(count):
            for _ in range(int(torch.randint(1, 3, (), generator=generator))):
                top, left = torch.randint(0, SIDE - 8, (2,), generator=generator).tolist()
                height, width = torch.randint(4, 9, (2,), generator=generator).tolist()
                self.mask[index, 0, top:top + height, left:left + width] = 1.0
        noise = 0.1 * torch.randn(count, 1, SIDE, SIDE, generator=generator)
        self.after = (self.before + 0.6 * self.mask * torch.sign(0.5 - self.before) + noise)

    def __len__(self) -> int:
        return len(self.before)

    def __getitem__(self, index: int) -> tuple:
        return self.before[index], self.after[index], self.mask[index]


class SiameseChangeNet(nn.Module):
    """One encoder for both images; the change is read from their features' difference."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(16, 1, 1))

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        return self.head((self.encoder(after) - self.encoder(before)).abs())  # mask logits


CHANGED_WEIGHT = torch.tensor(4.0)  # few pixels change: weigh them up, or "nothing" wins


def step(model: nn.Module, batch: tuple) -> torch.Tensor:
    before, after, mask = batch
    return F.binary_cross_entropy_with_logits(model(before, after), mask,
                                              pos_weight=CHANGED_WEIGHT.to(mask.device))


def evaluate(model: nn.Module, batches) -> dict:
    true_pos = false_pos = false_neg = 0.0
    loss_total, pixels = 0.0, 0
    for before, after, mask in batches:  # already on the device
        logits = model(before, after)
        loss_total += F.binary_cross_entropy_with_logits(
            logits, mask, pos_weight=CHANGED_WEIGHT.to(mask.device), reduction="sum").item()
        pixels += mask.numel()
        predicted = logits > 0
        changed = mask > 0.5
        true_pos += (predicted & changed).sum().item()
        false_pos += (predicted & ~changed).sum().item()
        false_neg += (~predicted & changed).sum().item()
    return {
        "loss": loss_total / pixels,
        "f1": 2 * true_pos / max(2 * true_pos + false_pos + false_neg, 1.0),
        "iou": true_pos / max(true_pos + false_pos + false_neg, 1.0),
    }


def build(config) -> Task:
    return Task(
        model=SiameseChangeNet(),
        train_dataset=SyntheticChanges(512, seed=config.seed),
        test_dataset=SyntheticChanges(128, seed=config.seed + 1),
        step=step,
        evaluate=evaluate,
        optimizer=lambda params: torch.optim.AdamW(params, lr=3e-3),
    )
