"""The control panel inside a notebook: `from ctui.notebook import panel; panel()`.

It starts `ctui serve` in a background process (or reuses the one this kernel started) and
shows the panel in an iframe. The browser showing the notebook must reach the panel's port:
true for a local Jupyter; over SSH forward that port too (`ssh -L 8888:... -L 8080:127.0.0.1:8080
box`). On Colab the page goes through Colab's own port proxy. Training never depends on this
server or the kernel: stopping either leaves the run going.
"""

from __future__ import annotations

import atexit
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["panel", "stop"]

START_SECONDS = 60


@dataclass
class _Server:
    process: subprocess.Popen
    url: str  # with ?token=
    port: int
    runs_dir: str | None


_servers: list[_Server] = []


def panel(runs_dir: str | None = None, port: int = 8080, height: int = 640) -> str:
    """Show the panel inline and return its URL (with the token: keep it to yourself)."""
    server = _reuse(runs_dir, port)
    if server is None:
        try:
            server = _start(runs_dir, port)
        except RuntimeError as error:
            if "in use" not in str(error):
                raise
            server = _start(runs_dir, 0)  # another server holds the port: any free one
            print(f"ctui: port {port} is taken; serving on {server.port} instead")
    token = server.url.split("?", 1)[1]
    if "google.colab" in sys.modules:
        _show_on_colab(server, token, height)
        return server.url
    try:
        from IPython.display import IFrame, display
    except ImportError:
        print(f"ctui: no IPython display here; open {server.url} in a browser")
        return server.url
    display(IFrame(server.url, width="100%", height=height))
    print(f"ctui: the panel is also at {server.url} (it controls your runs: keep the URL to "
          "yourself); if the frame stays blank, this browser cannot reach port "
          f"{server.port}: forward it, e.g. ssh -L {server.port}:127.0.0.1:{server.port} box")
    return server.url


def stop() -> None:
    """Stop the servers this kernel started (training goes on)."""
    while _servers:
        server = _servers.pop()
        if server.process.poll() is None:
            server.process.terminate()
            try:
                server.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.process.kill()


atexit.register(stop)


def _reuse(runs_dir: str | None, port: int) -> _Server | None:
    for server in _servers:
        if server.process.poll() is None and server.runs_dir == runs_dir and \
                port in (0, server.port):
            return server
    return None


def _start(runs_dir: str | None, port: int) -> _Server:
    if port == 0 and "google.colab" in sys.modules:
        port = _free_port()  # Colab's proxy address names the port: it must be known first
    origin = _colab_origin(port) if "google.colab" in sys.modules else None
    command = [sys.executable, "-m", "ctui.tui.main", "serve", "--port", str(port)]
    if runs_dir is not None:
        command += ["--runs-dir", runs_dir]
    if origin is not None:
        command += ["--allow-origin", origin]
    log = Path(tempfile.mkdtemp(prefix="ctui-serve-")) / "serve.log"  # private: holds the token
    with log.open("w") as out:  # a file, not a pipe: a full pipe would stall the server
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + START_SECONDS
    while not (found := re.search(r"open (http://\S+\?token=\S+)", log.read_text())):
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.terminate()
            said = log.read_text().strip().splitlines()
            raise RuntimeError(said[-1] if said else "ctui serve did not start")
        time.sleep(0.1)
    url = found.group(1)
    server = _Server(process, url, int(urlsplit(url).port or port), runs_dir)
    _servers.append(server)
    return server


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _colab_origin(port: int) -> str | None:
    """The origin Colab's port proxy gives the panel, allowed by the server's Origin check."""
    try:
        from google.colab.output import eval_js

        proxied = urlsplit(eval_js(f"google.colab.kernel.proxyPort({port})"))
        return f"{proxied.scheme}://{proxied.netloc}"
    except Exception:  # any failure: _show_on_colab says what to do
        return None


def _show_on_colab(server: _Server, token: str, height: int) -> None:
    try:
        from google.colab import output

        output.serve_kernel_port_as_iframe(server.port, path=f"/?{token}", height=height)
    except Exception as error:  # say what to do instead of a traceback
        print(f"ctui: Colab would not show the panel inline ({error}). In a new cell run:\n"
              "  from google.colab import output\n"
              f"  output.serve_kernel_port_as_window({server.port}, path='/?{token}')\n"
              "and open the link it prints (Colab's port proxy; keep it to yourself).")
