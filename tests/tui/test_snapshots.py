"""SVG snapshots of the main screen at 80x24 and 120x40, with a GPU (a fixed H100 reading) and
without one. Update after an intended change with `pytest tests/tui --snapshot-update` and look
at the new SVGs before committing them."""

from __future__ import annotations

import pytest
from conftest import attached, make_app

SIZES = {"80x24": (80, 24), "120x40": (120, 40)}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("sample", ["gpu_h100", "no_gpu"])
def test_main_screen(snap_compare, size, sample):
    app, _ = make_app(sample=sample)

    async def settle(pilot):
        await attached(pilot, app)

    assert snap_compare(app, terminal_size=SIZES[size], run_before=settle)


def test_program_run(snap_compare):
    """`ctui run -- python train.py` at 80x24: its state, processes and terminal."""
    from test_program_panel import make_program_app, program_attached

    app, _ = make_program_app(sample="no_gpu")

    async def settle(pilot):
        await program_attached(pilot, app)
        app.redraw(force=True)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=settle)
