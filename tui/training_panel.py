"""The training panel: state, progress, speed, settings, checkpoint age, advice and loggers."""

from __future__ import annotations

from collections.abc import Callable

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from ctui.engine.events import State

from .format import ago, bar, clock
from .model import RunModel

STATE_STYLES = {
    State.RUNNING: "bold green", State.PAUSED: "bold yellow", State.STOPPING: "bold yellow",
    State.FINISHED: "bold cyan", State.STOPPED: "bold yellow", State.FAILED: "bold red",
    State.INTERRUPTED: "bold red", State.IDLE: "bold",
}
ADVICE_STYLES = {"input-bound": "yellow", "gpu-underused": "yellow", "compute-bound": "green"}


class TrainingPanel(Static):
    """Reads the RunModel when the app redraws; `clock` gives the time for the checkpoint age."""

    def __init__(self, clock_fn: Callable[[], float], **kwargs) -> None:
        super().__init__(**kwargs)
        self._clock = clock_fn
        self.border_title = "Training"

    def show(self, model: RunModel) -> None:
        self.border_title = f"Training · {model.name}" if model.name else "Training"
        self.update(self._render_model(model))

    def _render_model(self, model: RunModel) -> Table | Text:
        if not model.state:
            return Text("Connecting to the run…" if model.name else "Looking for runs…",
                        style="dim")
        settings, step = model.settings, model.step
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True)
        state = Text(model.state, style=STATE_STYLES.get(model.state, "bold"))
        if model.reason and model.state != State.RUNNING:
            state.append(f": {model.reason}", style="dim")
        grid.add_row(state)

        epochs = settings.epochs if settings else 0
        line = Text(f"epoch {model.current_epoch}/{epochs or '?'}")
        if step is not None:
            line.append(f"  step {step.step}/{step.steps_in_epoch}")
        grid.add_row(line)

        width = max(self.size.width - 24, 8)
        fraction = step.step / step.steps_in_epoch if step and step.steps_in_epoch else None
        if model.state == State.FINISHED:
            fraction = 1.0
        progress = bar(fraction, width, style="cyan")
        progress.append(f" {fraction:4.0%}" if fraction is not None else "")
        if model.state in (State.RUNNING, State.PAUSED) and step is not None:
            progress.append(f" ETA {clock(model.epoch_seconds_left())}")
            total = model.run_seconds_left()
            if total is not None and settings and step.epoch < settings.epochs:
                progress.append(f" run {clock(total)}", style="dim")
        grid.add_row(progress)

        if step is not None:
            grid.add_row(Text(f"{step.samples_per_second:,.0f} samples/s  "
                              f"data wait {step.data_wait_fraction:.0%}  loss {step.loss:.4f}"))
        if settings is not None:
            # The rate in force: the latest logged step's (the scheduler changes it each epoch;
            # Settings only come when a setting is changed).
            lr = step.lr if step is not None else settings.lr
            grid.add_row(Text(f"batch {settings.batch_size}  workers {settings.num_workers}  "
                              f"{settings.device} {settings.precision}  lr {lr:.3g}"))
        grid.add_row(self._checkpoint_line(model))
        if model.advice is not None and model.advice.message:
            grid.add_row(Text(f"▸ {model.advice.message}",
                              style=ADVICE_STYLES.get(model.advice.verdict, "")))
        for line in self._logger_lines(model):
            grid.add_row(Text(line, style="dim"))
        return grid

    def _checkpoint_line(self, model: RunModel) -> Text:
        saved = model.last_checkpoint
        if saved is None:
            return Text("checkpoint: none yet", style="dim")
        return Text(f"checkpoint {ago(self._clock() - saved.time)} "
                    f"(epoch {saved.epoch}, step {saved.step})")

    @staticmethod
    def _logger_lines(model: RunModel) -> list[str]:
        info = model.loggers
        if info is None:
            return []
        lines = []
        if info.tensorboard_dir:
            lines.append(f"TensorBoard: {info.tensorboard_dir}")
        if info.wandb_mode:
            where = info.wandb_url or info.wandb_sync_command
            lines.append(f"wandb {info.wandb_mode}" + (f": {where}" if where else ""))
        return lines
