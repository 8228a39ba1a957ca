"""A program run (`ctui run -- CMD`) in the panel, against the scripted stand-in host: its
terminal (carriage returns, colours, scrollback), typing into it, its processes, its pty's
size, the keys that mean nothing for it, and a flood of output."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from conftest import FIXED_NOW, until
from standin import (
    PROGRAM_LOADER,
    PROGRAM_PID,
    PROGRAM_RUN,
    FixedTelemetry,
    ScriptedBackend,
    live_run,
    program_run_events,
    snapshot,
    tqdm_bar,
)
from textual import events

from ctui.engine.events import (
    Pause,
    ProcessTree,
    ProgramExited,
    ProgramOutput,
    ProgramStarted,
    ResizeTerminal,
    ScriptScalars,
    ScriptScalarsLatest,
    SetBatchSize,
    SetNumWorkers,
    Stop,
    TypeInput,
)
from ctui.tui.app import CtuiApp, Launch
from ctui.tui.confirm_screen import ChoiceScreen
from ctui.tui.edit_screen import EditScreen
from ctui.tui.host_panel import HostPanel
from ctui.tui.keys_bar import KeysBar
from ctui.tui.log_pane import LogPane
from ctui.tui.process_panel import ProcessPanel
from ctui.tui.script_logs import ScriptLogsPanel
from ctui.tui.terminal_view import TerminalView

SIZE = (80, 24)


def make_program_app(script=None, sample: str = "no_gpu", **kwargs):
    backend = ScriptedBackend(runs=[live_run(PROGRAM_RUN)],
                              scripts={PROGRAM_RUN: program_run_events() if script is None
                                       else script})
    app = CtuiApp(Launch(mode="auto", runs_dir=Path("runs")), backend=backend,
                  telemetry=lambda emit: FixedTelemetry(emit, snapshot(sample)),
                  clock=lambda: FIXED_NOW, **kwargs)
    return app, backend


async def program_attached(pilot, app) -> None:
    """The program run's history is on screen, and its pty has been sized to the view."""
    await until(pilot, lambda: app.model.processes is not None
                and app.model.telemetry is not None)
    app.redraw(force=True)
    await until(pilot, lambda: "Epoch 2/3" in terminal(app).text)


def terminal(app) -> TerminalView:
    return app.query_one(TerminalView)


def shown(widget) -> str:
    """The widget's text as drawn, border and padding included."""
    from textual.geometry import Region

    width, height = widget.outer_size
    return "\n".join(strip.text for strip in widget.render_lines(Region(0, 0, width, height)))


def log_text(app) -> str:
    """The log's text with its lines' wrapping undone (it wraps at the pane's width)."""
    app.redraw(force=True)
    return " ".join(app.query_one(LogPane).text.split())


def typed(backend) -> str:
    return "".join(c.data for c in backend.connection.sent if isinstance(c, TypeInput))


def commands(backend, kind) -> list:
    return [c for c in backend.connection.sent if isinstance(c, kind)]


def run(test) -> None:
    asyncio.run(test())


def test_the_terminal_shows_the_last_state_of_a_redrawn_bar_in_colour():
    app, _ = make_program_app()

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await program_attached(pilot, app)
            view = terminal(app)
            lines = view.text.splitlines()
            assert "Notes for this run? baseline, lr 1e-3" in lines
            # each pass's bar redrew itself in place: only its last state is left
            assert tqdm_bar(40).strip("\r") in lines
            assert tqdm_bar(18).strip("\r") in lines
            assert not any(" 0/40 " in line or " 12/40 " in line for line in lines)
            epoch = lines.index("Epoch 2/3")
            strip = view.render_line(epoch)
            styles = [seg.style for seg in strip if seg.text.strip()]
            assert styles[0].color.name == "bright_green" or styles[0].color.name == "green"
            assert styles[0].bold
            assert app.query_one("#epochs").display is False  # the terminal in its place
            assert "running" in shown(app.query_one("#training"))
            assert "$ python train.py --epochs 3" in shown(app.query_one("#training"))
    run(test)


