"""Small text helpers shared by the panels: numbers people read at a glance."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text

NA = "n/a"
SPARK = "▁▂▃▄▅▆▇█"


def na(value: float | None, template: str = "{:.0f}") -> str:
    """A figure, or n/a when the source could not give it."""
    return NA if value is None else template.format(value)


def clock(seconds: float | None) -> str:
    """1:02:03, 2:03 or n/a."""
    if seconds is None:
        return NA
    seconds = int(round(max(seconds, 0)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def tail(label: str, text: str, width: int) -> str:
    """label + text in `width` cells, cutting the text's start when it is too long: the end
    of a path or address is the part that tells runs apart."""
    room = width - len(label)
    if len(text) <= room:
        return label + text
    return label + "…" + text[len(text) - max(room - 1, 1):]


def ago(seconds: float) -> str:
    """How long ago, to the unit that matters: 8s, 3m 12s, 2h 05m."""
    seconds = int(max(seconds, 0))
    if seconds < 60:
        return f"{seconds}s ago"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s ago"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m ago"


def size(mb: float | None) -> str:
    """MiB below 1 GiB, else GiB with one decimal."""
    if mb is None:
        return NA
    return f"{mb / 1024:.1f} GiB" if mb >= 1024 else f"{mb:.0f} MiB"


def used_of(used_mb: float | None, total_mb: float | None) -> str:
    if used_mb is None or total_mb is None:
        return f"{size(used_mb)} / {size(total_mb)}"
    if total_mb >= 1024:
        return f"{used_mb / 1024:.1f}/{total_mb / 1024:.1f} GiB"
    return f"{used_mb:.0f}/{total_mb:.0f} MiB"


def level_style(percent: float | None) -> str:
    """Green while there is headroom, yellow when busy, red when saturated."""
    if percent is None:
        return "dim"
    if percent >= 90:
        return "red"
    if percent >= 60:
        return "yellow"
    return "green"


def bar(fraction: float | None, width: int, style: str | None = None) -> Text:
    """A horizontal bar of `width` cells; empty and dim when the value is not available."""
    if fraction is None:
        return Text("·" * width, style="dim")
    fraction = min(max(fraction, 0.0), 1.0)
    full = int(round(fraction * width))
    text = Text("█" * full, style=style or level_style(fraction * 100))
    text.append("░" * (width - full), style="dim")
    return text


def sparkline(values: Iterable[float | None], width: int, top: float = 100.0) -> Text:
    """The last `width` values as block characters (a gap where a value was missing)."""
    values = list(values)[-width:]
    text = Text()
    for value in values:
        if value is None:
            text.append(" ")
            continue
        index = min(int(max(value, 0) / top * (len(SPARK) - 1) + 0.5), len(SPARK) - 1)
        text.append(SPARK[index], style=level_style(value / top * 100))
    return text


def core_bars(percents: Iterable[float]) -> Text:
    """One cell per CPU core, its height the core's load."""
    return sparkline(percents, width=10_000)
