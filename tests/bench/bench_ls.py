"""`ctui ls` on a run with a 40 MB metrics.jsonl, against the same listing of a run with a tiny
one: both in this process (parse, list_runs, print), alternating the order, several repetitions.
Prints the median of each, their ratio, and the absolute median for the big file (target: well
under a second; reading every byte back to the last epoch record took 65 s before). Also times a
40 MB file of lines that look like epoch records but are not (a tampered file): bounded too.

    python tests/bench/bench_ls.py [--repeats 9] [--megabytes 40]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

from ctui.engine.cli.main import main as ctui

STEP = json.dumps({"type": "step", "time": 1795966414.477174, "rank": 0, "epoch": 7,
                   "step": 1234, "steps_in_epoch": 4690, "global_step": 123456,
                   "samples_seen": 157952, "loss": 0.123456789, "samples_per_second": 12345.678,
                   "data_wait_fraction": 0.0123, "lr": 0.9}) + "\n"


def make_runs(folder: Path, metrics: str) -> Path:
    """A runs folder holding one run whose metrics.jsonl is `metrics`."""
    run_dir = folder / "runs" / "run-1"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"config": {"epochs": 9}}))
    (run_dir / "metrics.jsonl").write_text(metrics)
    return run_dir.parent


def time_ls(runs: Path) -> float:
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as out:
        ctui(["ls", "--runs-dir", str(runs)])
    elapsed = time.perf_counter() - start
    assert "run-1" in out.getvalue(), out.getvalue()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--megabytes", type=int, default=40)
    args = parser.parse_args()
    size = args.megabytes * 2**20
    epoch_6 = json.dumps({"type": "epoch", "epoch": 6}) + "\n"
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        big = make_runs(folder / "big", epoch_6 + STEP * (size // len(STEP)))
        tiny = make_runs(folder / "tiny", epoch_6 + STEP * 10)
        fake = '{"type": "epoch", "epoch": "x"}\n'
        tampered = make_runs(folder / "tampered", fake * (size // len(fake)))
        times: dict[Path, list[float]] = {big: [], tiny: [], tampered: []}
        time_ls(tiny)  # warm-up: imports, page cache
        for repeat in range(args.repeats):
            for runs in ((big, tiny, tampered) if repeat % 2 else (tampered, tiny, big)):
                times[runs].append(time_ls(runs))
    big_s, tiny_s, tampered_s = (statistics.median(times[runs]) for runs in (big, tiny, tampered))
    print(f"ctui ls, median of {args.repeats}: {args.megabytes} MB metrics {big_s * 1000:.1f} ms,"
          f" tiny metrics {tiny_s * 1000:.1f} ms: ratio {big_s / tiny_s:.2f}")
    print(f"{args.megabytes} MB metrics: {big_s:.3f} s (target: well under 1 s)")
    print(f"{args.megabytes} MB of tampered epoch lines: {tampered_s:.3f} s")


if __name__ == "__main__":
    main()
