"""What any other process using a small share of one core costs a training run on this box:
the yardstick for bench_panel.py and bench_serve.py, whose panels use such a share.

A stand-in process, in a session of its own as a panel is, burns SHARE of one core in pure
Python four times a second (a panel redraws on that beat); a detached digits run trains with
it and without it, in alternating order; printed: the ratio of the median samples/s.

    python tests/bench/bench_cpu_share.py [--share 0.032] [--repeats 5] [--epochs 6]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_panel import CTUI, epoch_speed, wait_until_ended

BURN = """
import sys, time
share, period = float(sys.argv[1]), 0.25
while True:
    start = time.perf_counter()
    while time.perf_counter() - start < period * share:
        sum(i * i for i in range(200))
    time.sleep(period * (1 - share))
"""


def train_once(share: float, epochs: int) -> float:
    runs = Path(tempfile.mkdtemp(prefix="ctui-bench-share-"))
    burner = subprocess.Popen([sys.executable, "-c", BURN, str(share)],
                              start_new_session=True) if share else None
    try:
        subprocess.run([CTUI, "train", "--detach", "--task", "digits", "--epochs", str(epochs),
                        "--no-tensorboard", "--runs-dir", str(runs)], capture_output=True,
                       check=True)
        (run_dir,) = [path for path in runs.iterdir() if path.is_dir()]
        wait_until_ended(run_dir)
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
    return epoch_speed(run_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--share", type=float, default=0.032, help="of one core (0.032: 3.2%%)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=6)
    options = parser.parse_args()
    alone, beside = [], []
    for repeat in range(options.repeats):  # alternating order, so drift hits both alike
        for share in ((0.0, options.share) if repeat % 2 == 0 else (options.share, 0.0)):
            (beside if share else alone).append(train_once(share, options.epochs))
    print(f"samples/s alone:            {', '.join(f'{s:,.0f}' for s in alone)}")
    print(f"samples/s beside the share: {', '.join(f'{s:,.0f}' for s in beside)}")
    print(f"throughput beside a process using {options.share:.1%} of one core / alone: "
          f"{statistics.median(beside) / statistics.median(alone):.3f}")


if __name__ == "__main__":
    main()
