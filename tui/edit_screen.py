"""`e`: edit any run setting. Batch size and workers change the live run at the next step; the
others apply to the next run started (s) or resumed (r). Bad values are refused with a message."""

from __future__ import annotations

import dataclasses
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from ctui.engine.config import ConfigError, RunConfig, parse_duration
from ctui.engine.live_settings import LIVE_SETTINGS

HIDDEN = ("run_dir", "runs_dir")  # a run's folder is chosen when it starts
TRUE, FALSE = ("yes", "true", "on", "1"), ("no", "false", "off", "0")


def editable_settings() -> list[str]:
    names = [f.name for f in dataclasses.fields(RunConfig) if f.name not in HIDDEN]
    return list(LIVE_SETTINGS) + [name for name in names if name not in LIVE_SETTINGS]


def show_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return "x".join(str(part) for part in value)
    return str(value)


def parse_value(name: str, text: str, current: Any) -> Any:
    """The typed value for a setting, or ConfigError naming it and what is allowed."""
    text = text.strip()
    if isinstance(current, bool):
        if text.lower() in TRUE + FALSE:
            return text.lower() in TRUE
        raise ConfigError(name, f"{text!r} is not allowed: use yes or no")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(name, f"{text!r} is not a whole number") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(name, f"{text!r} is not a number") from None
    if isinstance(current, tuple):
        try:
            return tuple(int(part) for part in text.lower().split("x"))
        except ValueError:
            raise ConfigError(name, f"{text!r} is not a shape: use CxHxW, e.g. 3x32x32") \
                from None
    if name == "time_limit":
        if not text:
            return None
        try:
            return parse_duration(text)
        except ValueError:
            raise ConfigError(name, f"{text!r} is not a duration: use e.g. 11h50m, 90m or "
                                    "3600s, or leave it empty for none") from None
    if current is None and not text:
        return None
    return text


def validate(config: RunConfig, texts: dict[str, str]) -> dict[str, Any]:
    """The settings whose text changed, typed and checked together; raises ConfigError."""
    changes = {}
    for name, text in texts.items():
        current = getattr(config, name)
        if text.strip() == show_value(current):
            continue
        changes[name] = parse_value(name, text, current)
    if changes:
        config.replace(**changes)  # validates the whole config; raises ConfigError
    return changes


class EditScreen(ModalScreen[dict | None]):
    """Dismisses with {setting: value} of what changed, or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "apply", "Apply")]

    def __init__(self, config: RunConfig, live: bool, names: list[str] | None = None,
                 hint: str = "") -> None:
        """`names`: only these settings (a program run: its DataLoader's); `hint`: the note
        under them."""
        super().__init__()
        self.config = config
        self.live = live
        self.names = names or editable_settings()
        self.hint = hint

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="edit") as box:
            box.border_title = "Settings"
            box.border_subtitle = "enter applies · esc cancels"
            with VerticalScroll():
                for name in self.names:
                    note = " (live)" if name in LIVE_SETTINGS and self.live else ""
                    with Horizontal(classes="setting"):
                        yield Label(name.replace("_", " ") + note)
                        yield Input(show_value(getattr(self.config, name)), id=f"set-{name}",
                                    compact=True, select_on_focus=True)
            hint = ("batch size and workers change at the next step; the rest apply to the "
                    "next run (s) or resume (r)") if self.live else \
                "these apply to the next run (s) or resume (r)"
            yield Static(self.hint or hint, classes="note")
            yield Static("", id="error")

    def on_mount(self) -> None:
        self.query(Input).first().focus()  # typing and enter work at once

    def action_apply(self) -> None:
        texts = {name: self.query_one(f"#set-{name}", Input).value
                 for name in self.names}
        try:
            changes = validate(self.config, texts)
        except ConfigError as error:
            self.query_one("#error", Static).update(f"refused: {error}")
            return
        self.dismiss(changes)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_apply()

    def action_cancel(self) -> None:
        self.dismiss(None)
