"""What the panel shows must be true and readable (issue 16, items 5-11): the learning rate in
force, progress that follows the real position, every number whole at 80x24, dialogs that
come only when asked for, edits kept with the run, worker counts, one line per key."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
from types import SimpleNamespace

from conftest import RUN_NAME, attached, make_app, until
from standin import (
    LONG_TENSORBOARD_DIR,
    events_until,
    live_run,
    mid_run_events,
    panel_events,
    recorded_events,
)
from textual.geometry import Region
from textual.widgets import Input

from ctui.engine.events import (
    LogLine,
    Position,
    SetBatchSize,
    Settings,
    Tune,
    TuneReport,
)
from ctui.engine.runs import NEXT_FILE, read_next_settings
from ctui.engine.telemetry import HostSampler
from ctui.tui.app import ROUTINE_SECONDS
from ctui.tui.confirm_screen import ChoiceScreen
from ctui.tui.edit_screen import EditScreen
from ctui.tui.host_panel import worker_count
from ctui.tui.log_pane import LogPane
from ctui.tui.model import RunModel
from ctui.tui.tune_screen import TuneScreen

SMALL = (80, 24)


def run(test) -> None:
    asyncio.run(test())


def flat(text: str) -> str:
    """The words of a pane, whatever the line breaks."""
    return " ".join(text.split())


def drawn(widget) -> str:
    """The widget as drawn, border and padding included (conftest's `shown` covers only the
    content's size from the widget's corner, so it misses the last row and column)."""
    width, height = widget.outer_size
    return "\n".join(strip.text for strip in widget.render_lines(Region(0, 0, width, height)))


def training_text(app) -> str:
    app.redraw(force=True)
    return drawn(app.query_one("#training"))


async def settled_training_text(pilot, app) -> str:
    """The pane once its height has followed what was drawn (it grows with the advice)."""
    app.redraw(force=True)
    await pilot.pause(0.1)
    await pilot.pause()
    return drawn(app.query_one("#training"))


# ---------------------------------------------------------------- 5: the learning rate in force


def test_the_learning_rate_shown_is_the_one_in_force_once_an_epoch_ends():
    events = [e for e in mid_run_events() if not (e.kind == "step" and e.epoch == 3)]
    settings = next(e for e in events if isinstance(e, Settings))
    # epoch 2 trained at 0.7; the engine sends the decayed rate as the epoch ends
    events.append(dataclasses.replace(settings, lr=0.49))
    app, _ = make_app(script=events)

    async def test():
        async with app.run_test(size=SMALL) as pilot:
            await until(pilot, lambda: app.model.lr == 0.49)
            assert app.model.step.epoch == 2  # no step of epoch 3 logged yet
            assert "lr 0.49" in training_text(app)
    run(test)


# ---------------------------------------------------------------- 6: progress follows the position


def test_progress_and_eta_follow_positions_between_logged_steps():
    app, backend = make_app()

    async def test():
        async with app.run_test(size=SMALL) as pilot:
            await attached(pilot, app)
            assert "step 15/23" in training_text(app)
            backend.connection.emit(Position(epoch=3, step=21, steps_in_epoch=23,
                                             samples_seen=1344, samples_in_epoch=1437))
            await until(pilot, lambda: app.model.at.step == 21)
            text = training_text(app)
            assert "step 21/23" in text and "94%" in text
            # 93 samples left at the latest logged 393 samples/s: well under a second
            assert app.model.epoch_seconds_left() == 93 / app.model.step.samples_per_second
    run(test)


def test_the_bar_follows_each_position_on_its_own_at_the_next_frame():
    """Progress alone is redrawn at most once a frame (the panel's CPU is the training's): the
    newest position of a burst still reaches the screen, at the next frame, without any other
    event."""
    app, backend = make_app()

    async def test():
        async with app.run_test(size=SMALL) as pilot:
            await attached(pilot, app)
            shown = lambda: drawn(app.query_one("#training"))  # noqa: E731
            for step in (19, 20, 21, 22):
                backend.connection.emit(Position(epoch=3, step=step, steps_in_epoch=23,
                                                 samples_seen=64 * step,
                                                 samples_in_epoch=1437))
            await until(pilot, lambda: "step 22/23" in shown(), timeout=ROUTINE_SECONDS + 0.5)
    run(test)


def test_a_telemetry_sample_alone_updates_the_gauges():
    """Samples redraw only the GPU and host panes (the rest has not changed): they must still
    show each new sample, with no run event in between."""
    from standin import busier_snapshot

    from ctui.tui.messages import TelemetrySampled

    app, _ = make_app()

    async def test():
        async with app.run_test(size=SMALL) as pilot:
            await attached(pilot, app)
            busier = busier_snapshot()
            app.post_message(TelemetrySampled(busier))
            await until(pilot, lambda: "7.25" in drawn(app.query_one("#host")),
                        timeout=ROUTINE_SECONDS + 0.5)
    run(test)


def test_the_next_epoch_is_not_shown_as_the_last_one_finished():
    app, backend = make_app(script=events_until(lambda e: e.kind == "epoch" and e.epoch == 2))

    async def test():
        async with app.run_test(size=SMALL) as pilot:
            await until(pilot, lambda: len(app.model.epochs) == 2)
            backend.connection.emit(Position(epoch=3, step=11, steps_in_epoch=23,
                                             samples_seen=704, samples_in_epoch=1437))
            await until(pilot, lambda: app.model.current_epoch == 3)
            text = training_text(app)
            assert "epoch 3/3  step 11/23" in text and "49%" in text
            assert "100%" not in text
    run(test)


def test_a_resumed_epoch_counts_from_where_it_stopped():
    model = RunModel()
    model.apply(Position(epoch=4, step=9, steps_in_epoch=12, samples_seen=576,
                         samples_in_epoch=768))
    assert model.fraction == 0.75 and (model.at.step, model.at.steps_in_epoch) == (9, 12)


# ---------------------------------------------------------------- 7: every number whole at 80x24


def test_every_number_in_the_training_pane_is_whole_at_80x24():
    app, _ = make_app(script=panel_events())

    async def test():
        async with app.run_test(size=SMALL) as pilot:
            await attached(pilot, app)
            await until(pilot, lambda: app.model.advice is not None)
            text = await settled_training_text(pilot, app)
            words = flat(text)
            for figure in ("step 18/23", "80%", "393 samples/s", "wait 0%", "loss 0.3848",
                           "bs 64", "workers 0", "cpu fp32", "lr 0.49", "ckpt 34s ago",
                           "epoch 3 step 46"):
                assert figure in words, figure
            # the advisor wraps instead of being cut
            assert flat(app.model.advice.message) in words
            # a long path loses its start, never its end
            assert LONG_TENSORBOARD_DIR.endswith(re.search(r"TB …(\S+)", text).group(1))
            # nothing is cut with an ellipsis but the path
            assert text.count("…") == 1
    run(test)


def test_log_lines_lose_no_characters_under_the_scrollbar():
    app, _ = make_app()
    digits = "0123456789" * 15  # one long word: folded at exactly the width it is given

    async def test():
        async with app.run_test(size=SMALL) as pilot:
            await attached(pilot, app)
            for i in range(12):  # more lines than the pane has rows: its scrollbar shows
                app.model.new_log.append(LogLine(message=f"filler {i}", time=0))
            app.model.new_log.append(LogLine(message=digits, time=0))
            app.redraw(force=True)
            log = app.query_one(LogPane)
            await pilot.pause()
            log.scroll_end(animate=False)
            await pilot.pause()
            assert log.show_vertical_scrollbar
            width = log.scrollable_content_region.width
            lines = [line.rstrip() for line in log.text.splitlines()]
            # each line fits left of the scrollbar, and the long one is all there
            assert max(len(line) for line in lines) <= width
            assert digits in "".join(lines[-3:]).replace("00:00:00 ", "")
    run(test)


# ---------------------------------------------------------------- 8: dialogs only when asked for


def test_reattaching_does_not_bring_back_an_applied_tune_dialog():
    report = TuneReport(rows=((64, 0, 400.0, ""), (128, 0, 500.0, "")), best_batch_size=128,
                        best_num_workers=0, seconds=20.0)
    settings = next(e for e in recorded_events() if isinstance(e, Settings))
    history = [*mid_run_events(), report, dataclasses.replace(settings, batch_size=128)]
    app, _ = make_app(script=history)

    async def test():
        async with app.run_test(size=SMALL) as pilot:
            await until(pilot, lambda: app.model.tune_report is not None)
            await pilot.pause(0.3)
            assert not isinstance(app.screen, TuneScreen)
    run(test)


def test_a_tune_started_elsewhere_opens_no_dialog_and_q_quits_from_one_asked_for():
    app, backend = make_app()
    report = TuneReport(rows=((32, 1, 500.0, ""),), best_batch_size=32, best_num_workers=1,
                        seconds=5.0)

    async def test():
        async with app.run_test(size=SMALL) as pilot:
            await attached(pilot, app)
            backend.connection.emit(report)  # `ctui tune` in another shell
            await until(pilot, lambda: app.model.tune_report is not None)
            await pilot.pause(0.3)
            assert not isinstance(app.screen, TuneScreen)
            await pilot.press("t")
            backend.connection.emit(report)
            await until(pilot, lambda: isinstance(app.screen, TuneScreen))
            await pilot.press("q")  # quits from the dialog: the usual quit question
            await until(pilot, lambda: isinstance(app.screen, ChoiceScreen))
            assert backend.connection.sent == [Tune()]  # nothing applied
    run(test)


# ---------------------------------------------------------------- 9: edits kept with the run


def test_edits_for_the_next_run_are_kept_with_the_run_and_resume_uses_them(tmp_path):
    run_dir = tmp_path / RUN_NAME
    run_dir.mkdir(mode=0o700)
    (run_dir / "config.json").write_text(json.dumps({"config": {"task": "digits",
                                                                "epochs": 3}}))
    runs = [dataclasses.replace(live_run(), run_dir=run_dir)]
    app, backend = make_app(runs=runs)

    async def edit():
        async with app.run_test(size=SMALL) as pilot:
            await attached(pilot, app)
            await pilot.press("e")
            await until(pilot, lambda: isinstance(app.screen, EditScreen))
            app.screen.query_one("#set-epochs", Input).value = "7"
            await pilot.press("ctrl+s")
            await until(pilot, lambda: read_next_settings(run_dir) == {"epochs": 7})
            await pilot.press("q", "d")  # detach
            await until(pilot, lambda: not app.is_running)
    run(edit)
    assert (os.stat(run_dir / NEXT_FILE).st_mode & 0o777) == 0o600

    again, backend = make_app(runs=runs)  # a new panel on the same run

    async def reattach_stop_and_resume():
        async with again.run_test(size=SMALL) as pilot:
            await attached(pilot, again)
            assert again.next_config.epochs == 7
            await pilot.press("x")
            await until(pilot, lambda: again.model.state == "stopped")
            await pilot.press("r")
            await until(pilot, lambda: len(backend.started) == 1)
            config, resume = backend.started[0]
            assert resume == "latest" and config.epochs == 7
            await until(pilot, lambda: not (run_dir / NEXT_FILE).exists())  # its own now
    run(reattach_stop_and_resume)


def test_the_edit_dialog_opens_on_its_first_field_so_typing_and_enter_work():
    app, backend = make_app()

    async def test():
        async with app.run_test(size=SMALL) as pilot:
            await attached(pilot, app)
            await pilot.press("e")
            await until(pilot, lambda: isinstance(app.screen, EditScreen))
            await pilot.pause()
            assert app.focused is app.screen.query_one("#set-batch_size")
            await pilot.press(*"100", "enter")
            await until(pilot, lambda: not isinstance(app.screen, EditScreen))
            assert backend.connection.sent == [SetBatchSize(100)]
    run(test)


def test_a_crafted_next_settings_file_is_ignored(tmp_path):
    for crafted in ({"next": {"task": "evil.py:build"}}, {"next": {"epochs": "many"}},
                    {"next": {"no_such_setting": 1}}, ["not", "a", "dict"]):
        (tmp_path / NEXT_FILE).write_text(json.dumps(crafted))
        assert read_next_settings(tmp_path) == {}
    (tmp_path / NEXT_FILE).unlink()
    os.symlink("/dev/zero", tmp_path / NEXT_FILE)
    assert read_next_settings(tmp_path) == {}


# ---------------------------------------------------------------- 10: workers


def test_host_pane_counts_train_and_eval_workers_against_the_setting():
    model = RunModel(settings=Settings(num_workers=2))
    assert worker_count(4, model) == "workers 2 + 2 eval"
    assert worker_count(2, model) == "workers 2"
    assert worker_count(0, RunModel(settings=Settings(num_workers=0))) == "workers 0"


def test_only_dataloader_worker_processes_count_as_workers():
    import psutil

    def child(pid, name):
        return SimpleNamespace(pid=pid, name=lambda: name, cmdline=lambda: ["python"],
                               ppid=lambda: 1, cpu_percent=lambda interval: 10.0)

    children = [child(11, "pt_data_worker"), child(12, "pt_data_worker"),
                child(13, "python"), child(14, "compile_worker")]
    sampler = HostSampler.__new__(HostSampler)
    sampler._psutil = psutil
    sampler._watched = {process.pid: process for process in children}  # seen by a last sample
    sampler._descendants = lambda pid: children
    count, cpu, pids = sampler._workers(1)
    assert (count, cpu) == (2, 20.0) and pids == {1, 11, 12, 13, 14}


# ---------------------------------------------------------------- 11: one line per key, words


def test_one_key_press_makes_one_log_line():
    app, backend = make_app()

    async def test():
        async with app.run_test(size=SMALL) as pilot:
            await attached(pilot, app)
            app.redraw(force=True)
            before = len(app.query_one(LogPane).lines)
            await pilot.press("b")
            await until(pilot, lambda: app.model.settings.batch_size == 32)
            app.redraw(force=True)
            lines = app.query_one(LogPane).text.splitlines()[before:]
            assert len(lines) == 1 and "batch_size 64 -> 32 from the next step" in lines[0]
    run(test)
