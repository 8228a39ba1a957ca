"""A CLIP-style training script, as a student would write it, never edited for ctui: a dataset
of {'img', 'txt', 'index'} dicts, tqdm, its own epoch timer. Prints its own figures so a test
can compare them with ctui's and observed runs with bare ones.

--pause-after N: after epoch N, touch ready-N and wait for go-N (a test changes settings then).
"""

import argparse
import hashlib
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, get_worker_info

try:
    from tqdm import tqdm
except ImportError:  # the script runs without tqdm too
    def tqdm(iterable, **_):
        return iterable


class Captions(Dataset):
    def __init__(self, size: int, side: int) -> None:
        self.size, self.side = size, side

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        # random augmentation, as real pipelines do: draws from the (worker's) torch RNG
        img = torch.full((3, self.side, self.side), float(index % 7)) + torch.rand(3, 1, 1)
        info = get_worker_info()
        return {"img": img, "txt": f"a photo of thing {index}", "index": index,
                "worker": -1 if info is None else info.id}


class TwoTowers(torch.nn.Module):
    def __init__(self, side: int) -> None:
        super().__init__()
        self.image = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * side * side, 64),
                                         torch.nn.Dropout(0.1), torch.nn.Linear(64, 32))
        self.text = torch.nn.EmbeddingBag(1000, 32)

    def forward(self, img, txt):
        tokens = torch.tensor([[sum(map(ord, word)) % 1000 for word in caption.split()[-2:]]
                               for caption in txt])
        return self.image(img), self.text(tokens)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--side", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--start-method", default=None)
    parser.add_argument("--persistent", action="store_true")
    parser.add_argument("--pause-after", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="more compute per batch")
    args = parser.parse_args()

    torch.manual_seed(0)
    dataset = Captions(args.size, args.side)
    extra = {"multiprocessing_context": args.start_method} if args.workers else {}
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                        num_workers=args.workers, persistent_workers=args.persistent, **extra)
    model = TwoTowers(args.side)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for epoch in range(1, args.epochs + 1):
        seen, workers = [], set()
        start = time.perf_counter()
        for batch in tqdm(loader, desc=f"epoch {epoch}", disable=None):
            for _ in range(args.repeat):
                image, text = model(batch["img"], batch["txt"])
                logits = F.normalize(image, dim=1) @ F.normalize(text, dim=1).T / 0.07
                target = torch.arange(len(logits))
                loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            losses.append(loss.item())
            seen.extend(batch["index"].tolist())
            workers.update(batch["worker"].tolist())
        seconds = time.perf_counter() - start
        once = sorted(seen) == list(range(len(dataset)))
        print(f"EPOCH {epoch} seconds {seconds:.6f} once {once} workers "
              f"{','.join(map(str, sorted(workers)))}", flush=True)
        if epoch == args.pause_after:
            Path(f"ready-{epoch}").touch()
            while not Path(f"go-{epoch}").exists():
                time.sleep(0.02)
    weights = hashlib.sha256(b"".join(p.detach().numpy().tobytes()
                                      for p in model.parameters())).hexdigest()
    print(f"RESULT {weights} {sum(losses)!r}", flush=True)


if __name__ == "__main__":
    main()
