"""The runs view (`l`): the runs of the runs folder with their differing settings highlighted,
marked with space and overlaid with enter. Pilot tests, and SVG snapshots at 80x24 and 120x40
(update with `pytest tests/tui/test_runs_view.py --snapshot-update`, look at the SVGs, delete
snapshot_report.html)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import asyncio, attached, make_app, shown, until
from test_compare import T0, epoch, recorded_runs, write_run
from textual.widgets import DataTable

from ctui.tui.app import Launch
from ctui.tui.help_screen import HelpScreen
from ctui.tui.runs_view import RunsScreen
from ctui.tui.runs_view_overlay import MARKERS, OverlayScreen, legend_text, overlay_text

SIZES = {"80x24": (80, 24), "120x40": (120, 40)}


@pytest.fixture
def runs_app(tmp_path, monkeypatch):
    """The panel on the recorded run, its runs folder ./runs holding the recorded runs of
    test_compare (three digits runs and a program run); a relative path, so snapshots read
    the same everywhere."""
    monkeypatch.chdir(tmp_path)
    recorded_runs(Path("runs"))
    return make_app(launch=Launch(mode="auto", runs_dir=Path("runs")))


async def open_runs(pilot, app) -> RunsScreen:
    await attached(pilot, app)
    await pilot.press("l")
    await until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.loaded)
    return app.screen


async def open_overlay(pilot, app) -> OverlayScreen:
    await open_runs(pilot, app)
    await pilot.press("space", "space", "enter")  # the first two runs
    await until(pilot, lambda: isinstance(app.screen, OverlayScreen)
                and app.screen.drawn is not None)
    return app.screen


def test_l_lists_the_runs_with_their_differing_settings(runs_app):
    app, _ = runs_app

    async def test():
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await open_runs(pilot, app)
            table = screen.query_one(DataTable)
            assert [str(table.get_row_at(row)[1]) for row in range(table.row_count)] == [
                "digits-bs64", "digits-bs128-w2", "digits-live", "run-train"]
            columns = [str(column.label) for column in table.columns.values()]
            assert columns[2:5] == ["*batch_size", "*epochs", "*num_workers"]  # config.json order
            assert "*lr" not in columns  # the same in every run that records it
            live = [str(cell) for cell in table.get_row_at(2)]
            assert live[2] == "64→128" and "interrupted" in live
            assert "acc 93.00% @3" in [str(cell) for cell in table.get_row_at(0)]
            await pilot.press("q")
            await until(pilot, lambda: not isinstance(app.screen, RunsScreen))
            assert app.is_running  # q leaves the list, not the panel
    asyncio.run(test())


def test_space_marks_and_enter_overlays_the_marked_runs(runs_app):
    app, backend = runs_app

    async def test():
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_runs(pilot, app)
            await pilot.press("space", "enter")
            await pilot.pause()
            assert isinstance(app.screen, RunsScreen)  # one run is no comparison
            await pilot.press("down", "space")  # digits-live, marked second
            assert [Path(folder).name for folder in screen.marked] == ["digits-bs64",
                                                                        "digits-live"]
            await pilot.press("p", "x")  # the panel's keys do nothing while the list is open
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, OverlayScreen))
            overlay = app.screen
            assert [run.name for run in overlay.comparison.runs] == ["digits-bs64",
                                                                     "digits-live"]
            legend = shown(overlay.query_one("#overlay-legend"))
            assert "digits-bs64  batch_size=64  epochs=3" in legend
            assert "digits-live  batch_size=64→128  epochs=4" in legend
            await until(pilot, lambda: overlay.drawn is not None)
            plots = shown(overlay.query_one("#overlay-plot"))
            for title in ("seconds per epoch", "samples/s", "test loss", "accuracy %"):
                assert title in plots
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is screen)
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, RunsScreen))
        assert backend.connection.sent == []
    asyncio.run(test())


def test_an_unreadable_run_is_listed_and_cannot_be_marked(runs_app):
    app, _ = runs_app
    os.chmod(Path("runs") / "digits-live", 0o777)

    async def test():
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_runs(pilot, app)
            table = screen.query_one(DataTable)
            row = [str(cell) for cell in table.get_row_at(2)]
            assert row[1] == "digits-live" and "unreadable" in row
            await pilot.press("down", "down", "space")
            assert screen.marked == []
            detail = " ".join(shown(screen.query_one("#runs-detail")).split())
            assert "cannot read it: run folder runs/digits-live is writable by other" in detail
    asyncio.run(test())


def test_names_from_disk_are_shown_as_they_are_never_as_markup(runs_app):
    app, _ = runs_app
    write_run(Path("runs"), "[b]evil", T0 + 300, [epoch(1.0, 10, 0.5, 0.5)], batch_size=7)

    async def test():
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await open_runs(pilot, app)
            await pilot.press(*["down"] * 4)  # the crafted run, the newest
            await pilot.pause()
            assert shown(screen.query_one(DataTable)).splitlines()[5].split()[:2] == [
                "[b]evil", "7"]
            assert shown(screen.query_one("#runs-detail")).startswith("[b]evil  finished")
    asyncio.run(test())


def test_an_empty_runs_folder_says_so(tmp_path):
    app, _ = make_app(launch=Launch(mode="auto", runs_dir=tmp_path / "none"))

    async def test():
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_runs(pilot, app)
            assert "No runs in" in shown(screen.query_one("#runs-note"))
            await pilot.press("enter")  # nothing to compare: a warning, no error
            assert isinstance(app.screen, RunsScreen)
    asyncio.run(test())


def test_r_reads_the_runs_again_keeping_marks_and_cursor(runs_app):
    app, _ = runs_app

    async def test():
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_runs(pilot, app)
            table = screen.query_one(DataTable)
            await pilot.press("space", "down")  # digits-bs64 marked, digits-live highlighted
            write_run(Path("runs"), "digits-new", T0 + 300, [epoch(1.0, 10, 0.5, 0.5)])
            await pilot.press("r")
            await until(pilot, lambda: table.row_count == 5)
            assert screen._cursor_run().name == "digits-live"
            assert [Path(folder).name for folder in screen.marked] == ["digits-bs64"]
            assert str(table.get_row_at(0)[0]) == "✓"
    asyncio.run(test())


def test_a_phone_sized_window_still_lists_and_overlays(runs_app):
    app, _ = runs_app

    async def test():
        async with app.run_test(size=(48, 30)) as pilot:
            overlay = await open_overlay(pilot, app)
            plots = shown(overlay.query_one("#overlay-plot"))
            assert "seconds per epoch" in plots and "accuracy %" in plots
            assert overlay.drawn[0] >= 44
    asyncio.run(test())


def test_l_is_in_the_help(runs_app):
    app, _ = runs_app

    async def test():
        async with app.run_test(size=(80, 40)) as pilot:
            await attached(pilot, app)
            await pilot.press("question_mark")
            await until(pilot, lambda: isinstance(app.screen, HelpScreen))
            assert "List the runs in the runs folder" in shown(app.screen.query_one("Static"))
    asyncio.run(test())


def test_without_colour_runs_differ_by_marker(tmp_path):
    from ctui.engine.compare import compare, summarize_all

    comparison = compare(summarize_all(recorded_runs(tmp_path / "runs"))[:2])
    plot = overlay_text(comparison.runs, 80, 20, color=False)
    assert MARKERS[0] in plot.plain and MARKERS[1] in plot.plain and not plot.spans
    legend = legend_text(comparison, color=False).plain.splitlines()
    assert legend[0].startswith(f"{MARKERS[0]}  digits-bs64")
    assert legend[1].startswith(f"{MARKERS[1]}  digits-bs128-w2")


# ---------------------------------------------------------------- snapshots


@pytest.mark.parametrize("size", SIZES)
def test_runs_view_snapshot(snap_compare, runs_app, size):
    app, _ = runs_app

    async def settle(pilot):
        await open_runs(pilot, app)
        await pilot.press("space", "space")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZES[size], run_before=settle)


@pytest.mark.parametrize("size", SIZES)
def test_overlay_snapshot(snap_compare, runs_app, size):
    app, _ = runs_app

    async def settle(pilot):
        await open_overlay(pilot, app)
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZES[size], run_before=settle)
