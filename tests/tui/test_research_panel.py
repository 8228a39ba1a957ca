"""A research task's own figures in the panel: the best checkpoint, epochs without a test
loss, and the task's metrics as table columns and on the plot."""

from __future__ import annotations

import asyncio
import dataclasses

from conftest import attached, make_app, shown
from standin import mid_run_events

from ctui.engine.events import BestCheckpoint, EpochEnded
from ctui.tui.epoch_plot import judged_by
from ctui.tui.epoch_table import EpochTable

SIZE = (80, 24)


def research_events() -> list:
    """The recorded run, as a change-detection task: F1 and IoU, no accuracy, and epoch 2
    not evaluated (--val-every 2 would skip epoch 1; here epoch 1 has no test loss)."""
    events = []
    for event in mid_run_events():
        if isinstance(event, EpochEnded):
            event = dataclasses.replace(
                event, test_accuracy=None,
                test_loss=None if event.epoch == 1 else event.test_loss,
                metrics=(("f1", 0.5 + 0.1 * event.epoch), ("iou", 0.3 + 0.1 * event.epoch)))
            events.append(event)
            events.append(BestCheckpoint(monitor="f1", mode="max", value=0.5 + 0.1 * event.epoch,
                                         epoch=event.epoch, path="checkpoints/ckpt-best.pt",
                                         time=event.time))
            continue
        events.append(event)
    return events


def test_best_figure_metrics_columns_and_missing_test_loss_are_shown():
    app, _ = make_app(script=research_events())

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await attached(pilot, app)
            assert "best f1 0.7 @2" in shown(app.query_one("#training"))
            table = app.query_one(EpochTable)
            assert table.column_labels[-2:] == ("f1", "iou")
            first, second = (table.get_row_at(row) for row in range(2))
            assert str(first[5]) == "–" and str(second[5]) != "–"  # epoch 1: no test loss
            assert [str(cell) for cell in second[-2:]] == ["0.7", "0.5"]
            assert judged_by(app.model.epochs)[0] == "f1"  # the plot's right axis
    asyncio.run(test())
