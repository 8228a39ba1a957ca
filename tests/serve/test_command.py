"""`ctui serve`'s options: bad ones are one line and exit code 2; the password file is trusted
only when it is a private regular file of the user's; a public bind says who can now reach it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from ctui.tui.main import main as ctui_main
from ctui.tui.serve.command import read_password

from helpers import REPO


class Result:
    def __init__(self, returncode: int, stderr: str) -> None:
        self.returncode, self.stderr = returncode, stderr


@pytest.fixture
def serve(capsys):
    """`ctui serve ARGS` in this process, for options refused before anything is bound."""
    def run(*args: str) -> Result:
        try:
            code = ctui_main(["serve", *args])
        except SystemExit as exit_info:
            code = exit_info.code
        return Result(code, capsys.readouterr().err)

    return run


def one_line_usage_error(result, *words: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize("args, words", [
    (["--port", "70000"], ["--port 70000", "65535"]),
    (["--port", "eight"], ["--port", "int"]),
    (["--host", "no.such.host.invalid"], ["--host", "0.0.0.0"]),
    (["--allow-origin", "ftp://x"], ["--allow-origin", "scheme://host"]),
    (["--password-file", "/nonexistent/pw"], ["--password-file /nonexistent/pw"]),
])
def test_bad_options_are_one_line(args, words, serve):
    one_line_usage_error(serve(*args), *words)


def write(path, text: str, mode: int = 0o600):
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_a_private_password_file_is_read(tmp_path):
    assert read_password(str(write(tmp_path / "pw", "correct horse battery\n"))) == \
        "correct horse battery"


def test_a_password_file_others_can_read_is_refused(tmp_path, serve):
    password = write(tmp_path / "pw", "correct horse battery\n", 0o644)
    one_line_usage_error(serve("--password-file", str(password)), "mode 644", "600")


def test_a_linked_or_special_password_file_is_refused(tmp_path, serve):
    target = write(tmp_path / "pw", "correct horse battery\n")
    (tmp_path / "link").symlink_to(target)
    one_line_usage_error(serve("--password-file", str(tmp_path / "link")), "symbolic link")
    os.mkfifo(tmp_path / "fifo", 0o600)
    one_line_usage_error(serve("--password-file", str(tmp_path / "fifo")), "not a regular file")


def test_a_short_or_huge_password_file_is_refused(tmp_path, serve):
    short, big = write(tmp_path / "short", "abc"), write(tmp_path / "big", "x" * 10_000)
    one_line_usage_error(serve("--password-file", str(short)), "at least 8")
    one_line_usage_error(serve("--password-file", str(big)), "larger than 4096")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the file to another user")
def test_a_password_file_of_another_user_is_refused(tmp_path, serve):
    password = write(tmp_path / "pw", "correct horse battery\n")
    os.chown(password, 54321, 54321)
    one_line_usage_error(serve("--password-file", str(password)), "uid 54321")


def wait_for_text(path, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = path.read_text()
        if text in seen:
            return seen
        time.sleep(0.1)
    return path.read_text()


def test_a_public_bind_warns_and_prints_the_url_once(tmp_path):
    out, err = tmp_path / "out", tmp_path / "err"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "ctui.tui.main", "serve", "--host", "0.0.0.0", "--port", "0",
             "--runs-dir", str(tmp_path)], stdout=stdout, stderr=stderr, cwd=REPO)
    try:
        printed = wait_for_text(out, "Ctrl+C")
        warning = wait_for_text(err, "warning")
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "warning: listening on 0.0.0.0" in warning and "anyone who can reach" in warning
    assert printed.count("?token=") == 1 and "http://127.0.0.1:" in printed


def test_serving_and_the_notebook_load_no_torch():
    """The server and the notebook helper start fast: no torch (and no Textual for the notebook
    module, which only starts a process)."""
    code = ("import json, sys, ctui.notebook; before = 'textual' in sys.modules; "
            "import ctui.tui.serve.command, ctui.tui.serve.server, ctui.tui.serve.session; "
            "print(json.dumps([before, 'torch' in sys.modules]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.stdout.strip() == "[false, false]", result.stderr
