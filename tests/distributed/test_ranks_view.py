"""The panel's view of a data-parallel job's ranks: the global batch, and a slow rank marked."""

from __future__ import annotations

from ctui.engine.events import Event, RankStats
from ctui.tui.model import RunModel
from ctui.tui.ranks import rank_lines


def test_a_slow_rank_stands_out_and_the_global_batch_shows():
    stats = RankStats(world_size=3, global_batch_size=96, restarts=1,
                      rows=((0, 1000.0, 0.02), (1, 980.0, 0.03), (2, 400.0, 0.61)))
    lines = [line.plain for line in rank_lines(stats)]
    assert lines[0].startswith("3 ranks  global batch 96 (32 per rank)") and "restarts 1" in \
        lines[0]
    assert "rank 2: 400 samples/s  wait 61%  slow (41% of the median)" in lines[3]
    assert not any("slow" in line for line in lines[1:3])


def test_a_rank_starved_by_its_dataloader_stands_out_by_its_data_wait():
    stats = RankStats(world_size=2, global_batch_size=16,
                      rows=((0, 500.0, 0.05), (1, 480.0, 0.55)))
    lines = [line.plain for line in rank_lines(stats)]
    assert "rank 1: 480 samples/s  wait 55%  waits for data" in lines[2]
    assert "waits" not in lines[1]


def test_many_ranks_show_the_slowest_and_a_count():
    rows = tuple((rank, 1000.0 - rank, 0.0) for rank in range(16))
    lines = [line.plain for line in rank_lines(RankStats(world_size=16, global_batch_size=256,
                                                         rows=rows))]
    # the 7 slowest (ranks 9-15), in rank order, then the rest in one line
    assert len(lines) == 9 and lines[1].startswith("  rank 9:") and \
        lines[7].startswith("  rank 15:") and lines[-1].strip() == "… 9 more, all faster"


def test_one_process_shows_nothing_and_the_event_travels_as_plain_values():
    assert rank_lines(None) == [] and rank_lines(RankStats(world_size=1)) == []
    stats = RankStats(world_size=2, global_batch_size=16, rows=((0, 10.0, 0.1), (1, 9.0, 0.2)))
    again = Event.from_dict(stats.to_dict())
    assert again == stats
    model = RunModel()
    model.apply(again)
    assert model.ranks == stats


class FakeApp:
    """What reattach_after_restart uses of the panel's App."""

    def __init__(self, serving_after: int) -> None:
        self._generation = 1
        self.said: list[str] = []
        self.tries = 0
        self.serving_after = serving_after

    def say(self, message: str, level: str = "info") -> None:
        self.said.append(message)

    async def attach(self, run) -> None:
        self.tries += 1
        if self.tries < self.serving_after:
            raise ConnectionRefusedError("the new rank 0 is still starting")


def test_the_panel_attaches_again_when_the_restarted_rank_0_serves(monkeypatch, tmp_path):
    import asyncio
    from types import SimpleNamespace

    import ctui.engine.host.registry as registry
    import ctui.tui.ranks as ranks

    run = SimpleNamespace(run_dir=tmp_path)
    monkeypatch.setattr(registry, "host_is_live", lambda run_dir: True)
    monkeypatch.setattr(asyncio, "sleep", _no_wait)
    app = FakeApp(serving_after=3)
    asyncio.run(ranks.reattach_after_restart(app, run, generation=1))
    assert app.tries == 3 and app.said[-1] == "attached again after the ranks restarted"
    # the launcher gone too: the run really ended, nothing to attach to
    monkeypatch.setattr(registry, "host_is_live", lambda run_dir: False)
    app = FakeApp(serving_after=1)
    asyncio.run(ranks.reattach_after_restart(app, run, generation=1))
    assert app.tries == 0 and "went away" in app.said[-1]


async def _no_wait(seconds: float) -> None:
    return None
