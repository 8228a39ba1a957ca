"""`ctui` decides between the panel and the engine CLI without loading torch or Textual early,
and refuses bad input with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ctui.tui.main import main, panel_command


@pytest.mark.parametrize("argv, mode", [
    ([], "auto"),
    (["attach"], "attach"),
    (["attach", "digits-1"], "attach"),
    (["train", "--epochs", "3"], "start"),
    (["train", "--headless", "--epochs", "3"], None),
    (["train", "--detach"], None),
    (["train", "--help"], None),
    (["ls"], None),
    (["stop", "run"], None),
])
def test_which_commands_open_the_panel(argv, mode):
    assert panel_command(argv) == mode


def test_panel_needs_a_terminal(capsys):
    # pytest's stdin and stdout are not terminals
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "needs a terminal" in capsys.readouterr().err


def test_engine_commands_are_forwarded(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--headless", "--batch-size", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--batch-size" in err and "Traceback" not in err


def test_panel_modules_import_without_torch():
    code = ("import json, sys, ctui.tui.main, ctui.tui.app, ctui.engine.host, "
            "ctui.engine.telemetry; print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    loaded = set(json.loads(out.stdout))
    assert "ctui.tui.app" in loaded and "textual" in loaded
    for heavy in ("torch", "wandb", "tensorboard", "plotext"):
        assert heavy not in loaded, f"the panel loaded {heavy} before its first frame"


def test_first_frame_is_drawn_before_torch_is_imported():
    """Open the panel (headless, scripted host) and check sys.modules once it has drawn."""
    code = r"""
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
from conftest import attached, make_app
app, _ = make_app()
async def main():
    async with app.run_test(size=(80, 24)) as pilot:
        await attached(pilot, app)
        print(json.dumps("torch" in sys.modules))
asyncio.run(main())
"""
    here = os.path.dirname(__file__)
    out = subprocess.run([sys.executable, "-c", code, here], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "false"
