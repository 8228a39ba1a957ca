"""The program supervisor's pieces that need no child process: the plain-text log, the spec's
checks, the history's size bound, the `ctui run` usage errors. Fast."""

from __future__ import annotations

import json

import pytest

from ctui.engine.config import ConfigError
from ctui.engine.events import ProgramOutput
from ctui.engine.history import KEEP_BYTES, History
from ctui.engine.program.loaders import LoaderBridge
from ctui.engine.program.output_log import OUTPUT_LOG, OutputLog, plain_line
from ctui.engine.program.spec import ProgramSpec, read_program_config, write_program_config

from helpers import ctui_in_process as ctui


def log_text(run_dir) -> str:
    return (run_dir / OUTPUT_LOG).read_text()


def test_a_tqdm_bar_is_kept_at_its_last_state_without_escapes(tmp_path):
    log = OutputLog(tmp_path)
    for step in range(100):  # as tqdm draws over a pty: CR, text, colour escapes
        log.feed(f"\r\x1b[32mepoch 0:\x1b[0m {step:3d}%|{'#' * (step // 10)}")
    log.feed("\r\nnext line\r\n")
    log.close()
    assert log_text(tmp_path) == "epoch 0:  99%|#########\nnext line\n"


def test_pieces_split_anywhere_give_the_same_log(tmp_path):
    text = "a\r\nbar 1\rbar 2\rbar 3\r\n\x1b]0;title\x07plain \x1b[1mbold\x1b[0m\r\nlast"
    whole, pieces = tmp_path / "whole", tmp_path / "pieces"
    whole.mkdir()
    pieces.mkdir()
    one = OutputLog(whole)
    one.feed(text)
    one.close()
    other = OutputLog(pieces)
    for char in text:
        other.feed(char)
    other.close()
    assert log_text(whole) == log_text(pieces) == "a\nbar 3\nplain bold\nlast\n"


def test_control_characters_never_reach_the_log():
    assert plain_line("ok\x07\x08\x1b[2J\x9b done\t!") == "ok done\t!"


def test_a_line_without_end_is_bounded_and_kept(tmp_path):
    log = OutputLog(tmp_path)
    log.feed("x" * 200_000)  # no newline, no carriage return
    log.close()
    assert log_text(tmp_path).replace("\n", "") == "x" * 200_000


def test_past_its_limit_the_log_says_how_much_it_did_not_keep(tmp_path):
    log = OutputLog(tmp_path, limit=1000)
    for _ in range(100):
        log.feed("y" * 49 + "\n")
    log.note("attempt 1 ended")
    log.close()
    text = log_text(tmp_path)
    assert "the rest of the output is not kept" in text
    assert "attempt 1 ended" in text
    assert "characters of output were not kept here" in text.splitlines()[-1]


def test_the_output_history_is_bounded_by_size_and_keeps_the_newest():
    history: History[bytes] = History()
    chunk = b"z" * 65536
    for index in range(200):
        history.add("output", chunk + str(index).encode())
    kept = history.lines()
    assert sum(map(len, kept)) <= KEEP_BYTES["output"]
    assert kept[-1].endswith(b"199")
    history.add("output", ProgramOutput(data="q" * (KEEP_BYTES["output"] * 2)).data.encode())
    assert len(history.lines()) == 1  # one huge chunk: the newest is always kept


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("argv", (), "say what to run"),
    ("grace", -1.0, "--grace: -1.0 is not allowed"),
    ("stop_signal", "SIGKILL", "--stop-signal: 'SIGKILL' is not allowed"),
    ("restart_on_failure", True, "--restart-on-failure"),
    ("time_limit", float("inf"), "--time-limit"),
])
def test_the_spec_refuses_bad_values_naming_the_flag(field, value, expected):
    settings = {"argv": ("python", "train.py"), "cwd": "/tmp", field: value}
    with pytest.raises(ConfigError, match=expected):
        ProgramSpec(**settings)


