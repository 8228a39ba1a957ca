"""The wandb tap patched into this process (fast: a stand-in for wandb's Run, no wandb import):
what it keeps of a logged dict, that the call stays the program's own, that the call itself
writes nothing, and that a failure of its own is one `disabled` record."""

from __future__ import annotations

import math
import threading
import time
import types

import numpy as np
import pytest
import torch
from programs import private_dir

from ctui.engine.observe import RecordFollower, hook


class StandInRun:
    """wandb.sdk.wandb_run.Run.log as far as the tap sees it: the steps as wandb counts them."""

    def __init__(self) -> None:
        self._local_step = 0
        self.calls: list[tuple] = []

    def log(self, data, step=None, commit=None):
        """wandb's docstring"""
        if not isinstance(data, dict):
            raise TypeError("wandb.log must be passed a dictionary")
        self.calls.append((data, step, commit))
        if step is not None:
            self._local_step = max(self._local_step, step)
        if (step is None and commit is None) or commit:
            self._local_step += 1
        return "wandb's own result"


@pytest.fixture
def tap(tmp_path, monkeypatch):
    monkeypatch.setattr(hook, "SCALARS_EVERY", 0.05)
    folder = private_dir(tmp_path / "observe")
    module = types.SimpleNamespace(Run=type("Run", (StandInRun,), {}))  # patched per test
    installed = hook.install_wandb(module, str(folder))
    assert installed is not None and module.Run._ctui_tap is installed
    follower, seen = RecordFollower(folder), []

    def records(kind="scalar"):
        seen.extend(follower.poll())
        assert follower.skipped == 0
        return [record for record in seen if record["kind"] == kind]

    installed.records = records
    installed.module = module
    yield installed
    hook.uninstall()
    assert not hasattr(module.Run, "_ctui_tap") and module.Run.log is StandInRun.log


def latest(tap) -> dict[str, tuple]:
    """tag -> (step, value) of the last record of each tag."""
    return {record["tag"]: (record["step"], record["value"]) for record in tap.records()}


def test_the_numbers_logged_arrive_the_latest_of_each_tag(tap):
    run = tap.module.Run()
    for step in range(100):
        run.log({"train/loss": 1.0 / (step + 1), "epoch": step // 10})
    run.log({"eval": {"acc": np.float32(0.5), "top": {"k5": np.float64(0.75)}}})
    run.log({"tensor": torch.tensor(0.25), "int64": np.int64(7), "zero_d": np.array(2.5)})
    run.log({"part": 1.0}, commit=False)  # the same step as the next call
    run.log({"rest": 2.0})
    run.log({"later": 3.0}, step=500)  # wandb goes on at 500 until a step after it
    run.log({"diverged": math.nan, "inf": -math.inf, "huge": 10 ** 400})
    run.log({"skipped": True, "text": "a", "list": [1.0], "many": torch.ones(3),
             "array": np.ones(2), "flag": np.bool_(True), "complex": 1j, None: 1.0, 3: 2.0,
             "media": object()})
    tap.at_exit()
    assert latest(tap) == {
        "train/loss": (99, 0.01), "epoch": (99, 9.0), "eval/acc": (100, 0.5),
        "eval/top/k5": (100, 0.75), "tensor": (101, 0.25), "int64": (101, 7.0),
        "zero_d": (101, 2.5), "part": (102, 1.0), "rest": (102, 2.0), "later": (500, 3.0),
        "diverged": (500, None), "inf": (500, None), "huge": (500, None)}


def test_the_call_and_what_it_returns_or_raises_stay_the_programs(tap):
    run = tap.module.Run()
    data = {"loss": 0.5}
    assert run.log(data, 3, commit=True) == "wandb's own result"
    assert run.calls == [(data, 3, True)] and run.calls[0][0] is data  # the same objects
    assert tap.module.Run.log.__doc__ == "wandb's docstring"
    assert tap.module.Run.log.__wrapped__ is StandInRun.log
    with pytest.raises(TypeError, match="must be passed a dictionary"):
        run.log(["not", "a", "dict"])
    tap.at_exit()
    assert latest(tap) == {"loss": (3, 0.5)} and tap.records("disabled") == []


def test_the_call_writes_nothing_and_values_are_written_a_few_times_a_second(tap):
    writers = []
    write = tap.file.write
    tap.file.write = lambda record: (writers.append(threading.current_thread().name),
                                     write(record))
    run = tap.module.Run()
    began = time.monotonic()
    calls = 0
    while time.monotonic() - began < 0.5:
        run.log({"loss": float(calls), "lr": 0.1})
        calls += 1
    time.sleep(hook.SCALARS_EVERY * 4)  # the thread's write of the last values
    assert calls > 1000 and writers and set(writers) == {"ctui-wandb-scalars"}
    written = tap.records()
    # one write each SCALARS_EVERY at most while it logged, and one after: two tags each
    assert len(written) <= 2 * (0.5 / hook.SCALARS_EVERY + 2)
    assert latest(tap)["loss"] == (calls - 1, float(calls - 1))
    hook.SCALARS_EVERY = 60  # the thread waits: what it has not written yet goes at exit
    time.sleep(0.1)
    run.log({"loss": -1.0})
    tap.at_exit()
    assert latest(tap)["loss"] == (calls, -1.0) and writers[-1] == "MainThread"


def test_tags_and_keys_are_bounded(tap):
    run = tap.module.Run()
    run.log({f"tag{index}": float(index) for index in range(1000)})
    run.log({"x" * 500: 1.0, "a": {"b": {"c": {"d": {"e": 1.0}}}}})
    tap.at_exit()
    tags = latest(tap)
    assert len(tags) == hook.MAX_SCALAR_TAGS  # the first seen
    assert "tag0" in tags and "x" * 200 not in tags  # the table was full
    assert max(int(tag[3:]) for tag in tags) < hook.MAX_KEYS_PER_CALL


def test_a_long_tag_is_cut_and_nesting_is_bounded(tap):
    run = tap.module.Run()
    run.log({"x" * 500: 1.0, "a": {"b": {"c": {"d": 1.0}, "e": 2.0}}})
    tap.at_exit()
    assert latest(tap) == {"x" * hook.MAX_TAG: (0, 1.0), "a/b/c/d": (0, 1.0),
                           "a/b/e": (0, 2.0)}
    run.log({"a": {"b": {"c": {"d": {"e": 1.0}}}}})  # deeper than MAX_NESTING: left out
    tap.at_exit()
    assert "a/b/c/d/e" not in latest(tap)


def test_a_failure_of_the_tap_is_one_disabled_record_and_the_program_goes_on(tap, monkeypatch):
    def broken(data):
        raise RuntimeError("a bug in ctui")

    monkeypatch.setattr(hook, "_numbers", broken)
    run = tap.module.Run()
    assert run.log({"loss": 1.0}) == "wandb's own result"
    assert run.log({"loss": 2.0}) == "wandb's own result"
    assert len(run.calls) == 2
    (disabled,) = tap.records("disabled")
    assert disabled["reason"].startswith(hook.SCALARS_OFF) and "a bug in ctui" in disabled["reason"]
    assert tap.records() == []
