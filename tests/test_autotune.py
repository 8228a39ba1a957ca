"""Autotune's decisions and the advisor, on deterministic fake timings: a pick only when it is
apart from the rest beyond the noise, the current setting kept within the noise, no batch above a
quarter of the training set, the advisor and autotune agreeing, and an advisor that speaks after
seconds of training rather than after a count of log intervals."""

from __future__ import annotations

import itertools

import pytest

from ctui.engine.advisor import SETTLE_SECONDS, Advisor
from ctui.engine.bottleneck import COMPUTE_BOUND, INPUT_BOUND, judge
from ctui.engine.cli.tune_cmd import report_table
from ctui.engine.events import Event, TuneReport
from ctui.engine.tuning import MIN_REPEATS, Measurement, _rate, search

JITTER = (0.0, 0.03, -0.03, 0.01, -0.01)  # +-3%: the repeats' spread


class FakeBox:
    """Timings from a table of true speeds with a repeating jitter, on a fake clock that each
    trial moves on by its length."""

    def __init__(self, speeds: dict[tuple[int, int], float], wait: float = 0.6,
                 jitter: tuple[float, ...] = JITTER, oom_from: int | None = None) -> None:
        self.speeds, self.wait, self.oom_from = speeds, wait, oom_from
        self.now = 0.0
        self.calls: list[tuple[int, int]] = []
        self._jitter = {key: itertools.cycle(jitter) for key in speeds}

    def clock(self) -> float:
        return self.now

    def measure(self, batch_size: int, workers: int, seconds: float,
                deadline: float) -> Measurement | None:
        self.calls.append((batch_size, workers))
        self.now += seconds + 0.1  # the warm-up
        if self.oom_from is not None and batch_size >= self.oom_from:
            return None
        speed = self.speeds[batch_size, workers]
        return Measurement(speed * (1 + next(self._jitter[batch_size, workers])), self.wait)

    def tune(self, current=(64, 0), train_size=10_000, cores=2, budget=60.0, **kwargs):
        return search(current, train_size, cores, budget, self.measure, lambda line: None,
                      clock=self.clock, **kwargs)


def grid(workers: dict[int, float], batches: dict[int, float] | None = None):
    """Speeds for batch 64 by worker count, and for larger batches (at any worker count)."""
    speeds = {(64, w): speed for w, speed in workers.items()}
    for size, speed in (batches or {}).items():
        speeds.update({(size, w): speed for w in workers})
    return speeds


def rows_by_setting(report: TuneReport) -> dict[tuple[int, int], tuple]:
    return {row[:2]: row for row in report.timed()}


def test_a_setting_faster_beyond_the_noise_is_picked_and_the_spread_is_reported():
    box = FakeBox(grid({0: 100.0, 1: 190.0, 2: 300.0}, {128: 300.0, 256: 300.0, 512: 300.0}))
    report = box.tune(train_size=2048)
    assert (report.best_batch_size, report.best_num_workers) == (64, 2)
    rows = rows_by_setting(report)
    _, _, median, note, low, high, trials = rows[64, 2]
    assert median == pytest.approx(300.0) and not note
    assert (low, high) == (pytest.approx(291.0), pytest.approx(309.0))
    assert trials >= MIN_REPEATS
    assert "2 workers: faster beyond the noise" in report.summary
    # Batch sizes at the same speed: within noise, batch 64 stays.
    assert "batch size 64 (differences within the noise)" in report.summary
    table = report_table(report)
    assert "291-309" in table and "<- best" in table


def test_within_the_noise_the_current_setting_is_kept():
    # 2 workers' median is highest, but its timings overlap the current setting's.
    box = FakeBox(grid({0: 100.0, 1: 101.0, 2: 102.0}, {128: 101.0}),
                  jitter=(0.0, 0.05, -0.05))
    report = box.tune(train_size=512)
    assert (report.best_batch_size, report.best_num_workers) == (64, 0)
    assert "0 workers (differences within the noise)" in report.summary
    table = report_table(report)
    assert "<- keep" in table and "<- best" not in table
    # It tried hard before giving up: more repeats than the minimum for the contenders.
    assert max(trials for *_, trials in report.timed()) > MIN_REPEATS


def test_a_steady_gain_under_five_percent_is_within_the_noise():
    box = FakeBox(grid({0: 100.0, 1: 104.0, 2: 104.5}), jitter=(0.0, 0.001, -0.001))
    report = box.tune(train_size=100)
    assert report.best_num_workers == 0
    assert "0 workers (differences within the noise)" in report.summary


def test_when_the_current_setting_is_clearly_slower_the_nearest_of_the_tied_fastest_wins():
    box = FakeBox(grid({0: 100.0, 1: 200.0, 2: 201.0}), jitter=(0.0, 0.04, -0.04))
    report = box.tune(train_size=100)  # no batch sizes to try
    assert report.best_num_workers == 1
    assert "1 worker (differences within the noise)" in report.summary