def test_no_color_keeps_the_text_and_drops_the_colour(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    app, _ = make_program_app()

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await program_attached(pilot, app)
            assert "Epoch 2/3" in terminal(app).text
            assert app.no_color
    run(test)


def test_typing_goes_to_the_program_in_a_few_lines_and_ctrl_bracket_comes_back():
    app, backend = make_program_app()

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await program_attached(pilot, app)
            await pilot.press("i")
            assert app.input_mode and terminal(app).has_class("-input")
            app.redraw(force=True)
            assert "ctrl+] back to the panel" in shown(app.query_one(KeysBar))
            keys = [*"lr 3e-4, q", "p", "x", "backspace", "backspace", "enter"]
            await pilot.press(*keys)  # q, p and x are text here, not the panel's keys
            await until(pilot, lambda: typed(backend).endswith("\r"))
            assert typed(backend) == "lr 3e-4, qpx\x7f\x7f\r"
            assert len(commands(backend, TypeInput)) < len(keys)  # batched, not a line a key
            assert not commands(backend, Pause) and not commands(backend, Stop)
            assert not isinstance(app.screen, ChoiceScreen)
            await pilot.press("up", "ctrl+c")
            await until(pilot, lambda: typed(backend).endswith("\x1b[A\x03"))
            # the stand-in echoes as a terminal does: the answer shows in the terminal
            await until(pilot, lambda: "lr 3e-4, q" in (app.redraw(force=True)
                                                          or terminal(app).text))
            await pilot.press("ctrl+right_square_bracket")
            assert not app.input_mode
            sent = len(backend.connection.sent)
            await pilot.press("p")  # the panel's key again
            assert len(backend.connection.sent) == sent + 1
            assert isinstance(backend.connection.sent[-1], Pause)
    run(test)


def test_a_paste_goes_to_the_program_with_enter_for_newlines():
    app, backend = make_program_app()

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await program_attached(pilot, app)
            await pilot.press("i")
            app.post_message(events.Paste("two\nlines " * 500))
            await until(pilot, lambda: len(typed(backend)) == len("two\rlines " * 500))
            assert all(len(c.data) <= 2048 for c in commands(backend, TypeInput))
    run(test)


def test_input_mode_is_refused_when_the_program_is_not_running():
    script = program_run_events() + [ProgramExited(attempt=1, exit_code=0)]
    app, backend = make_program_app(script)

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.model.program_ended is not None)
            await pilot.press("i")
            assert not app.input_mode
            assert "nothing would read what you type" in log_text(app)
    run(test)


def test_keys_for_built_in_training_are_refused_with_a_reason():
    app, backend = make_program_app()

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await program_attached(pilot, app)
            await pilot.press("t", "r", "c", "s")
            assert [c for c in backend.connection.sent if not isinstance(c, ResizeTerminal)] \
                == [] and backend.started == []
            text = log_text(app)
            for what in ("autotune:", "resume:", "checkpoint:", "start:"):
                assert what in text
            assert "w/W and b/B change its DataLoader" in text
    run(test)


def test_the_process_panel_lists_each_process():
    app, _ = make_program_app()

    async def test():
        async with app.run_test(size=(120, 40)) as pilot:
            await program_attached(pilot, app)
            text = shown(app.query_one(ProcessPanel))
            assert f"{PROGRAM_PID} python" in text and "5.0 GiB" in text
            assert text.count("pt_data_worker") == 4 and "n/a" in text
        app2, _ = make_program_app()
        async with app2.run_test(size=SIZE) as pilot:  # 80x24: a few, then the rest summed
            await program_attached(pilot, app2)
            assert "+3 more" in shown(app2.query_one(ProcessPanel))
    run(test)


