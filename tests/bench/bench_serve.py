"""Benchmarks of `ctui serve` in a real headless browser (the system's Chromium).

1. Training throughput with a browser panel attached for the whole run against the same run with
   nothing attached (both detached run hosts, so only the browser, its panel process and the
   server differ), in rotating order, as a ratio of medians (target >= 0.97). The browser
   normally runs on the user's laptop, not on the training box, so two sides are measured:
   - `remote`: what the training box pays when the browser is elsewhere: `ctui serve` and the
     panel it runs for the session, with the frames taken by a websocket client in this process
     that signs in as the browser does (token, cookie, ticket) and reads every frame, drawing
     nothing;
   - `chromium`: the system's Chromium on this box too, drawing the panel with xterm.js, its
     processes and scheduling group at the lowest priority (`--browser-priority same` to not).
   Beside each ratio: the CPU that `ctui serve` and the panel it runs took, in percent of one
   core (on this box x% of a core costs the training about x%: bench_cpu_share.py); it moves
   far less from run to run than the speeds do.
2. Time from opening the URL in the browser to the panel's first frame (the run's name drawn).

    python tests/bench/bench_serve.py [--repeats 3] [--epochs 5] [--task digits]
                                      [--sides remote,chromium] [--browser-priority low|same]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))

from bench_panel import (  # noqa: E402
    CpuMeter,
    descendants_but_the_host,
    epoch_speed,
    wait_until_ended,
)
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


class RemoteBrowser:
    """The browser's side of a session, on a thread of this process: signs in with the URL's
    token, keeps the cookie, opens the page's websocket with its ticket, asks for a 100x30
    terminal and reads every frame until closed. What the box pays for a browser elsewhere."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.frames = 0
        self.drawn = threading.Event()  # the run's panel is on the screen
        self.error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._started.wait(60) or self.error is not None:
            raise RuntimeError(f"the websocket client did not connect: {self.error!r}")

    def _run(self) -> None:
        try:
            asyncio.run(self._session())
        except BaseException as error:  # reported by close() / the constructor
            self.error = error
            self._started.set()

    async def _session(self) -> None:
        import aiohttp

        base = self.url.split("?", 1)[0].rstrip("/")
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
            async with client.get(self.url) as page:
                html = await page.text()
            path = re.search(r'"(/ws/[^"]+)"', html)
            assert path, f"no websocket address in the page ({page.status})"
            async with client.ws_connect(base + path.group(1),
                                         headers={"Origin": base}) as socket:
                await socket.send_json(["resize", {"width": 100, "height": 30}])
                self._started.set()
                reader = asyncio.ensure_future(self._read(socket))
                await self._stop.wait()
                reader.cancel()

    async def _read(self, socket) -> None:
        title, tail = "Training · ".encode(), b""
        async for message in socket:
            self.frames += 1
            if not self.drawn.is_set() and isinstance(message.data, bytes):
                seen = tail + message.data  # the title may straddle two frames
                if title in seen:
                    self.drawn.set()
                tail = seen[-len(title):]

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def run_once(browser, side: str, flags: list[str], workdir: Path,
             low_priority: bool) -> tuple[float, float | None]:
    """One run's training speed with `side` ("none", "remote" or "chromium") attached, and the
    CPU that `ctui serve` and the panel it runs took (% of one core; None with nothing)."""
    runs = workdir / side / str(time.monotonic_ns())
    runs.mkdir(parents=True)
    server = Serve(runs, runs.parent / f"serve-{runs.name}.log") if side != "none" else None
    context = browser.new_context(viewport={"width": 1000, "height": 640})
    remote = cpu = None
    try:
        result = ctui("train", "--detach", *flags, "--runs-dir", str(runs))
        assert result.returncode == 0, result.stderr
        (run_dir,) = [path for path in runs.iterdir() if path.is_dir()]
        if side == "chromium":
            open_panel(context, server.url).wait_for("Training · ")
            if low_priority:
                lower_browser_priority()
        elif side == "remote":
            remote = RemoteBrowser(server.url)
            if not remote.drawn.wait(60):
                raise RuntimeError("the websocket client never got the run's panel")
        meter = CpuMeter(lambda: descendants_but_the_host(server.process.pid)) \
            if server is not None else None
        if meter is not None:
            meter.start()
        wait_until_ended(run_dir, timeout=900, meter=meter)
        if meter is not None:
            cpu = meter.percent_of_a_core()
        if remote is not None and remote.frames < 10:
            raise RuntimeError(f"the websocket client got {remote.frames} frames: no panel")
    finally:
        if remote is not None:
            remote.close()
        context.close()
        if server is not None:
            server.close()
    return epoch_speed(run_dir), cpu


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


def attached_sides(text: str) -> list[str]:
    sides = text.split(",")
    for side in sides:
        if side not in ("remote", "chromium") or sides.count(side) > 1:
            raise argparse.ArgumentTypeError(
                f"{side!r}: the sides are remote and chromium, each once, comma-separated")
    return sides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--task", default="digits")
    parser.add_argument("--sides", type=attached_sides, default="remote,chromium",
                        help="what is attached besides nothing, comma-separated: remote, "
                             "chromium (default: remote,chromium)")
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
        sides = ["none", *options.sides]
        speeds: dict[str, list[float]] = {side: [] for side in sides}
        cpu: dict[str, list[float]] = {side: [] for side in sides}
        for repeat in range(options.repeats):  # rotating order, so drift hits every side alike
            for side in sides[repeat % len(sides):] + sides[:repeat % len(sides)]:
                speed, used = run_once(browser, side, flags, workdir,
                                       options.browser_priority == "low")
                speeds[side].append(speed)
                if used is not None:
                    cpu[side].append(used)
        browser.close()
    none = statistics.median(speeds["none"])
    for side in sides:
        print(f"samples/s, {side:8}: {', '.join(f'{s:,.0f}' for s in speeds[side])}")
    for side in sides[1:]:
        what = ("the browser elsewhere (ctui serve and its panel on this box)" if side == "remote"
                else f"Chromium on this box too (priority {options.browser_priority})")
        paired = statistics.median(a / b for a, b in zip(speeds[side], speeds["none"],
                                                         strict=True))
        print(f"throughput with a browser panel / without, {what}: "
              f"{statistics.median(speeds[side]) / none:.3f}; median of the repetitions' "
              f"ratios {paired:.3f}; ctui serve and its panel used a median "
              f"{statistics.median(cpu[side]):.2f}% of one core")
    print(f"(target >= 0.97; {os.cpu_count()} CPU cores, task {options.task}, "
          f"{options.epochs} epochs, {options.repeats} repetitions)")


if __name__ == "__main__":
    main()
