"""metrics.jsonl against a full disk, planted links and FIFOs, and tampered lines on resume."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ctui.engine.events import EpochEnded, StepLogged
from ctui.engine.sinks import jsonl
from ctui.engine.sinks.jsonl import MetricsFile


def step(n: int, epoch: int = 1) -> StepLogged:
    return StepLogged(epoch=epoch, step=n, global_step=n, loss=1.0 / n, lr=0.1)


def epoch_end(epoch: int, global_step: int) -> EpochEnded:
    return EpochEnded(epoch=epoch, epochs=4, global_step=global_step, train_loss=0.5)


def records(run_dir: Path) -> list[dict]:
    text = (run_dir / "metrics.jsonl").read_text()
    assert text == "" or text.endswith("\n"), "a torn last line"
    return [json.loads(line) for line in text.splitlines()]


def keys(run_dir: Path) -> list[tuple[str, int]]:
    return [(r["type"], r["epoch"] if r["type"] == "epoch" else r["global_step"])
            for r in records(run_dir)]


class Disk:
    """os.write on metrics.jsonl, made to fail like a full disk while `full` is set."""

    def __init__(self, monkeypatch, run_dir: Path, short: int = 0,
                 error: int = errno.ENOSPC) -> None:
        self.full, self.short, self.error, self.calls = False, short, error, 0
        self.path, self.real = run_dir / "metrics.jsonl", os.write
        monkeypatch.setattr(os, "write", self.write)

    def write(self, fd: int, data) -> int:
        if not self.full or not self._is_metrics(fd):
            return self.real(fd, data)
        self.calls += 1
        if self.short:  # part of the line reaches the file, then the disk is full
            written, self.short = self.real(fd, bytes(data[: self.short])), 0
            return written
        raise OSError(self.error, os.strerror(self.error))

    def _is_metrics(self, fd: int) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except OSError:
            return False


@pytest.fixture
def no_retry_wait(monkeypatch):
    monkeypatch.setattr(MetricsFile, "retry_seconds", 0.0)


@pytest.mark.parametrize("short", [0, 40], ids=["enospc", "short-write"])
def test_full_disk_holds_records_and_writes_them_once_in_order(tmp_path, monkeypatch,
                                                               no_retry_wait, short):
    metrics = MetricsFile(tmp_path)
    disk = Disk(monkeypatch, tmp_path, short=short)
    for n in range(1, 4):
        metrics(step(n))
    disk.full = True
    for n in range(4, 11):
        metrics(step(n))  # never raises: a raised error switches the sink off for good
    metrics(epoch_end(1, 10))
    assert keys(tmp_path) == [("step", n) for n in (1, 2, 3)]  # and no torn 4th line
    warnings = metrics.take_messages()
    assert len(warnings) == 1 and warnings[0][0] == "warning"
    assert "No space left" in warnings[0][1]
    disk.full = False
    metrics(step(11))
    metrics.close()
    assert keys(tmp_path) == [("step", n) for n in range(1, 11)] + [("epoch", 1), ("step", 11)]
    (level, message), = metrics.take_messages()
    assert level == "info" and "wrote 9 held records" in message


def test_retries_at_most_once_a_second(tmp_path, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(jsonl.time, "monotonic", lambda: now[0])
    metrics = MetricsFile(tmp_path)
    disk = Disk(monkeypatch, tmp_path, error=errno.EIO)
    disk.full = True
    for n in range(1, 101):
        metrics(step(n))
    assert disk.calls == 1  # not a failing syscall per step
    now[0] += 1.5
    metrics(step(101))
    assert disk.calls == 2
    disk.full = False
    now[0] += 1.5
    metrics(step(102))
    metrics.close()
    assert keys(tmp_path) == [("step", n) for n in range(1, 103)]


def test_backlog_is_bounded_and_keeps_epoch_records(tmp_path, monkeypatch, no_retry_wait):
    monkeypatch.setattr(MetricsFile, "max_backlog_bytes", 4000)
    metrics = MetricsFile(tmp_path)
    disk = Disk(monkeypatch, tmp_path)
    disk.full = True
    for n in range(1, 201):
        metrics(step(n, epoch=(n - 1) // 50 + 1))
        if n % 50 == 0:
            metrics(epoch_end(n // 50, n))
    disk.full = False
    metrics(step(201, epoch=5))
    metrics.close()
    written = keys(tmp_path)
    assert [k for k in written if k[0] == "epoch"] == [("epoch", e) for e in (1, 2, 3, 4)]
    steps = [n for kind, n in written if kind == "step"]
    assert steps == sorted(steps) and steps[-1] == 201 and len(steps) < 201  # oldest dropped
    messages = [m for _, m in metrics.take_messages()]
    assert any("dropping the oldest step records" in m for m in messages)
    assert f"{201 - len(steps)} step records were dropped" in messages[-1]


def test_close_on_a_full_disk_says_what_was_lost(tmp_path, monkeypatch, no_retry_wait):
    metrics = MetricsFile(tmp_path)
    disk = Disk(monkeypatch, tmp_path, short=25)
    metrics(step(1))
    disk.full = True
    metrics(step(2))
    metrics(step(3))
    metrics.close()
    assert keys(tmp_path) == [("step", 1)]
    level, message = metrics.take_messages()[-1]
    assert level == "error" and "2 records could not be written and are lost" in message


def test_real_file_size_limit(tmp_path):
    """A real EFBIG (RLIMIT_FSIZE; Python ignores SIGXFSZ): a short write, then errors."""
    script = """