def test_resume_args_must_say_where_the_checkpoint_goes():
    with pytest.raises(ConfigError, match="put {checkpoint} in it"):
        ProgramSpec(argv=("x",), cwd="/", checkpoint_glob="*.pt", resume_args="--resume")
    with pytest.raises(ConfigError, match="not a template"):
        ProgramSpec(argv=("x",), cwd="/", checkpoint_glob="*.pt", resume_args="{model}")


def test_the_recorded_program_round_trips_and_a_crafted_one_is_refused(tmp_path):
    spec = ProgramSpec(argv=("python", "train.py", "--lr", "0.1"), cwd=str(tmp_path),
                       restart_on_failure=2, checkpoint_glob="ckpt/*.pt")
    write_program_config(tmp_path, spec)
    assert read_program_config(tmp_path) == spec
    data = json.loads((tmp_path / "config.json").read_text())
    data["program"]["argv"] = "rm -rf ~"  # not a list of arguments
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="no argv list"):
        read_program_config(tmp_path)
    data["program"].update(argv=["python"], module="evil:run")
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="unknown fields 'module'"):
        read_program_config(tmp_path)


@pytest.mark.parametrize(("argv", "expected"), [
    (["run"], "say what to run after `--`"),
    (["run", "--"], "say what to run after `--`"),
    (["run", "--grace", "-1", "--", "true"], "--grace: -1.0 is not allowed"),
    (["run", "--grace", "soon", "--", "true"], "--grace: 'soon' is not a number"),
    (["run", "--time-limit", "tomorrow", "--", "true"], "--time-limit: 'tomorrow' is not a dur"),
    (["run", "--restart-on-failure", "many", "--", "true"], "is not a whole number"),
    (["run", "--cwd", "/no/such/folder", "--", "true"], "--cwd /no/such/folder: not a folder"),
    (["run", "--resume-args", "--from {checkpoint}", "--", "true"], "needs --checkpoint-glob"),
    (["run", "--resume", "somerun", "--", "true"], "leave out a command"),
    (["run", "--resume", "nosuchrun"], "no run 'nosuchrun'"),
    (["run", "--name", "../escape", "--", "true"], "--name '../escape'"),
])
def test_usage_errors_are_one_line_with_exit_code_2(capsys, argv, expected):
    code, _, err = ctui(capsys, *argv)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert expected in err, err


def test_resuming_a_training_run_as_a_program_is_refused(capsys, isolated_runs):
    run_dir = isolated_runs / "digits-1"
    run_dir.mkdir(parents=True, mode=0o700)
    (run_dir / "config.json").write_text(json.dumps({"config": {"task": "digits"}}))
    code, _, err = ctui(capsys, "run", "--resume", "digits-1")
    assert code == 2 and "is a training run, not a program run" in err, err


def pass_record(loader, samples, rank=0, complete=True, workers=0):
    return {"kind": "pass", "loader": loader, "pass": 0, "seconds": 2.0, "samples": samples,
            "batches": 4, "samples_per_second": samples / 2.0, "data_wait_fraction": 0.25,
            "batch_size": 8, "num_workers": workers, "complete": complete, "rank": rank}


def test_passes_of_the_largest_loader_are_the_epochs(tmp_path):
    bridge = LoaderBridge(None)
    events = []
    for record in (pass_record("train.py:57", 800), pass_record("train.py:60", 100),
                   pass_record("train.py:57", 800, rank=1),  # another rank: not an epoch
                   pass_record("train.py:57", 300, complete=False),
                   pass_record("train.py:57", 800, workers=4)):
        events += bridge._events_for(record)
    epochs = [event for event in events if event.kind == "epoch"]
    assert [(e.epoch, e.num_workers, e.train_loss) for e in epochs] == [(1, 0, None), (2, 4, None)]
    assert [e.loader for e in events if e.kind == "loader_pass"] == [
        "train.py:57", "train.py:60", "train.py:57", "train.py:57"]


