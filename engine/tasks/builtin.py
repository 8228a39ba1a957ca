"""The built-in tasks: digits (offline default), mnist, cifar10 and fake."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from ..config import RunConfig
from ..errors import first_line
from .base import Task, TaskError
from .models import Net, SmallConvNet, nll_loss

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def digits(config: RunConfig) -> Task:
    """scikit-learn's bundled 8x8 handwritten digits, resized to 28x28 and normalised like MNIST,
    so the MNIST Net trains on them unchanged. A fixed stratified 80/20 split; no download."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = torch.nn.functional.interpolate(images, size=(28, 28), mode="bilinear",
                                             align_corners=False)
    images = (images - MNIST_MEAN) / MNIST_STD
    targets = torch.tensor(bunch.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(range(len(targets)), test_size=0.2, random_state=0,
                                           stratify=bunch.target)
    return Task(
        model=Net(),
        train_dataset=TensorDataset(images[train_idx], targets[train_idx]),
        test_dataset=TensorDataset(images[test_idx], targets[test_idx]),
        loss=nll_loss,
        name="digits",
    )


def mnist(config: RunConfig) -> Task:
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(),
                                    transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
    root = Path(config.data_dir)
    hint = (f"put the four MNIST files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
            f"t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in {root / 'MNIST' / 'raw'}")
    train, test = _open_or_download(datasets.MNIST, root, transform, "MNIST", hint)
    return Task(model=Net(), train_dataset=train, test_dataset=test, loss=nll_loss, name="mnist")


def cifar10(config: RunConfig) -> Task:
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(),
                                    transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])
    root = Path(config.data_dir)
    hint = f"put cifar-10-python.tar.gz (or its extracted cifar-10-batches-py folder) in {root}"
    train, test = _open_or_download(datasets.CIFAR10, root, transform, "CIFAR-10", hint)
    return Task(model=SmallConvNet(3, 10), train_dataset=train, test_dataset=test,
                loss=nll_loss, name="cifar10")


def fake(config: RunConfig) -> Task:
    """torchvision FakeData: random images, for throughput experiments (accuracy is chance)."""
    from torchvision import datasets, transforms

    shape, classes = config.fake_image_shape, config.fake_classes
    transform = transforms.Compose([transforms.ToTensor(),
                                    transforms.Normalize((0.5,) * shape[0], (0.25,) * shape[0])])
    train = datasets.FakeData(size=config.fake_size, image_size=shape, num_classes=classes,
                              transform=transform, random_offset=0)
    test = datasets.FakeData(size=max(1, config.fake_size // 8), image_size=shape,
                             num_classes=classes, transform=transform,
                             random_offset=config.fake_size)
    mnist_shaped = shape == (1, 28, 28) and classes == 10
    model = Net() if mnist_shaped else SmallConvNet(shape[0], classes)
    return Task(model=model, train_dataset=train, test_dataset=test, loss=nll_loss, name="fake")


def _open_or_download(dataset_cls, root: Path, transform, label: str, hint: str):
    try:
        return (dataset_cls(str(root), train=True, download=False, transform=transform),
                dataset_cls(str(root), train=False, download=False, transform=transform))
    except RuntimeError:
        pass  # not there yet: download below
    try:
        return (dataset_cls(str(root), train=True, download=True, transform=transform),
                dataset_cls(str(root), train=False, download=True, transform=transform))
    except Exception as error:  # network errors come as URLError, OSError, RuntimeError...
        reason = first_line(error).rstrip(":")
        raise TaskError(f"{label} is not in {root} and could not be downloaded ({reason}); "
                        f"{hint}, or run where the internet is reachable") from None


BUILTIN = {"digits": digits, "mnist": mnist, "cifar10": cifar10, "fake": fake}
