"""The autotune dialog shows each setting's median, range and number of timings, why the pick was
made, and says "keep" when the differences were within the noise."""

from __future__ import annotations

import asyncio

from textual.app import App
from textual.widgets import DataTable, Static

from ctui.engine.events import TuneReport
from ctui.tui.tune_screen import TuneScreen

ROWS = ((64, 0, 400.0, ""), (64, 2, 410.0, ""), (128, 0, 0.0, "out of memory"))
SPREADS = ((380.0, 420.0, 3), (395.0, 430.0, 5), (0.0, 0.0, 0))


def shown(report: TuneReport) -> tuple[list[list[str]], str]:
    """The dialog's table cells and its text, at 80x24."""

    async def look():
        app = App()
        async with app.run_test(size=(80, 24)) as pilot:
            app.push_screen(TuneScreen(report))
            await pilot.pause()
            table = app.screen.query_one(DataTable)
            cells = [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]
            text = " ".join(str(static.render()) for static in app.screen.query(Static)
                            if not static.has_class("buttons"))
            return cells, text

    return asyncio.run(look())


def test_within_noise_the_dialog_offers_to_keep_the_current_settings():
    report = TuneReport(rows=ROWS, spreads=SPREADS, best_batch_size=64, best_num_workers=0,
                        summary="input-bound (60% data wait in the first trial): workers 0 "
                        "(differences within the noise)", seconds=30.0)
    cells, text = shown(report)
    assert cells[0] == ["64", "0", "400", "380-420", "3", "keep"]
    assert cells[1] == ["64", "2", "410", "395-430", "5", ""]
    assert cells[2][-1] == "out of memory" and cells[2][3] == ""
    assert "differences within the noise" in text
    assert "Keep the current settings: batch size 64, 0 workers." in text


def test_a_clear_winner_is_offered_as_the_best():
    report = TuneReport(rows=ROWS[:2], spreads=((100.0, 110.0, 3), (395.0, 430.0, 3)),
                        best_batch_size=64, best_num_workers=2, seconds=30.0,
                        summary="workers 2 is faster beyond the noise")
    cells, text = shown(report)
    assert cells[1][-1] == "best" and cells[0][-1] == ""
    assert "Apply the best: batch size 64, 2 workers?" in text


def test_a_report_without_spreads_still_shows():
    cells, _ = shown(TuneReport(rows=((32, 1, 500.0, ""),), best_batch_size=32,
                                best_num_workers=1, seconds=5.0))
    assert cells == [["32", "1", "500", "", "", "keep"]]
