"""Shared helpers for the panel's tests: an app wired to the scripted stand-in."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from standin import (  # noqa: E402
    RUN_NAME,
    FixedTelemetry,
    ScriptedBackend,
    live_run,
    mid_run_events,
    snapshot,
)

from ctui.tui.app import CtuiApp, Launch  # noqa: E402

# One second after the last recorded event: checkpoint ages read the same on every machine.
FIXED_NOW = 1795779260.0


def make_app(script=None, runs=None, sample: str = "no_gpu", launch: Launch | None = None,
             **kwargs) -> tuple[CtuiApp, ScriptedBackend]:
    backend = ScriptedBackend(runs=[live_run()] if runs is None else runs,
                              scripts={RUN_NAME: mid_run_events() if script is None else script})
    kwargs.setdefault("telemetry", lambda emit: FixedTelemetry(emit, snapshot(sample)
                                                               if sample else None))
    app = CtuiApp(launch or Launch(mode="auto", runs_dir=Path("runs")), backend=backend,
                  clock=lambda: FIXED_NOW, **kwargs)
    return app, backend


async def until(pilot, condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Let the app process messages until condition() holds (events arrive from a thread)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the panel")
        await pilot.pause(0.02)
    await pilot.pause()


async def attached(pilot, app: CtuiApp) -> None:
    """Wait for the recorded run to be on screen."""
    await until(pilot, lambda: app.model.step is not None and app.model.step.epoch == 3
                and app.model.step.step == 15 and app.model.telemetry is not None)
    app.redraw(force=True)
    await pilot.pause()


def shown(widget) -> str:
    """The widget's text as drawn on the screen."""
    from textual.geometry import Region

    width, height = widget.size
    return "\n".join(strip.text for strip in widget.render_lines(Region(0, 0, width, height)))


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    """Log timestamps print in local time: make it the same everywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


__all__ = ["FIXED_NOW", "RUN_NAME", "attached", "asyncio", "make_app", "shown", "until"]
