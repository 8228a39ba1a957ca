"""A CLIP-style two-tower model, trained in ctui's own loop: dict batches, no labels.

Run it with:  ctui train --headless --task assets/examples/contrastive_task.py:build --epochs 5

Like CheXzero, each sample is an image and its text, and the DataLoader yields dicts
({'img': ..., 'txt': ...}). There are no labels: the loss is the symmetric contrastive loss
that pulls each image towards its own text and away from the batch's other texts. Both come
from Task.step; Task.evaluate reports retrieval accuracy over the whole test set. The data is
synthetic (image and text features that share a hidden cause), so it runs anywhere in seconds.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ctui.engine import Task

LATENT, IMAGE_FEATURES, TEXT_FEATURES, EMBEDDING = 8, 32, 24, 16


class PairedFeatures(Dataset):
    """(image, text) feature pairs that share a hidden cause, with noise on each side."""

    def __init__(self, count: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        cause = torch.randn(count, LATENT, generator=generator)
        to_image = torch.randn(LATENT, IMAGE_FEATURES, generator=torch.Generator().manual_seed(1))
        to_text = torch.randn(LATENT, TEXT_FEATURES, generator=torch.Generator().manual_seed(2))
        self.img = cause @ to_image + 1.0 * torch.randn(count, IMAGE_FEATURES, generator=generator)
        self.txt = cause @ to_text + 1.0 * torch.randn(count, TEXT_FEATURES, generator=generator)

    def __len__(self) -> int:
        return len(self.img)

    def __getitem__(self, index: int) -> dict:
        return {"img": self.img[index], "txt": self.txt[index]}


class TwoTowers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.image_tower = nn.Sequential(nn.Linear(IMAGE_FEATURES, 64), nn.ReLU(),
                                         nn.Linear(64, EMBEDDING))
        self.text_tower = nn.Sequential(nn.Linear(TEXT_FEATURES, 64), nn.ReLU(),
                                        nn.Linear(64, EMBEDDING))
        self.log_temperature = nn.Parameter(torch.tensor(2.0))  # CLIP learns its temperature

    def forward(self, img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
        """Similarity logits: row i, column j scores image i against text j."""
        image = F.normalize(self.image_tower(img), dim=-1)
        text = F.normalize(self.text_tower(txt), dim=-1)
        return self.log_temperature.exp() * image @ text.T


def step(model: nn.Module, batch: dict) -> dict:
    logits = model(batch["img"], batch["txt"])
    matches = torch.arange(len(logits), device=logits.device)
    loss = (F.cross_entropy(logits, matches) + F.cross_entropy(logits.T, matches)) / 2
    # Other entries are logged too (as train_<name>), averaged over the epoch.
    return {"loss": loss, "batch_top1": (logits.argmax(dim=1) == matches).float().mean()}


def evaluate(model: nn.Module, batches) -> dict:
    """Retrieval over the whole test set: does each image find its own text among all?"""
    images, texts = [], []
    for batch in batches:  # already on the device
        images.append(batch["img"])
        texts.append(batch["txt"])
    logits = model(torch.cat(images), torch.cat(texts))
    matches = torch.arange(len(logits), device=logits.device)
    loss = (F.cross_entropy(logits, matches) + F.cross_entropy(logits.T, matches)) / 2
    return {"loss": loss.item(),
            "i2t_top1": (logits.argmax(dim=1) == matches).float().mean().item(),
            "t2i_top1": (logits.argmax(dim=0) == matches).float().mean().item()}


def build(config) -> Task:
    return Task(
        model=TwoTowers(),
        train_dataset=PairedFeatures(2048, seed=config.seed),
        test_dataset=PairedFeatures(256, seed=config.seed + 1),
        step=step,
        evaluate=evaluate,
    )
