"""A supervised program's own TensorBoard scalars, found under its working folder and read as
they grow: new files only, never through a link or outside the folder, damaged files survived,
and the scalars in metrics.jsonl one line each."""

from __future__ import annotations

import json
import os
import time

import pytest

from ctui.engine.events import LogLine, ScriptScalars, ScriptScalarsLatest
from ctui.engine.program.script_logs import ScriptLogReader, ScriptLogWatcher
from ctui.engine.sinks.jsonl import MetricsFile

SummaryWriter = pytest.importorskip("torch.utils.tensorboard").SummaryWriter


def scalars(events) -> list[tuple[str, str, int, float | None]]:
    return [(event.path, tag, step, value) for event in events
            if isinstance(event, ScriptScalars) for tag, step, value in event.scalars]


def write_scalars(folder, tag: str, steps, flush: bool = True) -> SummaryWriter:
    writer = SummaryWriter(str(folder))
    for step in steps:
        writer.add_scalar(tag, step / 10, step)
    if flush:
        writer.flush()
    return writer


def test_new_event_files_are_found_and_read_incrementally(tmp_path):
    reader = ScriptLogReader(tmp_path, since=time.time())
    writer = write_scalars(tmp_path / "runs" / "exp1", "train/loss", range(3))
    reader.scan()
    first = reader.poll()
    notes = [event.message for event in first if isinstance(event, LogLine)]
    assert len(notes) == 1 and "runs/exp1/events.out.tfevents." in notes[0], notes
    assert scalars(first) == [("runs/exp1", "train/loss", step, pytest.approx(step / 10))
                              for step in range(3)]
    assert scalars(reader.poll()) == []  # nothing new: nothing read twice
    writer.add_scalar("train/loss", 0.5, 5)
    writer.add_scalar("val/acc", float("nan"), 5)
    writer.flush()
    second = reader.poll()
    assert scalars(second) == [("runs/exp1", "train/loss", 5, 0.5),
                               ("runs/exp1", "val/acc", 5, None)]
    # the latest of each tag, for panels attaching later: at first, then at most every 5 s
    latest = [event for event in first + second if isinstance(event, ScriptScalarsLatest)]
    assert [event.scalars for event in latest] == [(("runs/exp1", "train/loss", 2,
                                                     pytest.approx(0.2)),)]
    (final,) = reader.poll(final=True)
    assert final.scalars == (("runs/exp1", "train/loss", 5, 0.5), ("runs/exp1", "val/acc", 5,
                                                                      None))
    writer.close()
    reader.close()


def test_old_files_links_hidden_and_wandb_folders_are_not_read(tmp_path):
    outside = tmp_path / "outside"
    write_scalars(outside, "secret", range(2)).close()
    project = tmp_path / "project"
    old = write_scalars(project / "runs" / "yesterday", "old", range(2))
    old.close()
    for path in (project / "runs" / "yesterday").iterdir():
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    (project / "linked").symlink_to(outside)  # a folder link: not followed
    (project / "runs" / "events.out.tfevents.link").symlink_to(next(outside.iterdir()))
    write_scalars(project / ".cache", "hidden", range(2)).close()
    write_scalars(project / "wandb" / "run-1" / "files", "copy", range(2)).close()
    reader = ScriptLogReader(project, since=time.time() - 60)
    reader.scan()
    assert scalars(reader.poll()) == [] and reader.files == {}
    write_scalars(project / "runs" / "today", "new", range(1)).close()
    reader.scan()  # the walk started over after its first full pass: the new file is found
    assert [tag for _, tag, _, _ in scalars(reader.poll())] == ["new"]
    reader.close()


