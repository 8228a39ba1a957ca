"""Output flood under `ctui run` with no client attached: the program is never blocked and the
run host's memory stays bounded.

    python tests/bench/bench_program.py                  # 3 repetitions, 10 s each
    python tests/bench/bench_program.py --reps 5 --seconds 5

1. Paced flood, as the issue states it: a program writing 10 MB/s of tqdm-like lines for 10 s
   under ctui. Printed: the rate it achieved (target: the 10 MB/s it asked for), its longest
   single write (a blocked program shows seconds here), and the host's peak RSS (bound below).
2. Unpaced: the program writes as fast as it can, bare (in a pseudo-terminal whose output a
   plain loop reads and throws away: the ceiling for any terminal) and under ctui, in
   alternating order; the ratio of the medians says how close to the ceiling the host's
   reader (decode, collapse into output.log, coalesce for clients) keeps it.
Each run also checks that output.log holds the program's last line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from ctui.engine.host.registry import run_info
from ctui.engine.program import ProgramSpec, start_program

RSS_BOUND_MB = 300.0  # the host: Python, psutil, a 1 MiB unsent buffer, 4 MiB of history

FLOOD = r'''
import json, os, sys, time
rate, seconds, report = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
line = ("\r step {:>9d} |" + "#" * 60 + "| loss 0.1234 \x1b[32mok\x1b[0m").format
chunk = "".join(line(i) + ("\n" if i % 50 == 0 else "") for i in range(600)).encode()
out = sys.stdout.buffer.raw if hasattr(sys.stdout.buffer, "raw") else sys.stdout.buffer
written, longest, start = 0, 0.0, time.perf_counter()
while (now := time.perf_counter()) - start < seconds:
    if rate and written > rate * (now - start):
        time.sleep(min(0.002, written / rate - (now - start)))
        continue
    before = time.perf_counter()
    view = memoryview(chunk)
    while view:
        view = view[os.write(out.fileno(), view):]
    longest = max(longest, time.perf_counter() - before)
    written += len(chunk)
elapsed = time.perf_counter() - start
os.write(out.fileno(), b"\nflood finished\n")
with open(report, "w") as handle:
    json.dump({"rate": written / elapsed, "longest_write": longest, "bytes": written}, handle)
'''


def bare(script: Path, seconds: float, report: Path) -> dict:
    """The program in a pseudo-terminal drained by a loop that keeps nothing."""
    master, slave = os.openpty()
    process = subprocess.Popen([sys.executable, str(script), "0", str(seconds), str(report)],
                               stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    try:
        while os.read(master, 1 << 16):
            pass
    except OSError:  # EIO: the program has closed its terminal
        pass
    os.close(master)
    process.wait()
    return json.loads(report.read_text())


def supervised(script: Path, rate: float, seconds: float, report: Path,
               runs: Path) -> tuple[dict, float, Path]:
    """(the program's report, the host's peak RSS in MB, the run folder); no client attached."""
    spec = ProgramSpec(argv=(sys.executable, str(script), str(rate), str(seconds), str(report)),
                       cwd=str(script.parent))
    run_dir = start_program(spec, runs)
    host = psutil.Process(run_info(run_dir).pid)
    peak = 0.0
    while run_info(run_dir).status == "live":
        try:
            peak = max(peak, host.memory_info().rss / 2**20)
        except psutil.Error:
            break
        time.sleep(0.1)
    return json.loads(report.read_text()), peak, run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate-mb", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        script = base / "flood.py"
        script.write_text(FLOOD)
        report, runs = base / "report.json", base / "runs"

        rate = args.rate_mb * 1e6
        paced, peak, run_dir = supervised(script, rate, args.seconds, report, runs)
        log = (run_dir / "output.log").read_text(errors="replace")
        print(f"paced {args.rate_mb:g} MB/s for {args.seconds:g}s under ctui, no client: "
              f"achieved {paced['rate'] / 1e6:.2f} MB/s, longest write "
              f"{paced['longest_write'] * 1000:.1f} ms, host peak RSS {peak:.0f} MB (bound "
              f"{RSS_BOUND_MB:.0f} MB: {'ok' if peak < RSS_BOUND_MB else 'OVER'}), output.log "
              f"{len(log) / 1e6:.1f} MB, last line kept: {'flood finished' in log}", flush=True)

        ratios, peaks = [], [peak]
        for rep in range(1, args.reps + 1):
            order = ("bare", "ctui") if rep % 2 else ("ctui", "bare")
            result = {}
            for side in order:
                if side == "bare":
                    result[side] = bare(script, args.seconds, report)["rate"]
                else:
                    done, peak, _ = supervised(script, 0, args.seconds, report, runs)
                    result[side] = done["rate"]
                    peaks.append(peak)
            ratios.append(result["ctui"] / result["bare"])
            print(f"rep {rep}: unpaced bare {result['bare'] / 1e6:,.1f} MB/s, under ctui "
                  f"{result['ctui'] / 1e6:,.1f} MB/s, ratio {ratios[-1]:.3f}, host peak RSS "
                  f"{peaks[-1]:.0f} MB", flush=True)
        print(f"median ratio ctui/bare (unpaced): {statistics.median(ratios):.3f}; host peak RSS "
              f"over all runs {max(peaks):.0f} MB (bound {RSS_BOUND_MB:.0f} MB)")


if __name__ == "__main__":
    main()
