"""The run flags: names and defaults of pytorch/examples mnist/main.py plus ctui's own.

Every flag's default is left out of the parsed namespace (SUPPRESS), so we know what the user
typed: settings merge as defaults < --config file < checkpoint (on resume) < typed flags.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from ..config import (
    BUILTIN_TASKS,
    FAKE_CHANNELS,
    FAKE_SIDE,
    ConfigError,
    RunConfig,
    check_setting,
)

MAX_WAIT_SECONDS = 86400  # `--timeout` of the run commands: a day is already a stuck run


def _setting(name: str, parse_text: Callable[[str], Any] = int):
    """The argparse type of run flag `name`: `parse_text` turns the text into a value, then
    RunConfig's own rule checks it, so a flag and a --config file are refused alike."""
    def parse(text: str) -> Any:
        try:
            value = parse_text(text)
        except ValueError:
            value = text  # not even a number: the rule refuses the text and says what is allowed
        try:
            return check_setting(name, value)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(error.detail) from None
    return parse


def wait_seconds(text: str) -> float:
    """`--timeout S` of the run commands: finite seconds > 0, at most a day (inf overflows the
    socket timeout)."""
    allowed = f"seconds > 0 and <= {MAX_WAIT_SECONDS} (a day)"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:60]!r} is not a number; use {allowed}") \
            from None
    if not math.isfinite(value) or not 0 < value <= MAX_WAIT_SECONDS:
        raise argparse.ArgumentTypeError(f"{text[:60]} is not allowed; use {allowed}")
    return value



