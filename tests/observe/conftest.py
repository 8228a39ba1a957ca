"""Fixtures for the observer's tests: a script's folder, observed or bare."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from programs import Program, private_dir  # noqa: E402


@pytest.fixture
def observed(tmp_path) -> Program:
    return Program(private_dir(tmp_path / "program"), private_dir(tmp_path / "observe"))


@pytest.fixture
def bare(tmp_path) -> Program:
    return Program(private_dir(tmp_path / "bare"), None)
