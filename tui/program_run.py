"""What the panel does differently for a program run (`ctui run -- CMD`): its terminal, typing
into it, its pseudo-terminal's size, and the keys that mean nothing for it.

A mixin of CtuiApp, apart so app.py stays readable; it uses the app's model, send() and say().
"""

from __future__ import annotations

from textual import events

from ctui.engine.config import RunConfig
from ctui.engine.events import ResizeTerminal
from ctui.engine.live_settings import LIVE_SETTINGS

from .edit_screen import EditScreen
from .keys import INPUT, PROGRAM, TRAINING, action_for
from .program_input import TypedText, key_text, pasted_text
from .script_logs import ScriptLogsPanel
from .terminal_view import TerminalView

# Characters of output fed to the emulator per redraw at most (pyte takes about 0.6 MB/s on one
# core): a program printing faster shows its newest output, and the log says some was skipped.
FEED_PER_REDRAW = 32 * 1024
SKIP_NOTE_SECONDS = 30.0  # at most one "output skipped" line in the log this often
LEAVE_INPUT = action_for("leave_input")

# The keys that mean nothing for a program run, and why, in one line each.
NOT_FOR_PROGRAMS = {
    "start": "a program run is started from the shell with `ctui run -- CMD`; this one "
             "restarts on its own when its program fails",
    "resume": "ctui holds no checkpoint of a program run; the program resumes from its own, "
              "if it saves any (run it again with `ctui run -- CMD`)",
    "checkpoint": "ctui cannot ask a program to save a checkpoint; it saves its own",
    "autotune": "autotune times trials inside ctui's own training loop; for a program, w/W and "
                "b/B change its DataLoader (inside the pass where it can) and the log times "
                "each pass",
}


