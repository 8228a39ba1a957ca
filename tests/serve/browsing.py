"""A real browser on `ctui serve`: the system's Chromium driven by Playwright (never a browser
download), and the panel's screen read back as text by replaying what the browser received
over the websocket through pyte (xterm.js draws on a canvas, so the DOM holds no text).

Shared by tests/serve/test_browser.py and tests/bench/bench_serve.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyte

REPO = Path(__file__).resolve().parents[2]
CHROMIUMS = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome")

# Installed before the page's own scripts: keeps a copy of the terminal stream and the size
# the page asked for, for the test to read.
CAPTURE = """
(() => {
  const Native = window.WebSocket;
  const seen = window.__ctui = {text: "", cols: 80, rows: 24, opened: 0};
  const decoder = new TextDecoder();
  window.WebSocket = function (url, protocols) {
    const socket = protocols ? new Native(url, protocols) : new Native(url);
    seen.opened += 1;
    const size = /width=(\\d+)&height=(\\d+)/.exec(url);
    if (size) { seen.cols = +size[1]; seen.rows = +size[2]; }
    socket.addEventListener("message", (event) => {
      if (typeof event.data !== "string") {
        seen.text += decoder.decode(new Uint8Array(event.data), {stream: true});
      }
    });
    const send = socket.send.bind(socket);
    socket.send = (data) => {
      try {
        const message = JSON.parse(data);
        if (message[0] === "resize") {
          seen.cols = message[1].width;
          seen.rows = message[1].height;
        }
      } catch (error) { /* not JSON: keys */ }
      send(data);
    };
    return socket;
  };
  window.WebSocket.prototype = Native.prototype;
  Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
})();
"""


def chromium() -> str | None:
    """The system's Chromium, if any ($CTUI_CHROMIUM first)."""
    for name in (os.environ.get("CTUI_CHROMIUM"), *CHROMIUMS):
        if name and (found := shutil.which(name)):
            return found
    return None


def why_no_browser() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if chromium() is None:
        return "no Chromium found (apt-get install -y chromium, or set CTUI_CHROMIUM)"
    return None


def ctui(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctui.tui.main", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=120, **kwargs)


def start_run(runs: Path, epochs: int = 200, *flags: str) -> Path:
    """A detached run (digits unless `flags` say otherwise) in a host of its own, as
    `ctui train --detach` starts one."""
    result = ctui("train", "--detach", "--epochs", str(epochs), "--no-tensorboard",
                  "--runs-dir", str(runs), *flags)
    assert result.returncode == 0, result.stderr
    (run_dir,) = [path for path in runs.iterdir() if path.is_dir()]
    return run_dir


def stop_run(run_dir: Path, timeout: float = 60) -> None:
    ctui("stop", str(run_dir))
    deadline = time.monotonic() + timeout
    while not (run_dir / "end.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)


class Serve:
    """`ctui serve` on a free port, its URL read from what it prints."""

    def __init__(self, runs: Path, log: Path, *flags: str) -> None:
        self.log = log
        with log.open("w") as out:
            # Its own session, as when a user starts it from a shell: on Linux that is also its
            # own scheduling group (autogroup), apart from the browser's.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ctui.tui.main", "serve", "--port", "0", "--runs-dir",
                 str(runs), *flags], stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                start_new_session=True)
        deadline = time.monotonic() + 60
        while not (found := re.search(r"open (http://\S+)", log.read_text())):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.close()
                raise RuntimeError(f"ctui serve did not start:\n{log.read_text()}")
            time.sleep(0.1)
        self.url = found.group(1)  # with ?token=
        self.base = self.url.split("?", 1)[0]
        self.port = int(self.base.rsplit(":", 1)[1].strip("/"))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def launch(playwright):
    return playwright.chromium.launch(executable_path=chromium(), headless=True,
                                      args=["--no-sandbox", "--disable-dev-shm-usage"])


class PanelScreen:
    """What one browser tab shows, as lines of text."""

    def __init__(self, page) -> None:
        self.page = page
        self.screen = pyte.Screen(80, 24)
        self.stream = pyte.Stream(self.screen)

    def text(self) -> str:
        from playwright.sync_api import Error

        try:
            text, cols, rows = self.page.evaluate(
                "() => { const s = window.__ctui; const t = s.text; s.text = '';"
                " return [t, s.cols, s.rows]; }")
        except Error:  # the page is navigating: nothing new yet
            return "\n".join(self.screen.display)
        if (rows, cols) != (self.screen.lines, self.screen.columns):
            self.screen.resize(rows, cols)
        self.stream.feed(text)
        return "\n".join(self.screen.display)

    def wait_for(self, check: Callable[[str], bool] | str, timeout: float = 60) -> str:
        test = (lambda text: check in text) if isinstance(check, str) else check
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if test(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"not shown within {timeout}s:\n{text}")
            time.sleep(0.1)

    def press(self, key: str) -> None:
        self.page.focus(".xterm-helper-textarea")
        self.page.keyboard.press(key)


def open_panel(context, url: str) -> PanelScreen:
    page = context.new_page()
    page.add_init_script(CAPTURE)
    page.goto(url)
    return PanelScreen(page)