def test_the_scripts_own_scalars_show_their_latest_value_per_tag():
    scalars = [ScriptScalars(source="tensorboard", path="tb/exp", scalars=(
                   ("train/loss", 1, 0.5), ("train/loss", 2, 0.25), ("val/acc", 1, None))),
               ScriptScalars(source="tensorboard", path="tb/exp/grp_x", scalars=(
                   ("grp", 3, 1.0),)),
               ScriptScalars(source="tensorboard", path="tb/exp/grp_y", scalars=(
                   ("grp", 3, 2.0),))]
    app, _ = make_program_app()
    app2, _ = make_program_app(program_run_events() + scalars)

    async def test():
        async with app.run_test(size=SIZE) as pilot:  # none logged: no room taken
            await program_attached(pilot, app)
            assert not app.query_one(ScriptLogsPanel).display
        async with app2.run_test(size=(120, 40)) as pilot:
            await program_attached(pilot, app2)
            panel = app2.query_one(ScriptLogsPanel)
            await until(pilot, lambda: panel.display)
            text = shown(panel)
            assert "train/loss 0.25 @2" in text and "0.5 " not in text
            assert "val/acc nan/inf @1" in text and "tensorboard" in text
            assert "grp (grp_x) 1 @3" in text and "grp (grp_y) 2 @3" in text
        late, _ = make_program_app(program_run_events() + [ScriptScalarsLatest(
            source="tensorboard", scalars=(("tb", "val/acc", 4, 0.5), ("tb", "loss", 9, 0.1)))])
        async with late.run_test(size=SIZE) as pilot:  # attached late: the host's summary
            await program_attached(pilot, late)
            panel = late.query_one(ScriptLogsPanel)
            await until(pilot, lambda: panel.display)
            assert "val/acc 0.5 @4  loss 0.1 @9" in shown(panel)
    run(test)


def test_the_host_pane_counts_only_the_programs_dataloader_workers():
    alone = [ProcessTree(rows=((PROGRAM_PID, "python", 99.0, 900.0, None),
                               (PROGRAM_PID + 1, "tqdm-monitor", 1.0, 10.0, None)))]
    app, _ = make_program_app()
    app2, _ = make_program_app(program_run_events() + alone)

    async def test():
        async with app.run_test(size=(120, 40)) as pilot:
            await program_attached(pilot, app)
            assert "workers 4 using 130% CPU" in shown(app.query_one(HostPanel))
        async with app2.run_test(size=(120, 40)) as pilot:  # the program is not a worker
            await program_attached(pilot, app2)
            await until(pilot, lambda: len(app2.model.processes.rows) == 2)
            app2.redraw(force=True)
            assert "workers 0" in shown(app2.query_one(HostPanel))
    run(test)


def test_the_programs_terminal_is_resized_with_the_view():
    app, backend = make_program_app()

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await program_attached(pilot, app)
            await until(pilot, lambda: commands(backend, ResizeTerminal))
            view = terminal(app)
            assert commands(backend, ResizeTerminal)[-1] == ResizeTerminal(*view.size)
            assert view.size.width == 80 and view.emulator.lines == view.size.height
            await pilot.resize_terminal(100, 30)
            await until(pilot, lambda: commands(backend, ResizeTerminal)[-1].columns == 100)
            assert commands(backend, ResizeTerminal)[-1] == ResizeTerminal(*view.size)
            small = view.size.height
            await pilot.press("z")  # the terminal alone on the screen: more rows
            await until(pilot, lambda: commands(backend, ResizeTerminal)[-1].rows > small)
            assert len(commands(backend, ResizeTerminal)) == 3
            assert "Epoch 2/3" in view.text  # still in view after the resizes
    run(test)


def test_scrollback_with_page_keys():
    lines = "".join(f"line {i}\r\n" for i in range(200))
    app, _ = make_program_app(program_run_events() + [ProgramOutput(data=lines)])

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.model.processes is not None)
            app.redraw(force=True)
            view = terminal(app)
            await until(pilot, lambda: "line 199" in view.text)
            assert view.has_focus  # a program run's terminal takes the keys that scroll
            await pilot.press("pageup")
            assert view.scrolled > 0 and "line 199" not in view.text
            assert "lines back" in view.border_title
            await pilot.press("home")
            assert "Notes for this run?" in view.text
            await pilot.press("end")
            assert view.scrolled == 0 and "line 199" in view.text
    run(test)


def test_a_flood_of_output_costs_a_few_redraws_and_keys_still_work():
    app, backend = make_program_app(redraw_seconds=0.25)

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await program_attached(pilot, app)
            view = terminal(app)
            shows = view.shows
            start = time.monotonic()
            backend.connection.emit(*(ProgramOutput(data=tqdm_bar(i % 41)) for i in range(3000)))
            await pilot.press("v")  # answered while the flood is read
            assert app.query_one("#epochs").display
            await pilot.press("v", "v")  # the plot, then the terminal again
            backend.connection.emit(ProgramOutput(data="\r\nall done\r\n"))
            await until(pilot, lambda: "all done" in view.text, timeout=20)
            elapsed = time.monotonic() - start
            assert 1 <= view.shows - shows <= elapsed / 0.25 + 2
            assert view.display
    run(test)


