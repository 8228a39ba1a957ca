"""`ctui serve`: check the options, bind, print the URL with its token once, serve."""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import secrets
import shlex
import socket
import stat
import sys
from pathlib import Path
from urllib.parse import urlsplit

from ctui.engine.cli.errors import EXIT_FAILED, EXIT_USAGE, Parser, fail

MAX_PASSWORD_FILE = 4096
MIN_PASSWORD = 8
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def build_parser() -> Parser:
    parser = Parser(prog="ctui serve", description=(
        "Serve the control panel to a browser. Each tab is a panel of its own on the live run "
        "(several tabs and terminals can watch and control it at once). Every visitor needs "
        "the token printed at start (or the --password-file password)."))
    parser.add_argument("--port", type=int, default=8080, metavar="N",
                        help="TCP port, 0 for any free one (default 8080)")
    parser.add_argument("--host", default="127.0.0.1", metavar="ADDR",
                        help="address to listen on (default 127.0.0.1: this machine only; "
                        "reach it from your laptop with `ssh -L 8080:127.0.0.1:8080 box`)")
    parser.add_argument("--password-file", metavar="FILE", help="a password to type in instead "
                        "of the printed token: a file of yours, not readable by group or others")
    parser.add_argument("--runs-dir", metavar="DIR",
                        help="folder holding the runs (default: $CTUI_RUNS, else ./runs)")
    parser.add_argument("--allow-origin", action="append", default=[], metavar="URL",
                        help="another origin allowed to open the panel (a proxy's "
                        "https://name:port); may repeat")
    return parser


def read_password(path: str) -> str:
    """The password in FILE: a regular file of this user's, private, small; never a link."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as error:
        why = "is a symbolic link" if error.errno == errno.ELOOP else error.strerror
        fail(f"--password-file {path}: {why}; give a regular file of yours (chmod 600)",
             EXIT_USAGE)
    try:
        info = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(info.st_mode):
            problem = "is not a regular file"
        elif info.st_uid != os.geteuid():
            problem = f"belongs to uid {info.st_uid}, not to you"
        elif info.st_mode & 0o077:
            problem = f"has mode {stat.S_IMODE(info.st_mode):o}: group or others may use it"
        elif info.st_size > MAX_PASSWORD_FILE:
            problem = f"is larger than {MAX_PASSWORD_FILE} bytes"
        if problem:
            fail(f"--password-file {path} {problem}; use a file of yours with mode 600",
                 EXIT_USAGE)
        data = os.read(fd, MAX_PASSWORD_FILE + 1)
    finally:
        os.close(fd)
    try:
        password = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        fail(f"--password-file {path} is not UTF-8 text", EXIT_USAGE)
    if len(password) < MIN_PASSWORD or "\n" in password:
        fail(f"--password-file {path}: the password must be one line of at least "
             f"{MIN_PASSWORD} characters", EXIT_USAGE)
    return password


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_origins(origins: list[str]) -> frozenset[str]:
    good = set()
    for origin in origins:
        parts = urlsplit(origin.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            fail(f"--allow-origin {origin!r}: give scheme://host[:port], e.g. "
                 "https://u1234-8080.proxy.example", EXIT_USAGE)
        good.add(f"{parts.scheme}://{parts.netloc.lower()}")
    return frozenset(good)


def bind(host: str, port: int) -> socket.socket:
    if not 0 <= port <= 65535:
        fail(f"--port {port}: use 0 (any free port) to 65535", EXIT_USAGE)
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except socket.gaierror:
        fail(f"--host {host!r} is not an address of this machine; e.g. 127.0.0.1 or 0.0.0.0",
             EXIT_USAGE)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            fail(f"port {port} on {host} is in use; choose another with --port (0: any free "
                 "one)", EXIT_USAGE)
        fail(f"cannot listen on {host}:{port}: {error.strerror}", EXIT_FAILED)


def panel_command(runs_dir: Path) -> str:
    """What textual-serve runs for each browser session (a shell line: quoted)."""
    return shlex.join([sys.executable, "-m", "ctui.tui.serve.session",
                       "--runs-dir", str(runs_dir)])


def warn_public(host: str, port: int) -> None:
    print(f"ctui serve: warning: listening on {host}, not 127.0.0.1: anyone who can reach "
          f"port {port} of this machine (its network, other users of a shared box, the "
          "internet if the port is open or forwarded) can reach the panel, and only the token "
          "keeps them out; the traffic is not encrypted unless a proxy adds https. Prefer "
          f"the default and `ssh -L {port}:127.0.0.1:{port} box`.", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    options = build_parser().parse_args(argv)
    password = read_password(options.password_file) if options.password_file else None
    origins = check_origins(options.allow_origin)
    from ctui.engine.config import default_runs_dir

    runs_dir = Path(options.runs_dir or default_runs_dir()).resolve()
    sock = bind(options.host, options.port)
    port = sock.getsockname()[1]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s ctui serve: %(message)s",
                        stream=sys.stderr)
    from ctui.engine.scheduling import defer_to_training

    from .guard import Guard
    from .server import PanelServer

    defer_to_training()  # the server and the panels it starts, one per browser tab

    loopback = is_loopback(options.host)
    guard = Guard(secret=password or secrets.token_urlsafe(32), cookie_name=f"ctui-{port}",
                  loopback=loopback, extra_origins=origins)
    if not loopback:
        warn_public(options.host, port)
    where = options.host if loopback else "127.0.0.1"
    where = f"[{where}]" if ":" in where else where
    if password is None:
        print(f"ctui serve: open http://{where}:{port}/?token={guard.secret}", flush=True)
        print("ctui serve: anyone with this URL controls your runs; keep it to yourself",
              flush=True)
    else:
        print(f"ctui serve: open http://{where}:{port}/ and enter the password of "
              f"{options.password_file}", flush=True)
    print(f"ctui serve: runs in {runs_dir}; Ctrl+C stops serving (training goes on)", flush=True)
    PanelServer(panel_command(runs_dir), guard).run(sock)
    return 0
