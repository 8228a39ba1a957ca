"""The run flags: names and defaults of pytorch/examples mnist/main.py plus ctui's own.

Every flag's default is left out of the parsed namespace (SUPPRESS), so we know what the user
typed: settings merge as defaults < --config file < checkpoint (on resume) < typed flags.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..config import BUILTIN_TASKS, RunConfig, parse_duration


def _int(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a whole number; use an integer >= {minimum}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is too small; use an integer >= {minimum}")
        return value
    parse.__name__ = "int"
    return parse


def _float(allowed: str, accept):
    """A float flag: `allowed` says what is allowed ("a number > 0"), `accept` checks it."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; use {allowed}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{text} is not allowed; use {allowed}")
        return value
    parse.__name__ = "float"
    return parse


_positive_float = _float("a number > 0", lambda value: value > 0)
_non_negative_minutes = _float("minutes >= 0", lambda value: value >= 0)


def _duration(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration; use e.g. 11h50m, 90m or 3600s") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; use a duration > 0")
    return seconds


def _shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().split("x")
    try:
        shape = tuple(int(part) for part in parts)
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape; use CxHxW, e.g. 3x32x32")
    return shape


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    S = argparse.SUPPRESS
    d = RunConfig()
    g = parser.add_argument_group("training (as in pytorch/examples mnist/main.py)")
    g.add_argument("--batch-size", type=_int(1), default=S, metavar="N",
                   help=f"input batch size for training (default: {d.batch_size})")
    g.add_argument("--test-batch-size", type=_int(1), default=S, metavar="N",
                   help=f"input batch size for testing (default: {d.test_batch_size})")
    g.add_argument("--epochs", type=_int(1), default=S, metavar="N",
                   help=f"number of epochs to train (default: {d.epochs})")
    g.add_argument("--lr", type=_positive_float, default=S, metavar="LR",
                   help=f"learning rate (default: {d.lr})")
    g.add_argument("--gamma", type=_positive_float, default=S, metavar="M",
                   help=f"learning rate step gamma, applied every epoch (default: {d.gamma})")
    g.add_argument("--seed", type=_int(0), default=S, metavar="S",
                   help=f"random seed (default: {d.seed})")
    g.add_argument("--log-interval", type=_int(1), default=S, metavar="N",
                   help=f"steps between logged training figures (default: {d.log_interval})")

    g = parser.add_argument_group("task and data")
    g.add_argument("--task", default=S, metavar="TASK",
                   help="built-in task (" + ", ".join(BUILTIN_TASKS) + "; default: digits, "
                   "which needs no download) or your own: FILE.py:FUNCTION or "
                   "package.module:FUNCTION")
    g.add_argument("--data-dir", default=S, metavar="DIR",
                   help=f"where datasets live or are downloaded to (default: {d.data_dir})")
    g.add_argument("--num-workers", type=_int(0), default=S, metavar="N",
                   help="DataLoader worker processes; raise it when training waits for data "
                   f"(default: {d.num_workers})")
    g.add_argument("--fake-size", type=_int(1), default=S, metavar="N",
                   help=f"fake task: training images (default: {d.fake_size})")
    g.add_argument("--fake-image-shape", type=_shape, default=S, metavar="CxHxW",
                   help="fake task: image shape (default: 1x28x28)")
    g.add_argument("--fake-classes", type=_int(1), default=S, metavar="N",
                   help=f"fake task: number of classes (default: {d.fake_classes})")

    g = parser.add_argument_group("device")
    g.add_argument("--device", default=S, metavar="DEV",
                   help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps "
                   "(default: auto)")
    g.add_argument("--amp", action="store_true", default=S,
                   help="mixed precision: bf16 where the device supports it, else fp16 with a "
                   "grad scaler")

    g = parser.add_argument_group("run folder and checkpoints")
    g.add_argument("--run-dir", default=S, metavar="DIR",
                   help="this run's folder (default: a new folder under --runs-dir)")
    g.add_argument("--runs-dir", default=S, metavar="DIR",
                   help="folder holding all runs (default: $CTUI_RUNS, else ./runs)")
    g.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CKPT",
                   help="continue from the newest valid checkpoint in --run-dir, or from CKPT")
    g.add_argument("--checkpoint-every-steps", type=_int(0), default=S, metavar="N",
                   help="also save every N steps (default: 0, off)")
    g.add_argument("--checkpoint-every-minutes", type=_non_negative_minutes, default=S,
                   metavar="M", help=f"also save every M minutes (default: "
                   f"{d.checkpoint_every_minutes:g}; 0 turns it off)")
    g.add_argument("--keep-checkpoints", type=_int(1), default=S, metavar="K",
                   help=f"how many recent checkpoints to keep (default: {d.keep_checkpoints})")
    g.add_argument("--time-limit", type=_duration, default=S, metavar="DURATION",
                   help="checkpoint and stop cleanly before this much time has passed, e.g. "
                   "11h50m, 90m or 3600s (default: none)")
    g.add_argument("--scale-lr", action="store_true", default=S,
                   help="scale the learning rate with the batch size when it changes mid-run")

    g = parser.add_argument_group("logging")
    g.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=S,
                   help="do not write TensorBoard event files (on by default)")
    g.add_argument("--wandb", nargs="?", const="online", choices=("online", "offline"),
                   default=S, help="log to Weights & Biases (online, or offline to sync later)")
    g.add_argument("--config", default=None, metavar="FILE.toml",
                   help="read settings from a TOML file (keys as the flags, e.g. batch-size = "
                   "128); flags typed on the command line win")


def typed_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Only the run settings the user typed (not --config, --resume or command switches)."""
    not_settings = {"config", "resume", "headless", "detach", "command", "func"}
    return {key: value for key, value in vars(args).items() if key not in not_settings}