def test_a_program_printing_faster_than_the_panel_draws_shows_its_newest_output():
    app, backend = make_program_app()

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await program_attached(pilot, app)
            backend.connection.emit(ProgramOutput(data="".join(
                f"\x1b[31mnoise {i}\x1b[0m\r\n" for i in range(40_000))))
            backend.connection.emit(ProgramOutput(data="newest line\r\n"))
            await until(pilot, lambda: "newest line" in terminal(app).text, timeout=20)
            assert "skipped" in log_text(app)
            assert "noise 39999" in terminal(app).text
    run(test)


def test_loader_passes_and_restarts_are_rows_in_the_log():
    app, backend = make_program_app()

    async def test():
        async with app.run_test(size=(120, 40)) as pilot:
            await program_attached(pilot, app)
            assert (f"loader {PROGRAM_LOADER} pass 1: 5.1 s, 251 samples/s, data wait 31%, "
                    "bs 32, 4 workers") in " ".join(log_text(app).split())  # lines wrap
            backend.connection.emit(
                ProgramExited(attempt=1, exit_code=1, restarting=True),
                ProgramOutput(data="Traceback ... CUDA error\r\n"))
            await until(pilot, lambda: app.model.program_ended is not None)
            app.redraw(force=True)
            assert "restarting" in shown(app.query_one("#training"))
            backend.connection.emit(ProgramStarted(argv=("python", "train.py"), pid=4343,
                                                   attempt=2))
            await until(pilot, lambda: app.model.program.attempt == 2)
            text = log_text(app)
            assert "attempt 1 exited with code 1; restarting" in text
            assert "restart: attempt 2 started (pid 4343)" in text
            assert "[ctui] attempt 1 exited with code 1; restarting" in terminal(app).text
            assert "attempt 2" in shown(app.query_one("#training"))
    run(test)


def test_x_stops_the_program_and_the_panel_says_how_it_ended():
    app, backend = make_program_app()

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await program_attached(pilot, app)
            await pilot.press("x")
            await until(pilot, lambda: app.model.state == "stopped")
            assert commands(backend, Stop) == [Stop("stopped from the panel")]
            assert "SIGINT, then SIGTERM and SIGKILL" in log_text(app)
            app.redraw(force=True)
            assert "attempt 1 was ended by SIGINT" in shown(app.query_one("#training"))
    run(test)


def test_b_w_and_e_change_the_programs_dataloader_or_say_why_not():
    app, backend = make_program_app()

    async def test():
        async with app.run_test(size=(80, 40)) as pilot:
            await program_attached(pilot, app)
            await pilot.press("b")
            await until(pilot, lambda: app.model.settings.batch_size == 16)
            await pilot.press("W")
            await until(pilot, lambda: "persistent_workers" in log_text(app))
            assert commands(backend, SetBatchSize) == [SetBatchSize(16)]
            assert commands(backend, SetNumWorkers) == [SetNumWorkers(5)]
            assert f"{PROGRAM_LOADER}: num_workers cannot change" in log_text(app)
            await pilot.press("e")
            await until(pilot, lambda: isinstance(app.screen, EditScreen))
            assert [i.id for i in app.screen.query("Input")] == ["set-batch_size",
                                                                 "set-num_workers"]
            app.screen.query_one("#set-batch_size").value = "64"
            await pilot.press("ctrl+s")
            await until(pilot, lambda: app.model.settings.batch_size == 64)
    run(test)


def test_q_on_a_running_program_detaches_leaving_it_running():
    app, backend = make_program_app()

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await program_attached(pilot, app)
            await pilot.press("q")
            await until(pilot, lambda: isinstance(app.screen, ChoiceScreen))
            await pilot.press("d")
            await until(pilot, lambda: not app.is_running)
        assert not commands(backend, Stop)
        assert f"its program keeps running. Watch it again with `ctui attach {PROGRAM_RUN}`" \
            in app.exit_note
    run(test)


