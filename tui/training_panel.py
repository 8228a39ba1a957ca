"""The training panel: state, progress, speed, settings, checkpoint age, advice and loggers.
For a program run: the program's state (running, exited with its code, restarting), its
command, and what its DataLoaders' passes measured."""

from __future__ import annotations

import shlex
from collections.abc import Callable

from rich.console import Group
from rich.text import Text

from ctui.engine.events import State

from .fitted import FittedStatic
from .format import ago, bar, clock, tail
from .model import RunModel, exit_line
from .ranks import rank_lines

STATE_STYLES = {
    State.RUNNING: "bold green", State.PAUSED: "bold yellow", State.STOPPING: "bold yellow",
    State.FINISHED: "bold cyan", State.STOPPED: "bold yellow", State.FAILED: "bold red",
    State.INTERRUPTED: "bold red", State.IDLE: "bold",
}
ADVICE_STYLES = {"input-bound": "yellow", "gpu-underused": "yellow", "compute-bound": "green"}


class TrainingPanel(FittedStatic):
    """Reads the RunModel when the app redraws; `clock` gives the time for the checkpoint age."""

    def __init__(self, clock_fn: Callable[[], float], **kwargs) -> None:
        super().__init__(**kwargs)
        self._clock = clock_fn
        self.border_title = "Training"

    def show(self, model: RunModel) -> None:
        self.set_title(f"Training · {model.name}" if model.name else "Training")
        self.show_content(self._render_model(model))

    def _render_model(self, model: RunModel) -> Group | Text:
        if model.program_run:
            return self._render_program(model)
        if not model.state:
            return Text(model.waiting or ("Connecting to the run…" if model.name
                                          else "Looking for runs…"), style="dim")
        settings, step, at = model.settings, model.step, model.at
        width = max(self.content_size.width, 20)
        rows: list[Text] = []
        state = Text(model.state, style=STATE_STYLES.get(model.state, "bold"))
        if model.reason and model.state != State.RUNNING:
            state.append(f": {model.reason}", style="dim")
        rows.append(state)

        epochs = settings.epochs if settings else 0
        line = Text(f"epoch {model.current_epoch}/{epochs or '?'}")
        if at is not None:
            line.append(f"  step {at.step}/{at.steps_in_epoch}")
        rows.append(line)
        rows.append(self._progress_line(model, width))

        if step is not None:
            rows.append(Text(f"{step.samples_per_second:,.0f} samples/s  "
                             f"wait {step.data_wait_fraction:.0%}  loss {step.loss:.4f}"))
        if settings is not None:
            # three figures, trailing zeros kept: a decaying rate does not change the line's
            # length (and the pane's height, where it wraps) from one epoch to the next
            lr = model.lr if model.lr is not None else settings.lr
            rows.append(Text(f"bs {settings.batch_size}  workers {settings.num_workers}  "
                             f"{settings.device} {settings.precision}  lr {lr:#.3g}"))
        for line in rank_lines(model.ranks):  # a data-parallel job: its ranks
            rows.append(line)
        rows.append(self._checkpoint_line(model))
        if model.advice is not None and model.advice.message:
            rows.append(Text(f"▸ {model.advice.message}",
                             style=ADVICE_STYLES.get(model.advice.verdict, "")))
        for line in self._logger_lines(model, width):
            rows.append(Text(line, style="dim"))
        # Rows wrap at spaces rather than cut: at 80 columns every number stays whole.
        return rows_of(rows, overflow="fold")

    @staticmethod
    def _progress_line(model: RunModel, width: int) -> Text:
        """The epoch's bar, share done and time left, in `width` cells: the bar takes what
        the figures leave."""
        fraction = 1.0 if model.state == State.FINISHED else model.fraction
        figures = f" {fraction:4.0%}" if fraction is not None else ""
        run_left = ""
        if model.state in (State.RUNNING, State.PAUSED) and model.at is not None:
            figures += f" ETA {clock(model.epoch_seconds_left())}"
            total, settings = model.run_seconds_left(), model.settings
            if total is not None and settings and model.at.epoch < settings.epochs:
                run_left = f" run {clock(total)}"
        progress = bar(fraction, max(width - len(figures) - len(run_left), 4), style="cyan")
        progress.append(figures)
        progress.append(run_left, style="dim")
        return progress

    def _render_program(self, model: RunModel) -> Group:
        rows = [program_state(model)]
        program = model.program
        if program is not None:
            rows.append(Text(f"$ {shlex.join(program.argv)}", style="dim"))
        loader, settings = model.loader, model.settings
        if loader is None:
            known = settings is not None and settings.batch_size  # 0: no DataLoader known
            rows.append(Text(f"batch {settings.batch_size}  workers {settings.num_workers}  "
                             "(no pass timed yet)" if known else "no DataLoader seen yet",
                             style="dim"))
            return rows_of(rows, no_wrap=True, overflow="ellipsis")
        rows.append(Text(f"{loader.samples_per_second:,.0f} samples/s  data wait "
                         f"{loader.data_wait_fraction:.0%}  pass {loader.pass_index}"))
        current = settings or loader  # the host's settings, else what the last pass used
        line = Text(f"batch {current.batch_size}  workers {current.num_workers}  ")
        line.append(loader.loader, style="dim")
        rows.append(line)
        return rows_of(rows, no_wrap=True, overflow="ellipsis")

    def _checkpoint_line(self, model: RunModel) -> Text:
        saved, best = model.last_checkpoint, model.best
        if saved is None:
            line = Text("checkpoint: none yet", style="dim")
        else:
            line = Text(f"ckpt {ago(self._clock() - saved.time)}")
            if best is None:
                line.append(f"  epoch {saved.epoch} step {saved.step}", style="dim")
        if best is not None:
            line.append(f"  best {best.monitor} {best.value:.4g} @{best.epoch}", style="bold")
        return line

    @staticmethod
    def _logger_lines(model: RunModel, width: int) -> list[str]:
        """Where the loggers write; a long path loses its start, not its end."""
        info = model.loggers
        if info is None:
            return []
        lines = []
        if info.tensorboard_dir:
            lines.append(tail("TB ", info.tensorboard_dir, width))
        if info.wandb_mode:
            where = info.wandb_url or info.wandb_sync_command
            lines.append(tail(f"wandb {info.wandb_mode}" + (": " if where else ""), where, width))
        return lines


def rows_of(rows: list[Text], **how) -> Group:
    """One line (or wrapped lines) per Text: what a one-column Table.grid drew, at a fifth of
    its cost (a table measures every cell before rendering it; the pane is drawn every
    second)."""
    for row in rows:
        for name, value in how.items():
            setattr(row, name, value)
    return Group(*rows)


def program_state(model: RunModel) -> Text:
    """'running · attempt 2', 'restarting: attempt 1 exited with code 1', 'exited with code 0'."""
    ended, program = model.program_ended, model.program
    if ended is not None:
        if ended.restarting and model.live:
            text = Text("restarting", style="bold yellow")
            text.append(f": {exit_line(ended).removesuffix('; restarting')}", style="dim")
            return text
        good = ended.exit_code == 0
        return Text(exit_line(ended), style="bold cyan" if good else "bold red")
    if not model.connected and model.state:
        return Text(f"{model.state}: {model.reason}", style="bold red")
    if program is None:
        return Text("starting the program…", style="dim")
    state = model.state if model.state and model.state != State.IDLE else State.RUNNING
    text = Text(state, style=STATE_STYLES.get(state, "bold"))
    if program.attempt > 1:
        text.append(f" · attempt {program.attempt}")
    text.append(f"  pid {program.pid}", style="dim")
    return text
