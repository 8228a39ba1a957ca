"""What a program run logs itself (its TensorBoard scalars and what it logs to wandb, as the
host reads them): the latest value of each tag, in a few lines under its processes. Hidden
until a value arrives; the title names where the values came from."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ctui.engine.events import ScriptScalars, ScriptScalarsLatest

MAX_TAGS = 200  # tags remembered; the first seen stay, as a script's main figures come first


class ScriptLogsPanel(Static):
    DEFAULT_CSS = """
    ScriptLogsPanel {
        display: none;
        height: auto;
        max-height: 4;
        border-top: solid $primary-darken-1;
        border-title-color: $text-primary;
        border-title-style: bold;
        padding: 0 1;
    }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.border_title = "Script's scalars"
        # (folder, tag) -> (step, value), in the order first seen
        self.latest: dict[tuple[str, str], tuple[int, float | None]] = {}
        self.sources: list[str] = []  # "tensorboard", "wandb": in the order first seen
        self._changed = False

    def add(self, event: ScriptScalars | ScriptScalarsLatest) -> None:
        """New values (ScriptScalars), or the host's latest of every tag (ScriptScalarsLatest:
        what a panel attaching late gets, as the history keeps only the newest few events)."""
        if isinstance(event, ScriptScalarsLatest):
            items = [(folder, tag, step, value) for folder, tag, step, value in event.scalars]
        else:
            items = [(event.path, tag, step, value) for tag, step, value in event.scalars]
        for folder, tag, step, value in items:
            key = (str(folder), str(tag))
            if key in self.latest or len(self.latest) < MAX_TAGS:
                previous = self.latest.get(key)
                if previous is None or step >= previous[0]:
                    self.latest[key] = (step, value)
                    self._changed = True
        source = str(event.source)[:20]
        if source and source not in self.sources and len(self.sources) < 4:
            self.sources.append(source)

    def clear(self) -> None:
        self.latest.clear()
        self._changed = True

    def show(self, program_run: bool) -> None:
        self.display = program_run and bool(self.latest)
        if not self._changed:
            return
        self._changed = False
        if self.sources:
            self.border_title = f"Script's scalars ({', '.join(self.sources)})"
        self.update(self.render_values())

    def render_values(self) -> Text:
        """`train/loss 0.2310 @120  val/acc 0.9120 @3`; a tag logged in several folders (e.g.
        SummaryWriter.add_scalars) is told apart by its folder's last part."""
        folders: dict[str, set[str]] = {}
        for folder, tag in self.latest:
            folders.setdefault(tag, set()).add(folder)
        text = Text()
        for (folder, tag), (step, value) in self.latest.items():
            if text:
                text.append("  ")
            name = tag if len(folders[tag]) == 1 else f"{tag} ({folder.rsplit('/', 1)[-1]})"
            text.append(name, style="bold")
            text.append(f" {'nan/inf' if value is None else f'{value:.4g}'}")
            text.append(f" @{step}", style="dim")
        return text
