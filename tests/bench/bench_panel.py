"""Benchmarks of the control panel, in a real terminal (tmux).

1. Training throughput with the panel open against the same run with no panel (both through the
   run host, so only the panel differs), as a ratio of median samples/s (target >= 0.97).
2. Time from typing `ctui` to the panel's first frame, beside `import torch` on this machine
   (target: first frame under 1 s).

    python tests/bench/bench_panel.py [--repeats 3] [--epochs 3] [--task digits]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CTUI = str(Path(sys.executable).with_name("ctui"))


class Tmux:
    def __init__(self, width: int = 100, height: int = 30) -> None:
        self.socket = f"ctui-bench-{os.getpid()}"
        self.size = (str(width), str(height))

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True,
                              text=True).stdout

    def start(self, command: str, cwd: Path, env: dict[str, str]) -> None:
        exports = " ".join(f"{key}={value}" for key, value in env.items())
        self.run("new-session", "-d", "-s", "bench", "-x", self.size[0], "-y", self.size[1],
                 "-c", str(cwd), f"env {exports} {command}; sleep 600")

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "bench")

    def keys(self, *keys: str) -> None:
        for key in keys:
            self.run("send-keys", "-t", "bench", key)
            time.sleep(0.3)

    def wait_for(self, text: str, timeout: float, poll: float = 0.01) -> float:
        """The perf_counter() time at which text was first seen on the screen."""
        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            if text in self.screen():
                return time.perf_counter()
            time.sleep(poll)
        raise TimeoutError(f"{text!r} did not appear in {timeout}s:\n{self.screen()}")

    def kill(self) -> None:
        self.run("kill-server")


def epoch_speed(run_dir: Path) -> float:
    """Median samples/s over the epochs after the first (which includes warm-up)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["samples_per_second"] for r in records if r["type"] == "epoch"]
    return statistics.median(speeds[1:] or speeds)


def wait_until_ended(run_dir: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not (run_dir / "end.json").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{run_dir} did not finish")
        time.sleep(0.2)
    time.sleep(0.5)  # the host writes its last lines and exits


def run_once(with_panel: bool, flags: list[str], workdir: Path) -> float:
    runs = workdir / ("panel" if with_panel else "nopanel") / str(time.monotonic_ns())
    env = {"CTUI_RUNS": str(runs), "TERM": "xterm-256color"}
    if with_panel:
        tmux = Tmux()
        tmux.start(f"{CTUI} train {' '.join(flags)}", workdir, env)
        try:
            tmux.wait_for("Training · ", timeout=60)
            while not runs.exists() or not any(runs.iterdir()):
                time.sleep(0.1)
            (run_dir,) = list(runs.iterdir())
            wait_until_ended(run_dir)
        finally:
            tmux.kill()
    else:
        subprocess.run([CTUI, "train", "--detach", *flags], env={**os.environ, **env},
                       check=True, capture_output=True, cwd=workdir)
        (run_dir,) = list(runs.iterdir())
        wait_until_ended(run_dir)
    return epoch_speed(run_dir)


def first_frame_seconds(workdir: Path) -> float:
    """From launching `ctui` in an empty runs folder to the panel's first drawn frame."""
    runs = workdir / "first-frame" / str(time.monotonic_ns())
    tmux = Tmux()
    start = time.perf_counter()
    tmux.start(CTUI, workdir, {"CTUI_RUNS": str(runs), "TERM": "xterm-256color"})
    try:
        seconds = tmux.wait_for("Training", timeout=30, poll=0.005) - start
        tmux.wait_for("Training · ", timeout=60)  # the run it started: stop it with a checkpoint
        tmux.keys("q", "s")
        time.sleep(1)
    finally:
        tmux.kill()
    for run_dir in runs.iterdir() if runs.exists() else ():
        wait_until_ended(run_dir, timeout=60)
    return seconds


def import_torch_seconds() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--task", default="digits")
    options = parser.parse_args()
    if shutil.which("tmux") is None:
        sys.exit("bench_panel needs tmux")
    flags = ["--task", options.task, "--epochs", str(options.epochs), "--no-tensorboard"]
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        frames = [first_frame_seconds(workdir) for _ in range(options.repeats)]
        torch_times = [import_torch_seconds() for _ in range(options.repeats)]
        print(f"first frame of `ctui`: median {statistics.median(frames):.2f}s "
              f"({', '.join(f'{s:.2f}' for s in frames)}); `import torch`: median "
              f"{statistics.median(torch_times):.2f}s (target: first frame < 1 s)")
        without, with_panel = [], []
        for _ in range(options.repeats):  # interleaved, so drift hits both alike
            without.append(run_once(False, flags, workdir))
            with_panel.append(run_once(True, flags, workdir))
        ratio = statistics.median(with_panel) / statistics.median(without)
        print(f"samples/s without a panel: {', '.join(f'{s:,.0f}' for s in without)}")
        print(f"samples/s with the panel:  {', '.join(f'{s:,.0f}' for s in with_panel)}")
        print(f"throughput with the panel / without: {ratio:.3f} (target >= 0.97; "
              f"{os.cpu_count()} CPU cores, task {options.task})")


if __name__ == "__main__":
    main()
