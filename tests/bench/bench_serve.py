"""Benchmarks of `ctui serve` in a real headless browser (the system's Chromium).

1. Training throughput with a browser panel attached for the whole run against the same run with
   nothing attached (both detached run hosts, so only the browser, its panel process and the
   server differ), alternating the order, as a ratio of medians (target >= 0.97). The browser
   normally runs on the user's laptop, not on the training box: here it shares the box, so by
   default its processes run at the lowest priority, their scheduling group included
   (`--browser-priority same` to not).
2. Time from opening the URL in the browser to the panel's first frame (the run's name drawn).

    python tests/bench/bench_serve.py [--repeats 3] [--epochs 5] [--task digits]
                                      [--browser-priority low|same]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))

from browsing import Serve, ctui, launch, open_panel, why_no_browser  # noqa: E402


def lower_browser_priority() -> None:
    """Chromium's processes and threads (started by this one through Playwright) at the lowest
    priority: as if the browser ran on another machine. Called after each page opens, for its
    new renderer.

    A process's nice value is not enough on Linux: it is per thread (psutil's nice() sets the
    main thread only), and with autogroups (sched_autogroup_enabled, on here) the CPU is first
    shared between sessions, a nice value ranking a thread only inside its own. Chromium runs
    in a session of its own (Playwright starts it detached), so its session's group is set to
    nice 19 as well (/proc/PID/autogroup)."""
    import psutil

    for process in psutil.Process().children(recursive=True):
        try:
            if "chrom" not in process.name():
                continue
            for thread in process.threads():
                os.setpriority(os.PRIO_PROCESS, thread.id, 19)
            if os.getsid(process.pid) == process.pid:
                Path(f"/proc/{process.pid}/autogroup").write_text("19")
        except (psutil.Error, OSError):
            pass


def epoch_speed(run_dir: Path) -> float:
    """Median samples/s over the epochs after the first (which includes warm-up)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["samples_per_second"] for r in records if r["type"] == "epoch"]
    return statistics.median(speeds[1:] or speeds)


def wait_until_ended(run_dir: Path, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not (run_dir / "end.json").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{run_dir} did not finish")
        time.sleep(0.2)
    time.sleep(0.5)


def run_once(browser, with_browser: bool, flags: list[str], workdir: Path,
             low_priority: bool) -> float:
    runs = workdir / ("browser" if with_browser else "none") / str(time.monotonic_ns())
    runs.mkdir(parents=True)
    server = Serve(runs, runs.parent / f"serve-{runs.name}.log") if with_browser else None
    context = browser.new_context(viewport={"width": 1000, "height": 640})
    try:
        result = ctui("train", "--detach", *flags, "--runs-dir", str(runs))
        assert result.returncode == 0, result.stderr
        (run_dir,) = [path for path in runs.iterdir() if path.is_dir()]
        if server is not None:
            open_panel(context, server.url).wait_for("Training · ")
            if low_priority:
                lower_browser_priority()
        wait_until_ended(run_dir)
    finally:
        context.close()
        if server is not None:
            server.close()
    return epoch_speed(run_dir)


def first_frame_seconds(browser, workdir: Path, flags: list[str]) -> float:
    """From page.goto(URL) to the run's name on the browser's screen (a live run attached)."""
    runs = workdir / "first-frame" / str(time.monotonic_ns())
    runs.mkdir(parents=True)
    result = ctui("train", "--detach", *flags, "--runs-dir", str(runs))
    assert result.returncode == 0, result.stderr
    (run_dir,) = [path for path in runs.iterdir() if path.is_dir()]
    server = Serve(runs, runs.parent / "serve.log")
    context = browser.new_context(viewport={"width": 1000, "height": 640})
    try:
        start = time.perf_counter()
        open_panel(context, server.url).wait_for("Training · ", timeout=60)
        return time.perf_counter() - start
    finally:
        context.close()
        server.close()
        ctui("stop", str(run_dir))
        wait_until_ended(run_dir, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--task", default="digits")
    parser.add_argument("--browser-priority", choices=("low", "same"), default="low")
    options = parser.parse_args()
    if (why := why_no_browser()) is not None:
        sys.exit(f"bench_serve: {why}")
    from playwright.sync_api import sync_playwright

    flags = ["--task", options.task, "--epochs", str(options.epochs), "--no-tensorboard"]
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        workdir = Path(folder)
        browser = launch(playwright)
        frames = [first_frame_seconds(browser, workdir, ["--task", options.task, "--epochs",
                                                          "100", "--no-tensorboard"])
                  for _ in range(options.repeats)]
        print(f"first frame in the browser: median {statistics.median(frames):.2f}s "
              f"({', '.join(f'{s:.2f}' for s in frames)})")
        none, attached = [], []
        for repeat in range(options.repeats):  # alternating order, so drift hits both alike
            for with_browser in ((False, True) if repeat % 2 == 0 else (True, False)):
                speed = run_once(browser, with_browser, flags, workdir,
                                 options.browser_priority == "low")
                (attached if with_browser else none).append(speed)
        browser.close()
    ratio = statistics.median(attached) / statistics.median(none)
    print(f"samples/s with nothing attached: {', '.join(f'{s:,.0f}' for s in none)}")
    print(f"samples/s with a browser panel:  {', '.join(f'{s:,.0f}' for s in attached)}")
    print(f"throughput with a browser panel / without: {ratio:.3f} (target >= 0.97; "
          f"{os.cpu_count()} CPU cores, task {options.task}, browser priority "
          f"{options.browser_priority})")


if __name__ == "__main__":
    main()
