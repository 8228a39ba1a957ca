"""A second local user for the attacks that need one (root only: tests run as root in CI)."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
from collections.abc import Iterator

import pytest


@pytest.fixture
def other_user() -> Iterator[pwd.struct_passwd]:
    """A throwaway user, removed afterwards; skipped where the test cannot make one."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd to act as a second user")
    name = f"ctuitest{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name], check=True,
                   capture_output=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], capture_output=True)
