"""Every key and dialog of the panel, driven with Textual's Pilot against the scripted stand-in
host: what is sent to the run, what the user is told, and what the screen shows."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

from conftest import RUN_NAME, attached, make_app, shown, until
from rich.console import Console
from standin import events_until, live_run, recorded_events
from textual.command import CommandList

from ctui.engine.events import (
    CheckpointNow,
    Pause,
    Resume,
    SetBatchSize,
    SetNumWorkers,
    Settings,
    Start,
    StateChanged,
    Stop,
    Tune,
    TuneReport,
)
from ctui.engine.host.registry import RunInfo
from ctui.tui.app import Launch
from ctui.tui.confirm_screen import ChoiceScreen
from ctui.tui.edit_screen import EditScreen
from ctui.tui.epoch_table import EpochTable
from ctui.tui.help_screen import HelpScreen
from ctui.tui.keys import ACTIONS
from ctui.tui.log_pane import LogPane
from ctui.tui.picker_screen import PickerScreen
from ctui.tui.tune_screen import TuneScreen

SIZE = (80, 24)


def run(test) -> None:
    asyncio.run(test())


def log_text(app) -> str:
    app.redraw(force=True)
    return app.query_one(LogPane).text


def sent(backend) -> list:
    return backend.connection.sent


def test_attaches_to_the_only_live_run_and_shows_its_history():
    app, backend = make_app()

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await attached(pilot, app)
            assert app.model.state == "running"
            assert app.query_one(EpochTable).row_count == 2  # epochs 1 and 2 of the recording
            assert "step 15/23" in shown(app.query_one("#training"))
            assert backend.started == []
    run(test)


def test_with_nothing_live_the_panel_starts_a_run():
    """`ctui` in a folder with no run: the quick start, training begins."""
    app, backend = make_app(runs=[])

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: len(backend.started) == 1)
            await until(pilot, lambda: app.current_run is not None)
    run(test)


def test_a_browser_tab_with_nothing_live_waits_for_s_to_start_a_run():
    """A tab of `ctui serve` (opening the URL, a reload, a phone, a second tab) never starts
    training by itself: it says how to start one, and s does."""
    finished = dataclasses.replace(live_run(), status="finished")
    app, backend = make_app(runs=[finished], launch=Launch(
        mode="auto", runs_dir=Path("runs"), start_on_request=True))

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: "s starts a new one" in log_text(app))
            assert backend.started == [] and app.current_run is None
            app.redraw(force=True)
            await pilot.pause()
            pane = shown(app.query_one("#training"))
            assert "No run is training." in pane and "s starts a new one." in pane
            assert app.is_running  # the panel stays, for l (the runs) or s
            await pilot.press("s")
            await until(pilot, lambda: len(backend.connections) == 1)
            config, resume = backend.started[0]
            assert resume is None and config.runs_dir == "runs"
    run(test)


def test_p_pauses_and_resumes():
    app, backend = make_app()

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await attached(pilot, app)
            await pilot.press("p")
            await until(pilot, lambda: app.model.state == "paused")
            assert sent(backend) == [Pause()]
            await pilot.press("p")
            await until(pilot, lambda: app.model.state == "running")
            assert sent(backend) == [Pause(), Resume()]
    run(test)


def test_c_asks_for_a_checkpoint_and_shows_its_age():
    app, backend = make_app()

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await attached(pilot, app)
            await pilot.press("c")
            await until(pilot, lambda: app.model.last_checkpoint.step == 60)
            assert sent(backend) == [CheckpointNow()]
            app.redraw(force=True)
            assert "ckpt 0s ago" in shown(app.query_one("#training"))
    run(test)


def test_x_stops_then_r_resumes_from_the_latest_checkpoint(tmp_path):
    run_dir = tmp_path / RUN_NAME
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"config": {"task": "digits", "epochs": 3}}))
    app, backend = make_app(runs=[dataclasses.replace(live_run(), run_dir=run_dir)])

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await attached(pilot, app)
            await pilot.press("x")
            await until(pilot, lambda: app.model.state == "stopped")
            assert sent(backend) == [Stop("stopped from the panel")]
            await pilot.press("x")  # nothing left to stop: refused, nothing sent
            assert len(sent(backend)) == 1
            assert "stop: the run has stopped" in log_text(app)
            await pilot.press("r")
            await until(pilot, lambda: len(backend.connections) == 2)
            config, resume = backend.started[0]
            assert resume == "latest"
            assert Path(config.run_dir) == run_dir
            assert config.epochs == 3
    run(test)


def test_s_refuses_while_running_and_starts_a_new_run_once_finished():
    app, backend = make_app(script=recorded_events())  # the whole run: it finishes

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.model.state == "finished")
            await pilot.press("s")
            await until(pilot, lambda: len(backend.connections) == 2)
            config, resume = backend.started[0]
            assert resume is None and config.run_dir is None
    run(test)

    app, backend = make_app()

    async def running():
        async with app.run_test(size=SIZE) as pilot:
            await attached(pilot, app)
            await pilot.press("s")
            assert sent(backend) == [] and backend.started == []
            assert "already running" in log_text(app)
    run(running)


def test_s_starts_a_run_that_waits_for_it():
    idle = [StateChanged(state="idle"), next(e for e in recorded_events()
                                             if isinstance(e, Settings))]
    app, backend = make_app(script=idle)

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.model.state == "idle")
            await pilot.press("s")
            assert sent(backend) == [Start()]
    run(test)


def test_b_and_B_halve_and_double_the_batch_size():
    app, backend = make_app()

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await attached(pilot, app)
            await pilot.press("b")
            await until(pilot, lambda: app.model.settings.batch_size == 32)
            await pilot.press("B")
            await until(pilot, lambda: app.model.settings.batch_size == 64)
            assert sent(backend) == [SetBatchSize(32), SetBatchSize(64)]
            assert "batch_size 32 -> 64 from the next step" in log_text(app)
    run(test)


def test_b_refuses_below_one():
    events = events_until(lambda e: e.kind == "settings")
    events[-1] = dataclasses.replace(events[-1], batch_size=1)
    app, backend = make_app(script=events)

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.model.settings is not None)
            await pilot.press("b")
            assert sent(backend) == []
            assert "batch_size is already 1" in log_text(app)
    run(test)


def test_w_and_W_change_workers_within_limits():
    app, backend = make_app()

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await attached(pilot, app)
            await pilot.press("w")  # already 0
            assert sent(backend) == []
            assert "num_workers is already 0, the smallest allowed" in log_text(app)
            await pilot.press("W")
            await until(pilot, lambda: app.model.settings.num_workers == 1)
            assert sent(backend) == [SetNumWorkers(1)]
    run(test)


def test_e_edits_settings_refusing_bad_values():
    app, backend = make_app()

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await attached(pilot, app)
            await pilot.press("e")
            await until(pilot, lambda: isinstance(app.screen, EditScreen))
            batch = app.screen.query_one("#set-batch_size")
            batch.value = "0"
            await pilot.press("ctrl+s")
            assert isinstance(app.screen, EditScreen)  # refused: still open, saying why
            assert "batch-size" in shown(app.screen.query_one("#error"))
            batch.value = "100"
            app.screen.query_one("#set-epochs").value = "5"
            await pilot.press("ctrl+s")
            await until(pilot, lambda: not isinstance(app.screen, EditScreen))
            assert sent(backend) == [SetBatchSize(100)]  # live now; epochs is for the next run
            assert app.next_config.epochs == 5
            assert "for the next run (s) or resume (r): epochs=5" in log_text(app)
            await pilot.press("e")
            await until(pilot, lambda: isinstance(app.screen, EditScreen))
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, EditScreen))
            assert len(sent(backend)) == 1
    run(test)


def test_t_autotunes_and_applies_the_best_on_confirmation():
    app, backend = make_app()
    report = TuneReport(rows=((64, 0, 400.0, ""), (64, 2, 900.0, ""), (128, 2, 1100.0, ""),
                              (256, 2, 0.0, "out of memory")),
                        best_batch_size=128, best_num_workers=2, seconds=41.0)

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await attached(pilot, app)
            await pilot.press("t")
            assert sent(backend) == [Tune()]
            backend.connection.emit(report)
            await until(pilot, lambda: isinstance(app.screen, TuneScreen))
            table = app.screen.query_one("DataTable")
            assert table.row_count == 4
            await pilot.press("a")
            await until(pilot, lambda: not isinstance(app.screen, TuneScreen))
            assert sent(backend)[1:] == [SetBatchSize(128), SetNumWorkers(2)]
    run(test)


def test_applying_a_tune_that_kept_the_current_settings_sends_and_claims_nothing():
    app, backend = make_app()

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await attached(pilot, app)
            current = app.model.settings
            await pilot.press("t")
            backend.connection.emit(TuneReport(
                rows=((current.batch_size, current.num_workers, 500.0, ""),),
                best_batch_size=current.batch_size, best_num_workers=current.num_workers,
                seconds=5.0))
            await until(pilot, lambda: isinstance(app.screen, TuneScreen))
            await pilot.press("a")
            await until(pilot, lambda: not isinstance(app.screen, TuneScreen))
            assert sent(backend) == [Tune()]
            assert "nothing to apply" in log_text(app)
            assert "applying batch size" not in log_text(app)
    run(test)


def test_tune_report_can_be_declined():
    app, backend = make_app()

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await attached(pilot, app)
            await pilot.press("t")
            backend.connection.emit(TuneReport(rows=((32, 1, 500.0, ""),), best_batch_size=32,
                                               best_num_workers=1, seconds=5.0))
            await until(pilot, lambda: isinstance(app.screen, TuneScreen))
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, TuneScreen))
            assert sent(backend) == [Tune()]
    run(test)


def test_q_while_training_offers_cancel_detach_and_stop():
    app, backend = make_app()

    async def cancel_then_detach():
        async with app.run_test(size=SIZE) as pilot:
            await attached(pilot, app)
            await pilot.press("q")
            await until(pilot, lambda: isinstance(app.screen, ChoiceScreen))
            await pilot.press("c")
            await until(pilot, lambda: not isinstance(app.screen, ChoiceScreen))
            assert app.is_running
            await pilot.press("q", "d")
            await until(pilot, lambda: not app.is_running)
        assert sent(backend) == []  # detaching never touches the run
        assert f"ctui attach {RUN_NAME}" in app.exit_note
        assert backend.connection.closed
    run(cancel_then_detach)

    app, backend = make_app()

    async def stop():
        async with app.run_test(size=SIZE) as pilot:
            await attached(pilot, app)
            await pilot.press("q", "s")
            await until(pilot, lambda: not app.is_running)
        assert sent(backend) == [Stop("stopped from the panel")]
        assert "--resume" in app.exit_note
    run(stop)


def test_q_quits_at_once_when_the_run_has_ended():
    app, backend = make_app(script=recorded_events())

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.model.state == "finished")
            await pilot.press("q")
            await until(pilot, lambda: not app.is_running)
        assert app.exit_note == ""
    run(test)


def test_question_mark_lists_every_key():
    app, _ = make_app()

    async def test():
        async with app.run_test(size=(80, 40)) as pilot:
            await attached(pilot, app)
            await pilot.press("question_mark")
            await until(pilot, lambda: isinstance(app.screen, HelpScreen))
            text = shown(app.screen.query_one("Static"))
            for action in ACTIONS:
                assert action.help.split()[0] in text
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, HelpScreen))
    run(test)


def test_every_action_is_in_the_command_palette():
    app, backend = make_app()

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await attached(pilot, app)
            await pilot.press("ctrl+p")
            await pilot.pause()
            await pilot.press(*"checkpoint now")
            await pilot.pause(0.5)
            await pilot.press("enter")
            await until(pilot, lambda: sent(backend) == [CheckpointNow()])
            await pilot.press("ctrl+p")
            await pilot.pause(0.5)
            listed = app.screen.query_one(CommandList)
            console = Console(width=200, record=True)
            for i in range(listed.option_count):
                console.print(listed.get_option_at_index(i).prompt)
            # each action once (its help line used to repeat the same words under it)
            assert console.export_text().count("Save a checkpoint now") == 1
    run(test)


def test_v_swaps_table_and_plot_on_a_narrow_terminal():
    app, _ = make_app()

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await attached(pilot, app)
            table, plot = app.query_one("#epochs"), app.query_one("#plot")
            assert table.display and not plot.display
            await pilot.press("v")
            await pilot.pause()
            assert plot.display and not table.display
            app.redraw(force=True)
            text = shown(plot)
            assert "train+eval" in text  # an epoch's seconds include its evaluation
            # at 80x24 the plot takes the log's rows too: more than a couple of rows of curve
            assert plot.content_size.height >= 12
            assert not app.query_one("#log").display
    run(test)


def test_several_live_runs_open_a_picker():
    other = RunInfo(name="fake-20250101-130000", run_dir=Path("runs/fake-20250101-130000"),
                    status="live", epoch=1, epochs=5)
    app, backend = make_app(runs=[live_run(), other])

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: isinstance(app.screen, PickerScreen))
            await pilot.press("down", "enter")
            await until(pilot, lambda: app.model.connected)
            assert app.model.name == "fake-20250101-130000"
    run(test)


def test_an_interrupted_run_is_offered_for_resume(tmp_path):
    run_dir = tmp_path / RUN_NAME
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"config": {"task": "digits", "epochs": 9,
                                                                "batch_size": 64}}))
    (run_dir / "metrics.jsonl").write_text(json.dumps({"type": "epoch", "epoch": 2,
                                                       "batch_size": 128, "num_workers": 2}))
    stale = RunInfo(name=RUN_NAME, run_dir=run_dir, status="interrupted", epoch=2, epochs=9)
    app, backend = make_app(runs=[stale])

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: isinstance(app.screen, ChoiceScreen))
            await pilot.press("r")
            await until(pilot, lambda: app.model.connected)
            config, resume = backend.started[0]
            assert resume == "latest" and Path(config.run_dir) == run_dir
            # the batch size and workers it last trained with, not the ones it started with
            assert (config.epochs, config.batch_size, config.num_workers) == (9, 128, 2)
    run(test)


def test_no_runs_starts_a_new_run_on_the_default_task():
    app, backend = make_app(runs=[])

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.model.connected)
            config, resume = backend.started[0]
            assert config.task == "digits" and resume is None
    run(test)


def test_the_host_going_away_marks_the_run_interrupted():
    app, backend = make_app()

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await attached(pilot, app)
            backend.connection.end()
            await until(pilot, lambda: app.model.state == "interrupted")
            assert "r resumes from the last checkpoint" in log_text(app)
            await pilot.press("p")
            assert sent(backend) == []
    run(test)


def test_a_failing_host_start_is_reported_not_raised():
    app, backend = make_app(runs=[])

    def refuse(config, resume=None):
        raise RuntimeError("--task: 'nope' is not a task")

    backend.start = refuse

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: "not a task" in log_text(app))
            assert app.is_running
    run(test)