def test_a_change_inside_a_pass_marks_its_epoch_and_a_deferred_one_says_why():
    bridge = LoaderBridge(None)
    switched = {"kind": "switched", "loader": "train.py:57", "setting": "num_workers",
                "value": 4, "previous": 0, "pass": 1, "batch": 37, "rank": 0}
    deferred = {"kind": "deferred", "loader": "train.py:57", "setting": "batch_size",
                "value": 16, "reason": "drop_last=True: ...", "rank": 0}
    first, second = dict(pass_record("train.py:57", 800, workers=4), **{"pass": 1}), \
        dict(pass_record("train.py:57", 800, workers=4), **{"pass": 2})
    events = []
    for record in (switched, deferred, first, second):
        events += bridge._events_for(record)
    lines = [event.message for event in events if event.kind == "log"]
    assert "num_workers is now 4 (was 0), from batch 37 of this pass on" in lines[0]
    assert "batch_size=16 applies from its next pass" in lines[1] and "drop_last" in lines[1]
    assert [e.settings_changed for e in events if e.kind == "epoch"] == [True, False]
    assert bridge._events_for(dict(switched, rank=1)) == []  # rank 0 speaks for the ranks


def test_a_loader_that_cannot_change_is_named_with_why_and_nothing_is_written(tmp_path):
    from ctui.engine.events import SetBatchSize, SetNumWorkers

    bridge = LoaderBridge(tmp_path / "observe")
    if not bridge.available:
        pytest.skip("the DataLoader observer is not in this tree")
    bridge._events_for({"kind": "loader", "loader": "train.py:12", "dataset": "Stream",
                        "batch_size": 8, "num_workers": 0,
                        "why_not": {"num_workers": "Stream is an iterable dataset",
                                    "batch_size": "Stream is an iterable dataset"}})
    answer = bridge.change(SetNumWorkers(num_workers=4))
    assert not answer.accepted
    assert "train.py:12" in answer.message and "iterable dataset" in answer.message
    assert not (tmp_path / "observe" / "settings.json").exists()
    refused = bridge.change(SetBatchSize(batch_size=0))
    assert not refused.accepted and "whole number >= 1" in refused.message


def test_the_program_host_and_run_command_load_neither_torch_nor_textual():
    import subprocess
    import sys

    modules = ["ctui.engine.program", "ctui.engine.program.serve", "ctui.engine.program.loaders",
               "ctui.engine.program.checkpoints", "ctui.engine.cli.run_cmd"]
    code = (f"import json, sys; import {', '.join(modules)}; "
            "print(json.dumps(sorted(sys.modules)))")
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                           text=True, check=True).stdout))
    for heavy in ("torch", "textual", "wandb", "tensorboard"):
        assert heavy not in loaded, heavy


def started(loader, pid=7, rank=0):
    return {"kind": "pass_started", "loader": loader, "pass": 1, "started": 1.0, "pid": pid,
            "rank": rank}


def timed(loader, samples, seconds, pid=7, rank=0):
    return dict(pass_record(loader, samples, rank=rank), seconds=seconds, pid=pid)


def test_an_epochs_eval_seconds_are_the_other_loaders_passes_before_the_next_one():
    bridge = LoaderBridge(None)
    events = []
    for record in (started("train.py:57"), timed("train.py:57", 800, 2.0),
                   started("train.py:60"), timed("train.py:60", 100, 0.5),
                   timed("train.py:60", 100, 0.7, rank=1),  # another rank: its own time
                   timed("train.py:61", 50, 0.3, pid=8),  # another process
                   started("train.py:61"), timed("train.py:61", 50, 0.25)):
        events += bridge._events_for(record)
    assert [e for e in events if e.kind == "epoch"] == []  # held while evaluation may go on
    events = bridge._events_for(started("train.py:57"))  # the next epoch starts
    assert [(e.epoch, e.train_seconds, e.eval_seconds) for e in events] == [(1, 2.0, 0.75)]
    events = bridge._events_for(timed("train.py:57", 800, 3.0))
    events += bridge._events_for(timed("train.py:60", 100, 0.4))
    assert [e for e in events if e.kind == "epoch"] == []
    (last,) = [e for e in bridge.poll(final=True) if e.kind == "epoch"]  # the program ended
    assert (last.epoch, last.train_seconds, last.eval_seconds) == (2, 3.0, 0.4)
    assert bridge.poll(final=True) == []