def test_a_damaged_or_truncated_file_is_survived(tmp_path):
    reader = ScriptLogReader(tmp_path, since=time.time() - 60)
    (tmp_path / "events.out.tfevents.garbage").write_bytes(os.urandom(4096))
    writer = write_scalars(tmp_path / "good", "loss", range(2))
    writer.close()
    good = next((tmp_path / "good").iterdir())
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / good.name).write_bytes(good.read_bytes()[:-7])  # a half-written record
    reader.scan()
    got = scalars(reader.poll())
    assert ("good", "loss", 1, pytest.approx(0.1)) in got and ("cut", "loss", 0, 0.0) in got
    assert ("cut", "loss", 1, pytest.approx(0.1)) not in got  # the torn record waits
    with open(tmp_path / "cut" / good.name, "ab") as cut:  # ... until its writer finishes it
        cut.write(good.read_bytes()[-7:])
    assert scalars(reader.poll()) == [("cut", "loss", 1, pytest.approx(0.1))]
    reader.close()


def test_the_watcher_reads_what_was_written_before_close_and_scalars_reach_metrics(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    metrics = MetricsFile(run_dir)
    seen = []
    watcher = ScriptLogWatcher(tmp_path / "cwd", time.time(), lambda e: (seen.append(e),
                               metrics(e)), exclude=(run_dir,), poll_every=60, scan_every=60)
    (tmp_path / "cwd").mkdir()
    watcher.start()
    write_scalars(tmp_path / "cwd" / "tb", "loss", range(4)).close()
    watcher.close()  # its last scan and read pick the file up
    metrics.close()
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(line["type"], line["tag"], line["step"]) for line in lines] == [
        ("script_scalar", "loss", step) for step in range(4)]
    assert lines[1]["value"] == pytest.approx(0.1) and lines[0]["path"] == "tb"
    assert ScriptScalars.from_dict(json.loads(json.dumps(
        next(e for e in seen if isinstance(e, ScriptScalars)).to_dict()))).scalars[0][0] == "loss"


TENSORBOARD_SCRIPT = r'''
import time
from torch.utils.tensorboard import SummaryWriter

writer = SummaryWriter("tb/exp", flush_secs=1)
for epoch in range(3):
    writer.add_scalar("train/loss", 1.0 / (epoch + 1), epoch)
    writer.flush()
    print(f"epoch {epoch}", flush=True)
    time.sleep(1.5)
writer.close()
print("done", flush=True)
'''


@pytest.mark.slow
def test_a_supervised_scripts_tensorboard_scalars_arrive_live_and_in_metrics(
        tmp_path, isolated_runs):
    import sys

    from ctui.engine.events import ProgramExited
    from ctui.engine.host import RunClient
    from ctui.engine.program import ProgramSpec, start_program

    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text(TENSORBOARD_SCRIPT)
    run_dir = start_program(ProgramSpec(argv=(sys.executable, "train.py"), cwd=str(project)),
                            isolated_runs)
    with RunClient.connect(run_dir) as client:
        live = client.wait_for(lambda e: isinstance(e, (ScriptScalars, ProgramExited)), 120)
        assert isinstance(live, ScriptScalars), live  # read while the program still runs
        assert live.source == "tensorboard" and live.path == "tb/exp"
        assert live.scalars[0] == ("train/loss", 0, 1.0)
        assert client.wait_for(lambda e: getattr(e, "state", "") == "finished", 120)
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    got = [(line["tag"], line["step"], line["value"]) for line in lines
           if line["type"] == "script_scalar"]
    assert got == [("train/loss", epoch, pytest.approx(1.0 / (epoch + 1))) for epoch in range(3)]


def test_a_restart_never_reads_an_earlier_attempts_file_again(tmp_path):
    seen: set = set()
    first = ScriptLogReader(tmp_path, since=time.time(), seen=seen)
    write_scalars(tmp_path / "tb", "loss", range(2)).close()
    first.scan()
    assert len(scalars(first.poll())) == 2
    first.close()
    restarted = ScriptLogReader(tmp_path, since=time.time(), seen=seen)  # a second later
    write_scalars(tmp_path / "tb", "loss", range(2, 3)).close()  # the restart's own file
    restarted.scan()
    assert scalars(restarted.poll()) == [("tb", "loss", 2, pytest.approx(0.2))]
    restarted.close()