def add_run_flags(parser: argparse.ArgumentParser) -> None:
    S = argparse.SUPPRESS
    d = RunConfig()
    g = parser.add_argument_group("training (as in pytorch/examples mnist/main.py)")
    g.add_argument("--batch-size", type=_setting("batch_size"), default=S, metavar="N",
                   help=f"input batch size for training (default: {d.batch_size})")
    g.add_argument("--test-batch-size", type=_setting("test_batch_size"), default=S, metavar="N",
                   help=f"input batch size for testing (default: {d.test_batch_size})")
    g.add_argument("--epochs", type=_setting("epochs"), default=S, metavar="N",
                   help=f"number of epochs to train (default: {d.epochs})")
    g.add_argument("--lr", type=_setting("lr", float), default=S, metavar="LR",
                   help=f"learning rate (default: {d.lr})")
    g.add_argument("--gamma", type=_setting("gamma", float), default=S, metavar="M",
                   help=f"learning rate step gamma, applied every epoch (default: {d.gamma})")
    g.add_argument("--seed", type=_setting("seed"), default=S, metavar="S",
                   help=f"random seed (default: {d.seed})")
    g.add_argument("--log-interval", type=_setting("log_interval"), default=S, metavar="N",
                   help=f"steps between logged training figures (default: {d.log_interval})")

    g = parser.add_argument_group("task and data")
    g.add_argument("--task", default=S, metavar="TASK",
                   help="built-in task (" + ", ".join(BUILTIN_TASKS) + "; default: digits, "
                   "which needs no download) or your own: FILE.py:FUNCTION or "
                   "package.module:FUNCTION")
    g.add_argument("--data-dir", default=S, metavar="DIR",
                   help=f"where datasets live or are downloaded to (default: {d.data_dir})")
    g.add_argument("--num-workers", type=_setting("num_workers"), default=S, metavar="N",
                   help="DataLoader worker processes; raise it when training waits for data "
                   f"(default: {d.num_workers})")
    g.add_argument("--fake-size", type=_setting("fake_size"), default=S, metavar="N",
                   help=f"fake task: training images (default: {d.fake_size})")
    g.add_argument("--fake-image-shape", type=_setting("fake_image_shape", str), default=S,
                   metavar="CxHxW", help="fake task: image shape (default: 1x28x28; C from "
                   "{} to {}, H and W from {} to {})".format(*FAKE_CHANNELS, *FAKE_SIDE))
    g.add_argument("--fake-classes", type=_setting("fake_classes"), default=S, metavar="N",
                   help=f"fake task: number of classes (default: {d.fake_classes})")

    g = parser.add_argument_group("optimisation (a task's own optimizer or scheduler wins)")
    g.add_argument("--optimizer", type=_setting("optimizer", str), default=S,
                   metavar="NAME", help="adadelta (as mnist/main.py), sgd (momentum 0.9) or "
                   f"adamw (weight decay 0.01), at --lr (default: {d.optimizer})")
    g.add_argument("--scheduler", type=_setting("scheduler", str), default=S, metavar="NAME",
                   help="step (lr times --gamma every epoch), cosine (down to 0 at the last "
                   f"epoch) or none (default: {d.scheduler})")
    g.add_argument("--accumulate", type=_setting("accumulate"), default=S, metavar="N",
                   help="gradient accumulation: one optimizer step per N batches, as one "
                   "batch N times larger would take (default: 1)")
    g.add_argument("--clip-grad-norm", type=_setting("clip_grad_norm", float), default=S,
                   metavar="X", help="clip the gradients' total norm to X before each "
                   "optimizer step (default: off)")
    g.add_argument("--compile", action="store_true", default=S,
                   help="torch.compile the model; the first steps' compile time is shown apart "
                   "from the epoch's train time")
    g.add_argument("--val-every", type=_setting("val_every"), default=S, metavar="N",
                   help="evaluate every N epochs, and after the last (default: 1)")
    g.add_argument("--monitor", type=_setting("monitor", str), default=S, metavar="NAME",
                   help="keep checkpoints/ckpt-best.pt for the best epoch by this figure "
                   "(test_loss, test_accuracy, train_loss or one of your task's own)")
    g.add_argument("--mode", type=_setting("mode", str), default=S, metavar="max|min",
                   help="whether a larger or a smaller --monitor value is better (default: min "
                   "for a name ending in loss, else max)")

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
    g.add_argument("--checkpoint-every-steps", type=_setting("checkpoint_every_steps"), default=S,
                   metavar="N", help="also save every N steps (default: 0, off)")
    g.add_argument("--checkpoint-every-minutes", type=_setting("checkpoint_every_minutes", float),
                   default=S, metavar="M", help=f"also save every M minutes (default: "
                   f"{d.checkpoint_every_minutes:g}; 0 turns it off)")
    g.add_argument("--keep-checkpoints", type=_setting("keep_checkpoints"), default=S, metavar="K",
                   help=f"how many recent checkpoints to keep (default: {d.keep_checkpoints})")
    g.add_argument("--time-limit", type=_setting("time_limit", str), default=S, metavar="DURATION",
                   help="checkpoint and stop cleanly before this much time has passed, e.g. "
                   "11h50m, 90m or 3600s (default: none)")
    g.add_argument("--scale-lr", action="store_true", default=S,
                   help="scale the learning rate with the batch size when it changes mid-run")

    g = parser.add_argument_group("more GPUs (data parallel, with torchrun's meanings)")
    g.add_argument("--nproc-per-node", type=_setting("nproc_per_node", str), default=S,
                   metavar="N|gpu|auto", help="ranks on this machine: a number, gpu (one per "
                   "visible GPU) or auto (one per GPU, else 1); --batch-size is per rank "
                   "(default: 1)")
    g.add_argument("--nnodes", type=_setting("nnodes"), default=S, metavar="N",
                   help="machines in the job (default: 1)")
    g.add_argument("--node-rank", type=_setting("node_rank"), default=S, metavar="R",
                   help="this machine's rank, 0 for the machine that runs rank 0 and the "
                   "panel (default: 0)")
    g.add_argument("--rdzv-endpoint", type=_setting("rdzv_endpoint", str), default=S,
                   metavar="HOST:PORT", help="where the machines meet: the address of machine "
                   "0 and a free port (needed with --nnodes above 1)")
    g.add_argument("--max-restarts", type=_setting("max_restarts"), default=S, metavar="N",
                   help="restart the ranks from the newest checkpoint up to N times when one "
                   "dies (default: 0)")
    g.add_argument("--rdzv-timeout", type=_setting("rdzv_timeout", float), default=S,
                   metavar="S", help="seconds to wait for every machine to join "
                   f"(default: {d.rdzv_timeout:g})")

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
