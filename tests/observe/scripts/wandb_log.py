"""Logs to wandb (offline) as a training script does: scalars each step, a nested dict, numpy
and torch scalars, and things that are not scalars; prints what wandb kept (its summary).

    python wandb_log.py [--steps N] [--torch] [--fail]

--fail: one bad call (a list key), which wandb refuses: the script catches wandb's own error.
"""

import argparse
import json
import math

import numpy as np
import wandb

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=50)
parser.add_argument("--torch", action="store_true")
parser.add_argument("--fail", action="store_true")
args = parser.parse_args()

run = wandb.init(mode="offline", project="ctui-test", config={"lr": 0.1})
for step in range(args.steps):
    run.log({"train/loss": 1.0 / (step + 1), "lr": np.float32(0.1),
             "eval": {"acc": step / args.steps, "top": {"k5": 0.5}},
             "flag": True, "name": "text", "diverged": math.inf, "hist": [1, 2, 3]})
if args.torch:
    import torch

    wandb.log({"tensor/zero_d": torch.tensor(0.25), "tensor/many": torch.ones(3)})
if args.fail:
    try:
        wandb.log({("not", "a", "string"): 1.0})
    except TypeError as error:
        print("WANDB REFUSED", error, flush=True)
wandb.log({"final/acc": 0.875}, step=args.steps + 10)


def plain(mapping):
    return {key: plain(mapping[key]) if hasattr(mapping[key], "keys") else mapping[key]
            for key in mapping.keys() if not key.startswith("_")}


print("RESULT", json.dumps(plain(run.summary), sort_keys=True, default=repr), flush=True)
run.finish()