def test_ten_searches_on_the_same_noisy_box_agree():
    picks = set()
    for start in range(10):  # each search meets the jitter at another phase
        jitter = JITTER[start % 5:] + JITTER[:start % 5]
        box = FakeBox(grid({0: 100.0, 1: 180.0, 2: 185.0}, {128: 186.0, 256: 184.0, 512: 183.0}),
                      jitter=jitter)
        report = box.tune(train_size=2048)
        picks.add((report.best_batch_size, report.best_num_workers))
    assert picks == {(64, 1)}  # 2 workers and bigger batches are within noise of 1 worker


def test_no_batch_size_above_a_quarter_of_the_training_set_is_tried_or_offered():
    speeds = grid({0: 100.0, 1: 100.0, 2: 100.0},
                  {size: 100.0 * size for size in (128, 256, 512, 1024)})
    box = FakeBox(speeds, wait=0.0)
    report = box.tune(train_size=1000)
    assert max(batch for batch, _ in box.calls) == 128  # 256 > 1000 / 4
    assert report.best_batch_size == 128
    box = FakeBox(speeds, wait=0.0)
    report = box.tune(current=(256, 0), train_size=1000)
    assert {batch for batch, _ in box.calls} == {256}
    assert "no larger batch tried (above a quarter of the 1000 samples)" in report.summary


def test_out_of_memory_stops_the_batch_sizes_there():
    box = FakeBox(grid({0: 100.0, 1: 100.0, 2: 100.0}, {128: 150.0, 256: 1.0, 512: 1.0}),
                  wait=0.0, oom_from=256)
    report = box.tune(train_size=4096)
    rows = rows_by_setting(report)
    assert rows[256, 0][3] == "out of memory" and (512, 0) not in rows
    assert not any(batch == 512 for batch, _ in box.calls)
    assert report.best_batch_size == 128


def test_the_budget_is_kept_and_too_little_time_to_tell_keeps_the_current_setting():
    box = FakeBox(grid({0: 100.0, 1: 300.0, 2: 300.0}, {128: 300.0}))
    report = box.tune(budget=1.0, train_size=512)
    assert report.seconds <= 1.0 + 0.25 + 0.1  # a trial started in time may finish late
    assert (report.best_batch_size, report.best_num_workers) == (64, 0)
    assert "time budget ended" in report.summary


def test_a_trial_that_cannot_fit_its_warm_up_before_the_deadline_is_not_started():
    class SlowSteps(FakeBox):
        def measure(self, batch_size, workers, seconds, deadline):
            measured = super().measure(batch_size, workers, seconds, deadline)
            self.now += 3.0  # slow steps: a trial takes longer than asked
            return Measurement(measured.samples_per_second, self.wait, step_seconds=1.0)

    box = SlowSteps(grid({0: 100.0, 1: 300.0, 2: 300.0}, {128: 300.0}))
    report = box.tune(budget=12.0, train_size=512)
    # Each trial needs (2 warm-up + 2) steps of 1 s: after the first, only one more fits.
    assert len(box.calls) == 2 and report.seconds <= 12.0
    assert (report.best_batch_size, report.best_num_workers) == (64, 0)


def feed(advisor: Advisor, clock: list[float], wait: float, seconds: float, every: float,
         **settings):
    """Logged intervals of `wait` every `every` seconds for `seconds`; the advice given."""
    said = []
    for _ in range(round(seconds / every)):
        clock[0] += every
        advice = advisor.observe(wait, None, **{"batch_size": 64, "num_workers": 0,
                                                "device": "cpu", **settings})
        if advice is not None:
            said.append((clock[0], advice))
    return said


@pytest.mark.parametrize("wait", [0.02, 0.2, 0.3, 0.9])
def test_advisor_and_autotune_reach_the_same_verdict_from_the_same_data_wait(wait):
    clock = [0.0]
    advisor = Advisor(cores=2, clock=lambda: clock[0])
    ((_, advice),) = feed(advisor, clock, wait, 10.0, 0.5)
    box = FakeBox(grid({0: 100.0, 1: 100.0, 2: 100.0}), wait=wait)
    report = box.tune(train_size=100)
    assert report.verdict == advice.verdict == judge(wait).verdict
    tried = {workers for _, workers in box.calls}
    if advice.verdict == INPUT_BOUND:
        assert "raise num_workers" in advice.message and tried == {0, 1, 2}
    else:
        assert "more workers will not" in advice.message and tried == {0}
        assert "0 workers (more cannot help)" in report.summary


def test_autotune_follows_the_advisors_verdict_when_it_has_one():
    clock = [0.0]
    advisor = Advisor(cores=4, clock=lambda: clock[0])
    feed(advisor, clock, 0.05, 10.0, 0.5, num_workers=2)
    # The trials alone would say input-bound; the advisor's longer view says compute-bound.
    box = FakeBox({(64, w): 100.0 + w for w in range(5)}, wait=0.5)
    report = box.tune(current=(64, 2), cores=4, train_size=100,
                      bottleneck=advisor.judgement())
    assert report.verdict == COMPUTE_BOUND
    assert {workers for _, workers in box.calls} == {0, 1, 2}  # never more than now
    assert report.best_num_workers <= 2


