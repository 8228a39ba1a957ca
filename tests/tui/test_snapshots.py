"""SVG snapshots of the main screen at 80x24 and 120x40, with a GPU (a fixed H100 reading) and
without one. Update after an intended change with `pytest tests/tui --snapshot-update` and look
at the new SVGs before committing them."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import attached, make_app, until
from standin import panel_events

from ctui.engine.events import Settings, StateChanged, TuneReport

SIZES = {"80x24": (80, 24), "120x40": (120, 40)}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("sample", ["gpu_h100", "no_gpu"])
def test_main_screen(snap_compare, size, sample):
    """Training, with the advisor's advice and TensorBoard in a deep folder: every number
    whole, the advice wrapped, the path cut from the left."""
    app, _ = make_app(sample=sample, script=panel_events())

    async def settle(pilot):
        await attached(pilot, app)
        await until(pilot, lambda: app.model.at is not None and app.model.at.step == 18)
        app.redraw(force=True)
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZES[size], run_before=settle)


def test_reattached_80x24(snap_compare):
    """A panel attached again to a paused run whose autotune result was applied: the history
    brings no dialog back, and the figures are those in force (batch size 128)."""
    report = TuneReport(rows=((64, 0, 393.0, ""), (128, 0, 520.0, "")), best_batch_size=128,
                        best_num_workers=0, seconds=20.0)
    events = panel_events()
    settings = next(e for e in events if isinstance(e, Settings))
    at = events[-1].time
    history = [*events, dataclasses.replace(report, time=at),
               dataclasses.replace(settings, batch_size=128, lr=0.49, time=at),
               StateChanged(state="paused", reason="paused by request", time=at)]
    app, _ = make_app(script=history)

    async def settle(pilot):
        await attached(pilot, app)
        await until(pilot, lambda: app.model.state == "paused")
        app.redraw(force=True)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=settle)


def test_program_run(snap_compare):
    """`ctui run -- python train.py` at 80x24: its state, processes and terminal."""
    from test_program_panel import make_program_app, program_attached

    app, _ = make_program_app(sample="no_gpu")

    async def settle(pilot):
        await program_attached(pilot, app)
        app.redraw(force=True)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=settle)
