"""Every panel action in one table: the key bindings, the footer, the `?` screen and the command
palette are all made from it.

The footer differs by what is attached: a built-in training run, a program run (`ctui run --
CMD`), or a program run while typing into it (input mode, where every other key goes to the
program but leave_input's ctrl+])."""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding

TRAINING, PROGRAM, INPUT = "training", "program", "input"  # the footers
BOTH = (TRAINING, PROGRAM)


@dataclass(frozen=True)
class PanelAction:
    key: str  # Textual key name
    label: str  # what the help screen shows as the key
    action: str  # app action name, without "action_"
    short: str  # footer text
    help: str  # one line for the help screen and the palette
    group: str = ""  # keys sharing one footer entry, named by the group: "b/B batch"
    footer: tuple[str, ...] = BOTH  # the footers that show it


ACTIONS: tuple[PanelAction, ...] = (
    PanelAction("s", "s", "start_run", "start",
                "Start the run (a new run with the current settings once this one has ended)",
                footer=(TRAINING,)),
    PanelAction("p", "p", "toggle_pause", "pause",
                "Pause or resume training at the next step"),
    PanelAction("x", "x", "stop_run", "stop", "Save a checkpoint, then stop the run (a "
                "program: SIGINT, then SIGTERM and SIGKILL if it has not ended after a grace)"),
    PanelAction("c", "c", "checkpoint", "ckpt", "Save a checkpoint now", footer=(TRAINING,)),
    PanelAction("b", "b", "halve_batch", "batch/2", "Halve the batch size (from the next step; "
                "a program: from its DataLoader's next pass)", group="batch"),
    PanelAction("B", "B", "double_batch", "batch*2", "Double the batch size (from the next step; "
                "a program: from its DataLoader's next pass)", group="batch"),
    PanelAction("w", "w", "fewer_workers", "workers-1", "One DataLoader worker fewer",
                group="workers"),
    PanelAction("W", "W", "more_workers", "workers+1", "One DataLoader worker more",
                group="workers"),
    PanelAction("e", "e", "edit_settings", "edit", "Edit any setting in a dialog (a program: "
                "its DataLoader's batch size and workers)"),
    PanelAction("r", "r", "resume_run", "resume",
                "Resume a stopped or interrupted run from its latest checkpoint",
                footer=(TRAINING,)),
    PanelAction("t", "t", "autotune", "tune",
                "Autotune: time trials of workers and batch size, then offer the best",
                footer=(TRAINING,)),
    PanelAction("i", "i", "type_into_program", "type",
                "Type into the program's terminal (a program run); ctrl+] comes back",
                footer=(PROGRAM,)),
    PanelAction("ctrl+right_square_bracket", "ctrl+]", "leave_input", "back to the panel",
                "Stop typing into the program: keys work the panel again", footer=(INPUT,)),
    PanelAction("z", "z", "zoom_terminal", "zoom",
                "Show the program's terminal on the whole screen, or back with the gauges",
                footer=(PROGRAM,)),
    PanelAction("v", "v", "toggle_plot", "view", "Show the epoch plot instead of the table "
                "(narrow terminals); a program run: its terminal, table or plot",
                footer=(PROGRAM,)),
    PanelAction("l", "l", "show_runs", "runs", "List the runs in the runs folder and compare "
                "them: differing settings, best, speed, curves overlaid", footer=()),
    PanelAction("question_mark", "?", "show_help", "help", "Show the keys and what they do"),
    PanelAction("q", "q", "request_quit", "quit",
                "Quit the panel: training goes on unless you choose to stop it"),
)


def action_for(name: str) -> PanelAction:
    """The table's row for an action name: its key and words."""
    return next(action for action in ACTIONS if action.action == name)


def bindings() -> list[Binding]:
    return [
        Binding(a.key, a.action, a.short, show=bool(a.footer), tooltip=a.help, id=a.action,
                key_display=a.label)
        for a in ACTIONS
    ]
