"""Benchmarks of the control panel, in a real terminal (tmux).

1. Training throughput with the panel open against the same run with no panel (both through the
   run host, so only the panel differs), in alternating order: the ratio of median samples/s
   and the median of each pair's ratio (target >= 0.97); and the CPU the panel and tmux took,
   in percent of one core (on this box, x% of a core costs the training about x%: see
   bench_cpu_share.py). The CPU figure moves far less from run to run than the speeds do.
2. Time from typing `ctui` to the panel's first frame, beside `import torch` on this machine
   (target: first frame under 1 s).

    python tests/bench/bench_panel.py [--repeats 3] [--epochs 3] [--task digits]
"""

from __future__ import annotations

import argparse
import contextlib
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
        # a server of its own: one just killed may still hold a reused name
        self.socket = f"ctui-bench-{os.getpid()}-{time.monotonic_ns()}"
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

    def server_pid(self) -> int:
        return int(self.run("display-message", "-p", "#{pid}").strip())


def epoch_speed(run_dir: Path) -> float:
    """Median samples/s over the epochs after the first (which includes warm-up)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["samples_per_second"] for r in records if r["type"] == "epoch"]
    return statistics.median(speeds[1:] or speeds)


class CpuMeter:
    """The CPU a set of processes (psutil) used from start() on, in percent of one core: the
    panel's side of a run, with the run host left out."""

    def __init__(self, find) -> None:
        self._find = find  # () -> the processes to count now
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._began = 0.0

    @staticmethod
    def _used(process) -> float:
        times = process.cpu_times()
        return times.user + times.system

    def start(self) -> None:
        import psutil

        self._began = time.monotonic()
        for process in self._find():
            with contextlib.suppress(psutil.Error):
                self._start[process.pid] = self._used(process)

    def sample(self) -> None:
        """Call now and then: a process that exits before the end keeps what it used."""
        import psutil

        for process in self._find():
            with contextlib.suppress(psutil.Error):
                self._last[process.pid] = self._used(process)

    def percent_of_a_core(self) -> float:
        self.sample()
        used = sum(last - self._start.get(pid, 0.0) for pid, last in self._last.items())
        return 100 * used / max(time.monotonic() - self._began, 1e-9)


def descendants_but_the_host(root_pid: int) -> list:
    """A process and its descendants, without any run host among them."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    kept = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            if "ctui.engine.host" not in " ".join(process.cmdline()):
                kept.append(process)
    return kept


def wait_until_ended(run_dir: Path, timeout: float = 600, meter: CpuMeter | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not (run_dir / "end.json").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{run_dir} did not finish")
        if meter is not None:
            meter.sample()
        time.sleep(0.2)
    time.sleep(0.5)  # the host writes its last lines and exits


def run_once(with_panel: bool, flags: list[str], workdir: Path) -> tuple[float, float | None]:
    """The run's samples/s, and with the panel the CPU that it and tmux took (% of a core)."""
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
            server = tmux.server_pid()
            meter = CpuMeter(lambda: descendants_but_the_host(server))
            meter.start()
            wait_until_ended(run_dir, meter=meter)
            cpu = meter.percent_of_a_core()
        finally:
            tmux.kill()
        return epoch_speed(run_dir), cpu
    subprocess.run([CTUI, "train", "--detach", *flags], env={**os.environ, **env},
                   check=True, capture_output=True, cwd=workdir)
    (run_dir,) = list(runs.iterdir())
    wait_until_ended(run_dir)
    return epoch_speed(run_dir), None


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
        without, with_panel, cpu = [], [], []
        for repeat in range(options.repeats):  # interleaved, alternating which goes first
            for panel in (False, True) if repeat % 2 == 0 else (True, False):
                speed, used = run_once(panel, flags, workdir)
                (with_panel if panel else without).append(speed)
                if used is not None:
                    cpu.append(used)
        ratio = statistics.median(with_panel) / statistics.median(without)
        paired = statistics.median(a / b for a, b in zip(with_panel, without, strict=True))
        print(f"samples/s without a panel: {', '.join(f'{s:,.0f}' for s in without)}")
        print(f"samples/s with the panel:  {', '.join(f'{s:,.0f}' for s in with_panel)}")
        print(f"the panel and tmux used: median {statistics.median(cpu):.2f}% of one core "
              f"({', '.join(f'{c:.2f}' for c in cpu)})")
        print(f"throughput with the panel / without: {ratio:.3f}, median of the pairs' ratios "
              f"{paired:.3f} (target >= 0.97; {os.cpu_count()} CPU cores, task {options.task})")


if __name__ == "__main__":
    main()