def test_without_pass_started_records_epoch_rows_come_at_once_as_before():
    bridge = LoaderBridge(None)
    events = []
    for record in (timed("train.py:57", 800, 2.0), timed("train.py:60", 100, 0.5),
                   timed("train.py:57", 800, 2.0)):
        events += bridge._events_for(record)
    assert [(e.epoch, e.eval_seconds) for e in events if e.kind == "epoch"] == [(1, 0.0),
                                                                                 (2, 0.0)]
    assert bridge.poll(final=True) == []


def scalar(tag, step, value, rank=0):
    return {"kind": "scalar", "source": "wandb", "tag": tag, "step": step, "value": value,
            "pid": 7, "rank": rank}


def test_wandb_scalar_records_become_script_scalars_of_source_wandb():
    from ctui.engine.events import ScriptScalars, ScriptScalarsLatest

    bridge = LoaderBridge(None)
    for record in (scalar("train/loss", 3, 0.5), scalar("val\x1b[2J/acc", None, None),
                   scalar("train/loss", 9, 0.25, rank=1)):
        assert bridge._events_for(record) == []
    events = bridge.poll()
    assert [(e.source, e.path, e.scalars) for e in events if isinstance(e, ScriptScalars)] == [
        ("wandb", "wandb", (("train/loss", 3, 0.5), ("val?[2J/acc", 0, None))),
        ("wandb", "wandb/rank1", (("train/loss", 9, 0.25),))]
    (summary,) = [e for e in events if isinstance(e, ScriptScalarsLatest)]
    assert summary.source == "wandb" and ("wandb", "train/loss", 3, 0.5) in summary.scalars
    assert bridge.poll() == []


def test_the_wandb_tap_switching_off_leaves_the_dataloader_settings_on():
    bridge = LoaderBridge(None)
    (line,) = bridge._events_for({"kind": "disabled", "pid": 7, "rank": 0, "reason":
                                  "wandb scalars off while reading a wandb.log call: boom"})
    assert "wandb" in line.message and line.level == "warning" and bridge.disabled == ""


def test_eval_seconds_and_wandb_scalars_reach_metrics_jsonl(tmp_path):
    from ctui.engine.program.loaders import observe_folder
    from ctui.engine.safefs import make_private_dir
    from ctui.engine.sinks.jsonl import MetricsFile

    run_dir = tmp_path / "run"
    make_private_dir(run_dir)
    bridge = LoaderBridge(observe_folder(run_dir))
    if not bridge.available:
        pytest.skip("the DataLoader observer is not in this tree")
    records = [started("train.py:57"), timed("train.py:57", 800, 2.0),
               started("train.py:60"), timed("train.py:60", 100, 0.5),
               scalar("val/acc", 1, 0.75)]
    for record in records:
        record.update(time=1.0, pid=4242)
        if record["kind"] == "pass":
            record.update(started=1.0, wait_seconds=0.1, ended="exhausted")
    (observe_folder(run_dir) / "passes-0-4242.jsonl").write_text(
        "".join(json.dumps(record) + "\n" for record in records))
    metrics = MetricsFile(run_dir)
    for event in bridge.poll() + bridge.poll(final=True):
        metrics(event)
    metrics.close()
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    kinds = [(line["type"], line.get("eval_seconds", line.get("source"))) for line in lines]
    assert kinds == [("script_scalar", "wandb"), ("epoch", 0.5)], lines
