"""The panel's tests drive a stand-in for the run (tests/tui/standin.py): it must answer every
command as the real engine does, or those tests prove nothing. The same commands are replayed
against a tiny real engine and the stand-in, and their answers compared."""

from __future__ import annotations

from standin import ScriptedConnection, mid_run_events

from ctui.engine import Engine
from ctui.engine.config import BUILTIN_TASKS
from ctui.engine.events import (
    Answer,
    CheckpointNow,
    Pause,
    Resume,
    SetBatchSize,
    SetNumWorkers,
    StateChanged,
    Stop,
)

from helpers import tiny

COMMANDS = [Pause(), Pause(), Resume(), Resume(), SetBatchSize(0), SetBatchSize(64),
            SetBatchSize(32), SetNumWorkers(-1), SetNumWorkers(0), SetNumWorkers(1),
            CheckpointNow(), Stop(reason="contract")]


def answers(events) -> list[tuple]:
    """What a client reads: each answer (command, accepted, setting, value) and each state."""
    seen = []
    for event in events:
        if isinstance(event, Answer):
            seen.append((event.command, event.accepted, event.setting, event.value))
        elif isinstance(event, StateChanged) and event.state in ("paused", "stopping",
                                                                  "stopped"):
            seen.append(("state", event.state))
    return seen


def test_the_stand_in_answers_every_command_as_the_engine_does(tmp_path):
    engine = Engine(tiny(epochs=50, batch_size=64, log_interval=1, run_dir=str(tmp_path / "r")))
    for command in COMMANDS:  # all applied at the first step boundary, in order
        engine.send(command)
    engine.start()
    real = answers(engine.events())

    standin = ScriptedConnection(mid_run_events())
    script_length = standin._queue.qsize()
    for command in COMMANDS:
        standin.send(command)
    standin.end()
    scripted = answers(list(standin.events())[script_length:])

    assert real == scripted
    assert [a[1] for a in real if a[0] != "state"] == [
        True, True, True, False, False, True, True, False, True, True, True, True]


def test_the_built_in_task_names_are_the_tasks():
    from ctui.engine.tasks.builtin import BUILTIN

    assert tuple(BUILTIN) == BUILTIN_TASKS