def test_v_cycles_terminal_table_and_plot():
    app, _ = make_program_app()

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await program_attached(pilot, app)
            shows = [lambda: terminal(app).display, lambda: app.query_one("#epochs").display,
                     lambda: app.query_one("#plot").display]
            assert [s() for s in shows] == [True, False, False]
            for expected in ([False, True, False], [False, False, True], [True, False, False]):
                await pilot.press("v")
                await pilot.pause()
                assert [s() for s in shows] == expected
    run(test)


def test_the_training_footer_has_no_program_keys():
    assert "i type" not in KeysBar.render_keys(200).plain
    assert "i type" in KeysBar.render_keys(200, "program").plain
    assert "t tune" not in KeysBar.render_keys(200, "program").plain
    lines = KeysBar.render_keys(80, "program").plain.count("\n")
    assert KeysBar.render_keys(80, "input").plain.count("\n") == lines  # same height


def test_keys_become_what_a_terminal_sends():
    from ctui.tui.program_input import key_text

    assert key_text("a", "a") == "a" and key_text("A", "A") == "A"
    assert key_text("space", " ") == " " and key_text("enter", "\r") == "\r"
    assert key_text("backspace", None) == "\x7f" and key_text("ctrl+c", None) == "\x03"
    assert key_text("ctrl+d", "\x04") == "\x04" and key_text("escape", "\x1b") == "\x1b"
    assert key_text("up", None) == "\x1b[A" and key_text("up", None, True) == "\x1bOA"
    assert key_text("left", None) == "\x1b[D" and key_text("delete", None) == "\x1b[3~"
    assert key_text("alt+b", "b") == "\x1bb" and key_text("é", "é") == "é"
    assert key_text("f13", None) is None


def test_typed_text_goes_out_in_small_spaced_lines():
    from ctui.tui.program_input import CHUNK_BYTES, TYPE_INTERVAL, TypedText, first_chunk

    now = [100.0]
    later: list = []
    sent: list = []
    typed = TypedText(sent.append, lambda wait, fn: later.append((wait, fn)), lambda *a: None,
                      now=lambda: now[0])
    typed.type("h")  # nothing went out lately: at once
    typed.type("i")
    typed.type("\r")  # batched behind the first
    assert [c.data for c in sent] == ["h"] and len(later) == 1
    assert abs(later[0][0] - TYPE_INTERVAL) < 1e-9
    now[0] += TYPE_INTERVAL
    later.pop()[1]()
    assert [c.data for c in sent] == ["h", "i\r"]
    typed.type("é\x1b" * 3000)  # JSON escapes: each chunk's JSON under CHUNK_BYTES
    while later:
        now[0] += TYPE_INTERVAL
        later.pop()[1]()
    import json

    assert "".join(c.data for c in sent[2:]) == "é\x1b" * 3000
    assert all(len(json.dumps(c.data)) <= CHUNK_BYTES for c in sent)
    assert first_chunk("abc") == ("abc", "")


def test_a_program_run_known_only_from_its_settings_has_no_dataloader_yet():
    from ctui.engine.events import Settings, StateChanged

    app, backend = make_program_app([StateChanged(state="running"),
                                     Settings(task="program", batch_size=0, num_workers=0)])

    async def test():
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.model.program_run and app.model.live)
            app.redraw(force=True)
            assert terminal(app).display
            await pilot.press("b", "W")
            assert not commands(backend, SetBatchSize) and not commands(backend, SetNumWorkers)
            assert "no DataLoader of the program seen yet" in log_text(app)
            assert "no DataLoader seen yet" in shown(app.query_one("#training"))
    run(test)


def test_ctui_run_opens_the_panel_unless_detached_or_without_a_terminal(monkeypatch):
    from ctui.tui import main as ctui_main

    assert ctui_main.panel_command(["run", "--", "python", "train.py"]) == "run"
    opened, engine = [], []
    monkeypatch.setattr(ctui_main, "open_panel", lambda launch: opened.append(launch) or 0)
    monkeypatch.setattr("ctui.engine.cli.main.main", lambda argv: engine.append(argv) or 0)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    ctui_main.main(["run", "--", "python", "train.py", "--detach"])  # the program's flag
    assert opened[-1].mode == "run" and opened[-1].start_program is not None
    ctui_main.main(["run", "--detach", "--", "python", "train.py"])
    assert engine == [["run", "--detach", "--", "python", "train.py"]] and len(opened) == 1
