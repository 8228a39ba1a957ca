"""Every panel action in one table: the key bindings, the footer, the `?` screen and the command
palette are all made from it."""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True)
class PanelAction:
    key: str  # Textual key name
    label: str  # what the help screen shows as the key
    action: str  # app action name, without "action_"
    short: str  # footer text
    help: str  # one line for the help screen and the palette
    group: str = ""  # keys sharing one footer entry, named by the group: "b/B batch"
    footer: bool = True


ACTIONS: tuple[PanelAction, ...] = (
    PanelAction("s", "s", "start_run", "start",
                "Start the run (a new run with the current settings once this one has ended)"),
    PanelAction("p", "p", "toggle_pause", "pause",
                "Pause or resume training at the next step"),
    PanelAction("x", "x", "stop_run", "stop", "Save a checkpoint, then stop the run"),
    PanelAction("c", "c", "checkpoint", "ckpt", "Save a checkpoint now"),
    PanelAction("b", "b", "halve_batch", "batch/2", "Halve the batch size (from the next step)",
                group="batch"),
    PanelAction("B", "B", "double_batch", "batch*2", "Double the batch size (from the next step)",
                group="batch"),
    PanelAction("w", "w", "fewer_workers", "workers-1", "One DataLoader worker fewer",
                group="workers"),
    PanelAction("W", "W", "more_workers", "workers+1", "One DataLoader worker more",
                group="workers"),
    PanelAction("e", "e", "edit_settings", "edit", "Edit any setting in a dialog"),
    PanelAction("r", "r", "resume_run", "resume",
                "Resume a stopped or interrupted run from its latest checkpoint"),
    PanelAction("t", "t", "autotune", "tune",
                "Autotune: time trials of workers and batch size, then offer the best"),
    PanelAction("v", "v", "toggle_plot", "plot",
                "Show the epoch plot instead of the table (narrow terminals)", footer=False),
    PanelAction("question_mark", "?", "show_help", "help", "Show the keys and what they do"),
    PanelAction("q", "q", "request_quit", "quit",
                "Quit the panel: training goes on unless you choose to stop it"),
)


def bindings() -> list[Binding]:
    return [
        Binding(a.key, a.action, a.short, show=a.footer, tooltip=a.help, id=a.action,
                key_display=a.label)
        for a in ACTIONS
    ]