import json, resource, sys
from pathlib import Path
from ctui.engine.events import StepLogged
from ctui.engine.sinks.jsonl import MetricsFile
MetricsFile.retry_seconds = 0.0
run = Path(sys.argv[1]); path = run / "metrics.jsonl"
metrics = MetricsFile(run)
for n in range(1, 6):
    metrics(StepLogged(epoch=1, step=n, global_step=n))
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + 100, hard))
for n in range(6, 21):
    metrics(StepLogged(epoch=1, step=n, global_step=n))
assert path.read_bytes().endswith(b"\\n"), "torn line"
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
metrics(StepLogged(epoch=1, step=21, global_step=21))
metrics.close()
print(json.dumps(metrics.take_messages()))
"""
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert keys(tmp_path) == [("step", n) for n in range(1, 22)]
    levels = [level for level, _ in json.loads(done.stdout)]
    assert levels == ["warning", "info"]


# ------------------------------------------------------------ planted links and FIFOs


def test_symlink_as_metrics_file_is_refused(tmp_path):
    target = tmp_path / "precious"
    target.write_text("root's file\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").symlink_to(target)
    for resume in (None, 0, 5):
        with pytest.raises(OSError):
            MetricsFile(run_dir, resume_global_step=resume)
    assert target.read_text() == "root's file\n"
    assert (run_dir / "metrics.jsonl").is_symlink()


def test_fifo_as_metrics_file_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "metrics.jsonl")
    for resume in (None, 5):
        outcome: list[BaseException | None] = []

        def construct(resume=resume, outcome=outcome) -> None:
            try:
                MetricsFile(tmp_path, resume_global_step=resume)
                outcome.append(None)
            except BaseException as error:
                outcome.append(error)

        thread = threading.Thread(target=construct, daemon=True)
        thread.start()
        thread.join(5)
        assert outcome, "blocked on the FIFO"
        assert isinstance(outcome[0], OSError)


def test_symlink_at_old_fixed_temp_name_is_not_followed(tmp_path):
    target = tmp_path / "precious"
    target.write_text("root's file\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text(
        "".join(json.dumps(step(n).to_dict()) + "\n" for n in range(1, 9)))
    (run_dir / "metrics.jsonl.tmp").symlink_to(target)
    metrics = MetricsFile(run_dir, resume_global_step=4)
    metrics.close()
    assert target.read_text() == "root's file\n"
    assert not (run_dir / "metrics.jsonl").is_symlink()
    assert keys(run_dir) == [("step", n) for n in range(1, 5)]
    assert sorted(p.name for p in run_dir.iterdir()) == ["metrics.jsonl", "metrics.jsonl.tmp"]


# ------------------------------------------------------------ resume rewrite


def test_tampered_lines_are_skipped_and_reported(tmp_path):
    good = [json.dumps(step(n).to_dict()) for n in (1, 2, 3)]
    lines = [good[0], "[1, 2]", '{"global_step": "x"}', good[1], '{"global_step": true}',
             "not json", "[" * 100_000, '{"global_step": 2.0}', "\udcff\udcfe", good[2]]
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
                     + b'{"type": "step", "global_st')  # torn by a crash
    metrics = MetricsFile(tmp_path, resume_global_step=10)
    metrics.close()
    assert keys(tmp_path) == [("step", 1), ("step", 2), ("step", 3)]
    note, = metrics.notes
    assert note.startswith("metrics.jsonl: skipped 8 unreadable lines (line 2: not a JSON object")


def test_overlong_line_is_skipped_without_holding_it(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonl, "MAX_LINE", 1000)
    good = json.dumps(step(1).to_dict())
    (tmp_path / "metrics.jsonl").write_text(f'{good}\n{{"x": "{"a" * 5000}"}}\n{good}\n')
    MetricsFile(tmp_path, resume_global_step=5).close()
    assert keys(tmp_path) == [("step", 1), ("step", 1)]


def test_epoch_recorded_once_after_kill_between_step_and_epoch_checkpoints(tmp_path):
    # The last step checkpoint is at epoch 3's last step (global_step 60); the kill came after
    # epoch 3's record was written but before its epoch-end checkpoint.
    old = [step(20), epoch_end(1, 20), step(40, 2), epoch_end(2, 40), step(60, 3),
           epoch_end(3, 60), step(61, 4)]
    text = "".join(json.dumps(event.to_dict()) + "\n" for event in old)
    (tmp_path / "metrics.jsonl").write_text(text)
    MetricsFile(tmp_path, resume_global_step=60).close()  # old keyword: kept as before
    assert ("epoch", 3) in keys(tmp_path)
    (tmp_path / "metrics.jsonl").write_text(text)
    metrics = MetricsFile(tmp_path, resume_global_step=60, resume_epochs_done=2)
    metrics(epoch_end(3, 60))  # the resumed run records epoch 3 again
    metrics.close()
    assert keys(tmp_path) == [("step", 20), ("epoch", 1), ("step", 40), ("epoch", 2),
                              ("step", 60), ("epoch", 3)]
    assert metrics.notes == []
