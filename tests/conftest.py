"""Shared fixtures: every test gets its own runs folder and never touches ./runs or the network."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_runs(tmp_path, monkeypatch) -> Iterator[Path]:
    runs = tmp_path / "runs"
    monkeypatch.setenv("CTUI_RUNS", str(runs))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield runs
    if runs.exists():
        _kill_hosts_of(runs)


def _kill_hosts_of(runs: Path) -> None:
    """A test that failed half-way may leave a detached run host (and its program) running for
    ever: end any process started for a run in this test's runs folder, with its children."""
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        if not any(str(runs) in arg for arg in process.info["cmdline"] or ()):
            continue
        try:
            family = [process, *process.children(recursive=True)]
        except psutil.Error:
            continue
        for member in family:
            try:
                member.kill()
            except psutil.Error:
                pass