def test_advisor_speaks_after_seconds_of_training_however_short_the_intervals():
    clock = [0.0]
    advisor = Advisor(cores=8, clock=lambda: clock[0])
    said = feed(advisor, clock, 0.6, 10.0, 0.25)  # 40 short logged intervals
    ((when, advice),) = said
    assert SETTLE_SECONDS <= when - 0.25 < SETTLE_SECONDS + 0.5
    assert advice.verdict == INPUT_BOUND
    assert "raise num_workers (now 0; try 1, this machine has 8 cores)" in advice.message


def test_advisor_with_a_long_log_interval_speaks_at_the_second_interval():
    clock = [0.0]
    advisor = Advisor(cores=8, clock=lambda: clock[0])
    said = feed(advisor, clock, 0.02, 60.0, 20.0)
    assert [when for when, _ in said] == [40.0]
    assert said[0][1].verdict == COMPUTE_BOUND


def test_advisor_follows_a_change_and_starts_afresh_after_a_reset():
    clock = [0.0]
    advisor = Advisor(cores=8, clock=lambda: clock[0])
    assert [a.verdict for _, a in feed(advisor, clock, 0.6, 10.0, 0.5)] == [INPUT_BOUND]
    # The old intervals age out of the window; the verdict follows the new data wait.
    later = feed(advisor, clock, 0.01, 60.0, 0.5)
    assert [a.verdict for _, a in later] == [COMPUTE_BOUND]
    advisor.reset()
    said = []
    for _ in range(10):
        clock[0] += 0.5
        said.append(advisor.observe(0.02, 0.3, batch_size=32, num_workers=4, device="cuda:0"))
    assert said[:6] == [None] * 6  # under SETTLE_SECONDS since the reset
    advice = said[6]
    assert advice.verdict == "gpu-underused" and "larger batch size (now 32)" in advice.message
    assert said[7:] == [None] * 3  # said once, not at every interval


def test_after_autotune_timed_more_workers_no_faster_the_advisor_stops_suggesting_them():
    clock = [0.0]
    advisor = Advisor(cores=8, clock=lambda: clock[0])
    settings = {"batch_size": 64, "num_workers": 2, "device": "cpu"}
    ((_, before),) = feed(advisor, clock, 0.6, 10.0, 0.5, num_workers=2)
    assert "try 4" in before.message
    after = advisor.adopt(advisor.judgement(), more_workers_timed_no_faster=True, **settings)
    assert after.verdict == INPUT_BOUND and "try" not in after.message
    assert "autotune timed more workers no faster: make loading cheaper" in after.message
    assert feed(advisor, clock, 0.6, 10.0, 0.5, num_workers=2) == []  # and stays with it
    advisor.reset()  # new settings: judged afresh
    ((_, fresh),) = feed(advisor, clock, 0.6, 10.0, 0.5, num_workers=4)
    assert "try 8" in fresh.message


def test_rate_counts_whole_bursts_not_a_full_queue_at_the_start():
    # Two workers deliver a pair of batches every second (64 samples each); the window opens
    # with two batches already queued, which a plain count would add to the first second.
    fetched, samples, t = [], 0, 0.0
    for _ in range(2):  # queued: no wait
        t += 0.01
        fetched.append((0.0, t, samples))
        samples += 64
    for burst in range(1, 6):
        t = float(burst)
        fetched.append((0.5, t, samples))  # waited for the burst
        samples += 64
        fetched.append((0.0, t + 0.01, samples))
        samples += 64
    end = 5.02
    assert samples / end > 140  # the plain count: 768 samples in 5 s
    assert _rate(fetched, samples, 0.0, end) == pytest.approx(128.0)


def test_tune_report_survives_the_wire_with_its_spreads():
    report = FakeBox(grid({0: 100.0, 1: 190.0, 2: 300.0})).tune(train_size=100)
    again = Event.from_dict(report.to_dict())
    assert again == report and again.spreads and again.summary


@pytest.mark.slow
def test_in_a_live_run_the_advisor_adopts_autotunes_verdict(tmp_path):
    from ctui.engine import Engine, State
    from ctui.engine.events import Advice

    from helpers import tiny

    engine = Engine(tiny(epochs=1, batch_size=64, run_dir=str(tmp_path / "run")))
    engine.start()
    engine.tune(budget_seconds=2)  # at the first step: before the advisor has a verdict
    engine.wait()
    assert engine.state == State.FINISHED
    history = list(engine.history)
    (report,) = [e for e in history if isinstance(e, TuneReport)]
    advice = [e for e in history if isinstance(e, Advice)]
    assert advice and advice[0].verdict == report.verdict
    assert history.index(advice[0]) > history.index(report)
    if report.verdict != INPUT_BOUND:  # compute-bound: no more workers were tried
        assert all(workers <= 0 for _, workers, _, _ in report.rows)