class ProgramRunMixin:
    """Input mode, the terminal's size and the program-only keys, for CtuiApp."""

    def _init_program_run(self) -> None:
        self.input_mode = False
        self.typed = TypedText(self.send, self.set_timer, self.say)
        self._pty_size_sent: tuple[int, int] | None = None
        self._skip_noted_at = float("-inf")
        self._skipped_output = 0

    def _reset_program_run(self) -> None:
        """A new connection: nothing sent to its program yet, nothing of another run shown."""
        self.typed.clear()  # for the program left behind
        self._leave_input_mode(quiet=True)
        self._pty_size_sent = None
        self.query_one(ScriptLogsPanel).clear()
        terminal = self.query_one(TerminalView)
        terminal.clear()
        terminal.screen.remove_class("-program", "show-epochs", "zoom-terminal")

    # ------------------------------------------------------------ drawing

    def _draw_program(self, terminal: TerminalView) -> None:
        """The program's new output into the terminal view; its pty sized to the view."""
        model = self.model
        if model.program_run and not terminal.screen.has_class("-program"):
            terminal.screen.add_class("-program")
            terminal.focus()  # so pgup/pgdn scroll it back
        self.query_one(ScriptLogsPanel).show(model.program_run)
        output, skipped = model.take_output(FEED_PER_REDRAW)
        if output:
            terminal.feed(output)
        self._note_skipped(skipped)
        if self.input_mode and not self._program_takes_input():
            self._leave_input_mode(quiet=True)
            self.say("stopped typing into the program: it is no longer running", "warning")
        columns, rows = terminal.size
        if (model.program_run and model.live and columns > 0 and rows > 0
                and (columns, rows) != self._pty_size_sent):
            self._pty_size_sent = (columns, rows)
            self.send(ResizeTerminal(columns=columns, rows=rows))

    def _note_skipped(self, skipped: int) -> None:
        self._skipped_output += skipped
        now = self.clock()
        if self._skipped_output and now - self._skip_noted_at >= SKIP_NOTE_SECONDS:
            self.say(f"skipped {self._skipped_output / 1024:,.0f} KiB of the program's output "
                     "to keep up with its newest (a long history, or fast printing); its run "
                     "folder's output.log has all of it", "warning")
            self._skip_noted_at, self._skipped_output = now, 0

    def keys_mode(self) -> str:
        if self.input_mode:
            return INPUT
        return PROGRAM if self.model.program_run else TRAINING

    def on_terminal_view_resized(self, message: TerminalView.Resized) -> None:
        self._dirty = True  # the next redraw resizes the program's terminal to match

    # ------------------------------------------------------------ input mode

    def _program_takes_input(self) -> bool:
        model = self.model
        return model.program_run and model.live and model.program is not None and (
            model.program_ended is None or model.program_ended.restarting)

    def action_type_into_program(self) -> None:
        if not self.model.program_run:
            self.say("typing goes to a program run (`ctui run -- CMD`); this is a training run "
                     "ctui runs itself", "warning")
            return
        if not self._program_takes_input():
            self.say("the program is not running: nothing would read what you type", "warning")
            return
        screen = self.query_one(TerminalView).screen
        screen.remove_class("show-epochs", "show-plot")  # the terminal in view, then type
        terminal = self.query_one(TerminalView)
        self.input_mode = True
        terminal.set_input_mode(True)
        terminal.focus()
        self._dirty = True
        # the log only: a toast would cover the keys bar that says how to come back
        self.say(f"typing into the program; {LEAVE_INPUT.label} comes back to the panel",
                 toast=False)

    def action_leave_input(self) -> None:
        if not self.input_mode:
            self.say(f"{LEAVE_INPUT.label} leaves typing into the program; you are not typing "
                     "into it (i starts)", "warning")
            return
        self._leave_input_mode()

    def _leave_input_mode(self, quiet: bool = False) -> None:
        if not self.input_mode:
            return
        self.typed.flush()
        self.input_mode = False
        self.query_one(TerminalView).set_input_mode(False)
        self._dirty = True
        if not quiet:
            self.say("keys work the panel again; i types into the program", toast=False)

    async def on_event(self, event: events.Event) -> None:
        """In input mode every key (and a paste) goes to the program, before any binding, the
        panel's ctrl+p and ctrl+q included; only LEAVE_INPUT comes back."""
        if (self.input_mode and isinstance(event, (events.Key, events.Paste))
                and not event.is_forwarded and len(self.screen_stack) == 1):
            self._typed_event(event)
            return
        await super().on_event(event)

    def _typed_event(self, event: events.Key | events.Paste) -> None:
        emulator = self.query_one(TerminalView).emulator
        if isinstance(event, events.Paste):
            self.typed.type(pasted_text(event.text, emulator.bracketed_paste))
            return
        if event.key == LEAVE_INPUT.key:
            self._leave_input_mode()
            return
        text = key_text(event.key, event.character, emulator.application_cursor)
        if text:
            self.typed.type(text)

    # ------------------------------------------------------------ other keys

    def action_zoom_terminal(self) -> None:
        if not self.model.program_run:
            self.say("z shows a program run's terminal on the whole screen; this is a training "
                     "run", "warning")
            return
        screen = self.query_one(TerminalView).screen
        screen.toggle_class("zoom-terminal")
        screen.remove_class("show-epochs", "show-plot")
        self._dirty = True

    def _cycle_program_view(self) -> None:
        """v on a program run: the terminal, then the epoch table (and plot, if wide), then the
        plot alone (narrow), then the terminal again."""
        screen = self.query_one(TerminalView).screen
        if not screen.has_class("show-epochs"):
            screen.add_class("show-epochs")
            screen.remove_class("zoom-terminal")
        elif screen.has_class("-narrow") and not screen.has_class("show-plot"):
            screen.add_class("show-plot")
        else:
            screen.remove_class("show-epochs", "show-plot")
        self._dirty = True

    def _edit_program_loader(self) -> None:
        """e on a program run: its observed DataLoader's batch size and workers."""
        current = self._live_settings("edit")
        if current is None:
            return
        config = RunConfig(runs_dir=str(self.launch.runs_dir)).replace(
            **{name: getattr(current, name) for name in LIVE_SETTINGS})
        hint = "the program's DataLoader changes inside its pass where it can, else at the next"
        self.push_screen(EditScreen(config, live=True, names=list(LIVE_SETTINGS), hint=hint),
                         self._apply_program_edits)

    def _apply_program_edits(self, changes: dict | None) -> None:
        for name, value in (changes or {}).items():
            self.send(LIVE_SETTINGS[name].command_for(value))

    def _refuse_for_program(self, what: str) -> bool:
        """True (and why, in the log) when `what` means nothing for a program run."""
        if not self.model.program_run:
            return False
        self.say(f"{what}: {NOT_FOR_PROGRAMS[what]}", "warning")
        return True
