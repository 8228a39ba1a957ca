"""A data-parallel job's ranks in the training panel: the global batch, restarts, and one line
per rank (samples/s and data wait) so a slow rank stands out."""

from __future__ import annotations

from statistics import median

from rich.text import Text

from ctui.engine.events import RankStats

SLOW = 0.8  # a rank under 80% of the median rank's samples/s is marked slow
WAIT_MARGIN = 0.15  # a data wait this much above the median rank's marks a starved rank
MAX_LINES = 8  # past this many ranks: the slowest ones, then a count of the rest


def rank_lines(stats: RankStats | None) -> list[Text]:
    """Nothing for a one-process run."""
    if stats is None or stats.world_size < 2:
        return []
    per_rank = stats.global_batch_size // max(stats.world_size, 1)
    head = Text(f"{stats.world_size} ranks  global batch {stats.global_batch_size} "
                f"({per_rank} per rank)")
    if stats.restarts:
        head.append(f"  restarts {stats.restarts}", style="yellow")
    lines = [head]
    typical = median(rate for _, rate, _ in stats.rows) if stats.rows else 0.0
    usual_wait = median(wait for _, _, wait in stats.rows) if stats.rows else 0.0
    rows = sorted(stats.rows, key=lambda row: (row[1], -row[2]))  # slowest first
    shown = rows if len(rows) <= MAX_LINES else rows[:MAX_LINES - 1]
    for rank, rate, wait in sorted(shown):
        slow = typical > 0 and rate < SLOW * typical
        # DDP makes every rank wait for the slowest at each step, so a rank starved by its
        # DataLoader shows as a data wait far above the others', more than as samples/s.
        starved = wait > usual_wait + WAIT_MARGIN
        line = Text(f"  rank {rank}: {rate:,.0f} samples/s  wait {wait:.0%}",
                    style="bold red" if slow or starved else "")
        if slow:
            line.append(f"  slow ({rate / typical:.0%} of the median)")
        elif starved:
            line.append(f"  waits for data (the median rank {usual_wait:.0%})")
        lines.append(line)
    if len(shown) < len(rows):
        lines.append(Text(f"  … {len(rows) - len(shown)} more, all faster", style="dim"))
    return lines


async def reattach_after_restart(app, run, generation: int, patience: float = 300.0) -> None:
    """A data-parallel job's rank 0 serves the socket: when the launcher restarts the ranks the
    connection ends while the host lives on. Attach again once the new rank 0 serves; give up
    when the host is gone (then the run really ended) or after `patience` seconds."""
    import asyncio
    import time

    from ctui.engine.host.registry import host_is_live

    app.say("the connection to rank 0 ended while the run host lives: the ranks are "
            "restarting; attaching again when they serve", "warning")
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline and generation == app._generation:
        await asyncio.sleep(2.0)
        if not await asyncio.to_thread(host_is_live, run.run_dir):
            app.say("the run host went away before the run ended; r resumes from the last "
                    "checkpoint", "warning")
            return
        try:
            await app.attach(run)
        except Exception:  # the new rank 0 is still starting: its socket is not there yet
            continue
        app.say("attached again after the ranks restarted")
        return
