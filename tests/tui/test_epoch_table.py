"""The epoch table: every epoch a row, the newest in view as epochs come, a user reading older
rows is not pulled back down, and a column grows when a figure needs it."""

from __future__ import annotations

import asyncio

from textual.app import App, ComposeResult

from ctui.engine.events import EpochEnded
from ctui.tui.epoch_table import EpochTable


class TableApp(App):
    def compose(self) -> ComposeResult:
        yield EpochTable()


def epochs(count: int, speed: float = 500.0) -> list[EpochEnded]:
    return [EpochEnded(epoch=n, epochs=99, train_seconds=1.5, samples_per_second=speed,
                       test_loss=0.5, test_accuracy=0.9, batch_size=64)
            for n in range(1, count + 1)]


def visible(table: EpochTable) -> list[str]:
    return [table.render_line(y).text.split()[0] for y in range(1, table.size.height)
            if table.render_line(y).text.strip()]


def test_the_newest_epoch_stays_in_view_until_the_user_scrolls_back():
    async def scenario() -> None:
        app = TableApp()
        async with app.run_test(size=(80, 8)) as pilot:  # a header and 7 rows
            table = app.query_one(EpochTable)
            table.show_epochs(epochs(30))
            await pilot.pause()
            assert table.row_count == 30 and visible(table)[-1] == "30"
            assert table.render_line(0).text.split()[:2] == ["epoch", "train"]  # header stays

            table.focus()
            await pilot.press("up", "up", "pageup")
            await pilot.pause()
            reading = visible(table)
            table.show_epochs(epochs(31))  # a new epoch while reading: the rows stay put
            await pilot.pause()
            assert visible(table) == reading and table.row_count == 31

            await pilot.press("end")  # back to the newest, and following again
            table.show_epochs(epochs(32))
            await pilot.pause()
            assert visible(table)[-1] == "32"

            await pilot.press("home")
            await pilot.pause()
            assert visible(table)[0] == "1"

    asyncio.run(scenario())


def test_a_figure_wider_than_its_column_widens_it_for_every_row():
    async def scenario() -> None:
        app = TableApp()
        async with app.run_test(size=(100, 8)) as pilot:
            table = app.query_one(EpochTable)
            table.show_epochs(epochs(2, speed=500))
            table.show_epochs([*epochs(2, speed=500),
                               *[EpochEnded(epoch=3, samples_per_second=12_345_678.0)]])
            await pilot.pause()
            lines = [table.render_line(y).text.rstrip() for y in range(4)]
            ends = {line.index("samples/s") + len("samples/s") for line in lines[:1]}
            assert "12,345,678" in lines[3]
            # every row's figure ends where the header's label ends: right-aligned, one column
            assert {lines[y].index(word) + len(word) for y, word in
                    ((1, "500"), (2, "500"), (3, "12,345,678"))} == ends

    asyncio.run(scenario())


def test_epochs_replaced_by_a_resume_are_drawn_anew():
    async def scenario() -> None:
        app = TableApp()
        async with app.run_test(size=(100, 8)) as pilot:
            table = app.query_one(EpochTable)
            # figures no wider than the labels (a program's epochs: no loss or accuracy)
            def bare(count, speed):
                return [EpochEnded(epoch=n, samples_per_second=speed, test_loss=None,
                                   batch_size=64) for n in range(1, count + 1)]

            table.show_epochs(bare(3, speed=900))
            table.show_epochs(bare(2, speed=400))  # a resume from epoch 2's checkpoint
            await pilot.pause()
            assert table.row_count == 2
            rows = [table.render_line(y).text for y in (1, 2, 3)]
            assert "400" in rows[0] and "400" in rows[1] and not rows[2].strip()
            assert "900" not in "".join(rows)

    asyncio.run(scenario())
