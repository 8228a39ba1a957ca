"""A complete ctui task you can copy: a small MLP on scikit-learn's bundled digits.

Run it with:  ctui train --headless --task assets/examples/tiny_task.py:build --epochs 5

ctui calls build(config) once and trains what it returns. Only `model`, `train_dataset` and
`test_dataset` are required; leave out loss, optimizer or scheduler to get ctui's defaults
(cross-entropy on logits, Adadelta(lr=config.lr), StepLR(step_size=1, gamma=config.gamma);
with an optimizer of your own and no scheduler, the learning rate stays as you set it).
"""

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

from ctui.engine import Task


def build(config):
    digits = load_digits()
    images = torch.tensor(digits.data, dtype=torch.float32) / 16.0  # 64 pixels in [0, 1]
    labels = torch.tensor(digits.target)
    split = int(0.8 * len(labels))
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))  # logits
    return Task(
        model=model,
        train_dataset=TensorDataset(images[:split], labels[:split]),
        test_dataset=TensorDataset(images[split:], labels[split:]),
        # Optional; these three lines show the hooks and could be deleted.
        loss=nn.functional.cross_entropy,
        optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3),
        scheduler=lambda optimizer: torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.9),
    )
