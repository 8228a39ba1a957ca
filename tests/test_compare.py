"""`ctui compare` and engine/compare.py on recorded runs: run folders written through the real
writers (config.json, metrics.jsonl, best.json), and two real headless digits runs."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ctui.engine.compare import compare, find_runs, read_epochs, summarize_all
from ctui.engine.config import RunConfig
from ctui.engine.events import EpochEnded
from ctui.engine.program.spec import ProgramSpec, write_program_config
from ctui.engine.runs import write_best, write_config
from ctui.engine.safefs import make_private_dir
from ctui.engine.sinks.jsonl import MetricsFile

from helpers import ctui_in_process

T0 = 1795779200.0  # fixed start times: the runs list in the same order everywhere


def write_run(runs_dir: Path, name: str, started: float, records: list[dict], kind: str = "train",
              monitor: tuple[str, float, int] | None = None, **settings) -> Path:
    """A run folder as ctui leaves it: config.json, one epoch record per dict (EpochEnded
    fields), best.json with a monitor. Planned epochs default to the epochs recorded."""
    run_dir = runs_dir / name
    make_private_dir(run_dir)
    if kind == "program":
        write_program_config(run_dir, ProgramSpec(argv=("python", "train.py", *settings.get(
            "args", ())), cwd=str(runs_dir)))
    else:
        settings.setdefault("epochs", len(records))
        write_config(run_dir, RunConfig(runs_dir=str(runs_dir), run_dir=str(run_dir),
                                        tensorboard=False, **settings), {"task_name": "digits"})
    metrics = MetricsFile(run_dir)
    for number, fields in enumerate(records, 1):
        metrics(EpochEnded(epoch=number, global_step=number * 12, **fields))
    metrics.close()
    if monitor:
        write_best(run_dir, monitor[0], "max", monitor[1], monitor[2])
    os.utime(run_dir / "config.json", (started, started))
    return run_dir


def epoch(seconds: float, speed: float, loss: float | None, accuracy: float | None,
          batch_size: int = 64, num_workers: int = 0, **more) -> dict:
    return dict(train_seconds=seconds * 0.9, eval_seconds=seconds * 0.1,
                samples_per_second=speed, test_loss=loss, test_accuracy=accuracy,
                batch_size=batch_size, num_workers=num_workers, **more)


def recorded_runs(runs_dir: Path) -> Path:
    """Three digits runs (batch 64, batch 128 with 2 workers, batch 64 changed live to 128)
    and a `ctui run` program run whose epochs are observed DataLoader passes."""
    write_run(runs_dir, "digits-bs64", T0, [
        epoch(2.0, 800, 0.60, 0.84), epoch(1.8, 850, 0.40, 0.90), epoch(1.9, 840, 0.30, 0.93)],
        batch_size=64)
    write_run(runs_dir, "digits-bs128-w2", T0 + 60, [
        epoch(1.2, 1300, 1.90, 0.27, 128, 2), epoch(1.0, 1400, 0.50, 0.86, 128, 2),
        epoch(1.1, 1350, 0.35, 0.91, 128, 2)], batch_size=128, num_workers=2)
    write_run(runs_dir, "digits-live", T0 + 120, [
        epoch(2.0, 800, 0.60, 0.84), epoch(1.3, 1200, 0.45, 0.88, 128)], batch_size=64,
        epochs=4)
    write_run(runs_dir, "run-train", T0 + 180, [
        dict(train_seconds=30.0, eval_seconds=0.0, samples_per_second=95.0, train_loss=None,
             test_loss=None, batch_size=8, num_workers=4)] * 2, kind="program",
        args=("--epochs", "2"))
    return runs_dir


@pytest.fixture
def runs(tmp_path) -> Path:
    return recorded_runs(tmp_path / "runs")


# ---------------------------------------------------------------- the comparison


def test_summaries_read_status_settings_best_and_speed(runs):
    by_name = {run.name: run for run in summarize_all(runs)}
    assert list(by_name) == ["digits-bs64", "digits-bs128-w2", "digits-live", "run-train"]
    bs64, bs128, live, program = by_name.values()
    assert (bs64.status, bs64.task, bs64.epochs_done, bs64.epochs_planned) == \
        ("finished", "digits", 3, 3)
    assert bs64.best == ("test_accuracy", 0.93, 3)
    assert bs64.mean_epoch_seconds == pytest.approx((2.0 + 1.8 + 1.9) / 3)
    assert bs128.samples_per_second == pytest.approx(1350)
    assert [point.seconds for point in bs128.points] == pytest.approx([1.2, 1.0, 1.1])
    assert [point.accuracy for point in bs128.points] == pytest.approx([0.27, 0.86, 0.91])
    assert (live.status, live.epochs_done, live.epochs_planned) == ("interrupted", 2, 4)
    assert live.setting("batch_size") == "64→128"  # changed live during the run
    assert program.kind == "program" and program.task == "ctui run"
    assert program.setting("command") == "python train.py --epochs 2"
    assert (program.setting("batch_size"), program.setting("num_workers")) == ("8", "4")
    assert program.best is None and program.points[0].test_loss is None
    assert program.mean_epoch_seconds == pytest.approx(30.0)


def test_only_differing_settings_are_marked(runs):
    comparison = compare(find_runs(runs, ["digits-bs64", "digits-bs128-w2"]))
    assert comparison.differing == ("batch_size", "num_workers")
    assert compare(find_runs(runs, ["digits-bs64"])).differing == ()


def test_a_program_runs_epochs_are_its_observed_training_passes(tmp_path):
    """The real path of a `ctui run` program run: the observer's pass records, turned into
    epochs by the host's LoaderBridge, written to metrics.jsonl, compared."""
    from ctui.engine.program.loaders import LoaderBridge, observe_folder

    run_dir = tmp_path / "run-train"
    make_private_dir(run_dir)
    write_program_config(run_dir, ProgramSpec(argv=("python", "train.py"), cwd=str(tmp_path)))
    bridge = LoaderBridge(observe_folder(run_dir))
    passes = [("train.py:57", 800, 0, 4.0), ("train.py:60", 100, 0, 0.5),
              ("train.py:57", 800, 4, 2.0)]
    with open(observe_folder(run_dir) / "passes-0-4242.jsonl", "w") as handle:
        for number, (loader, samples, workers, seconds) in enumerate(passes):
            handle.write(json.dumps({
                "kind": "pass", "time": T0 + number, "pid": 4242, "rank": 0, "loader": loader,
                "pass": number, "started": T0, "seconds": seconds, "wait_seconds": 0.1,
                "batches": samples // 8, "samples": samples,
                "samples_per_second": samples / seconds, "data_wait_fraction": 0.05,
                "batch_size": 8, "num_workers": workers, "complete": True,
                "ended": "exhausted"}) + "\n")
    metrics = MetricsFile(run_dir)
    for event in bridge.poll():
        metrics(event)
    metrics.close()
    (run,) = summarize_all(tmp_path)
    assert (run.kind, run.epochs_done) == ("program", 2)
    assert [(point.seconds, point.samples_per_second) for point in run.points] == [
        (4.0, 200.0), (2.0, 400.0)]
    assert run.setting("num_workers") == "0→4" and run.setting("batch_size") == "8"
    assert run.best is None and all(point.test_loss is None for point in run.points)


def test_a_monitored_figure_is_the_best(tmp_path):
    write_run(tmp_path, "f1-run", T0, [epoch(1.0, 10, 0.5, None, metrics=(("f1", 0.7),)),
                                       epoch(1.0, 10, 0.4, None, metrics=(("f1", 0.78),))],
              monitor=("f1", 0.78, 2))
    (run,) = summarize_all(tmp_path)
    assert run.best == ("f1", 0.78, 2)


def test_a_resumed_epoch_counts_once_and_junk_lines_are_skipped(tmp_path):
    run_dir = write_run(tmp_path, "resumed", T0, [epoch(1.0, 100, 0.5, 0.8),
                                                  epoch(1.0, 100, 0.4, 0.9)])
    with open(run_dir / "metrics.jsonl", "ab") as handle:
        handle.write(b'{"type": "epoch", "epoch": 2, "train_seconds": 3.0, "eval_seconds": 0}\n')
        handle.write(b'{"type": "epoch", "epoch": "x", "train_seconds": 1e999}\n')
        handle.write(b'{"type": "epoch", ' + b'"pad": "' + b"x" * 40_000 + b'"}\n')
        handle.write(b"[[[[[[[[[[not json\n")
        handle.write(b'{"type": "epoch", "epoch": 3, "train_seconds": NaN}\n')
    points = read_epochs(run_dir)
    assert [point.epoch for point in points] == [1, 2]
    assert points[1].seconds == 3.0  # the newer record of epoch 2


def test_a_folder_others_can_write_is_not_read(runs):
    os.chmod(runs / "digits-bs64", 0o777)
    run = {run.name: run for run in summarize_all(runs)}["digits-bs64"]
    assert run.status == "unreadable" and "writable by other users" in run.reason
    assert run.points == ()


def test_a_linked_metrics_file_is_not_followed(runs, tmp_path):
    secret = tmp_path / "secret.jsonl"
    secret.write_text('{"type": "epoch", "epoch": 1, "train_seconds": 9.0}\n')
    metrics = runs / "digits-bs64" / "metrics.jsonl"
    metrics.unlink()
    metrics.symlink_to(secret)
    assert read_epochs(runs / "digits-bs64") == ()


# ---------------------------------------------------------------- ctui compare


def test_compare_prints_a_table_marking_differing_settings(capsys, runs):
    code, out, err = ctui_in_process(capsys, "compare", "digits-bs64", "digits-bs128-w2",
                                     "--runs-dir", str(runs))
    assert code == 0 and err == ""
    header, bs64, bs128, note = out.splitlines()
    assert header.split() == ["RUN", "STATUS", "TASK", "EPOCHS", "BEST", "S/EPOCH", "SAMPLES/S",
                              "*batch_size", "*num_workers"]
    assert bs64.split() == ["digits-bs64", "finished", "digits", "3/3", "acc", "93.00%", "@3",
                            "1.90", "830", "64", "0"]
    assert bs128.split()[-2:] == ["128", "2"]
    assert note == "* differs between these runs"


def test_compare_csv_has_plain_numbers(capsys, runs):
    code, out, _ = ctui_in_process(capsys, "compare", "digits-bs64", "run-train",
                                   "--runs-dir", str(runs), "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [row["run"] for row in rows] == ["digits-bs64", "run-train"]
    assert rows[0]["best_value"] == "0.93" and rows[0]["best_epoch"] == "3"
    assert float(rows[0]["mean_epoch_seconds"]) == pytest.approx(1.9)
    assert rows[1]["best_figure"] == "" and rows[1]["best_value"] == ""
    assert (rows[0]["batch_size"], rows[1]["batch_size"]) == ("64", "8")
    # Settings only one of them records (a program's command, a task's lr) are no difference
    assert list(rows[0])[-2:] == ["batch_size", "num_workers"]


def test_compare_epochs_lists_each_runs_curve(capsys, runs):
    code, out, _ = ctui_in_process(capsys, "compare", "digits-bs64", "digits-bs128-w2",
                                   "--runs-dir", str(runs), "--epochs", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 6
    assert [(row["run"], row["epoch"], row["accuracy"]) for row in rows[3:]] == [
        ("digits-bs128-w2", "1", "0.27"), ("digits-bs128-w2", "2", "0.86"),
        ("digits-bs128-w2", "3", "0.91")]
    code, out, _ = ctui_in_process(capsys, "compare", "digits-bs64", "--runs-dir", str(runs),
                                   "--epochs")
    assert out.splitlines()[1].split() == ["digits-bs64", "1", "2.00", "800", "0.6000",
                                           "84.00%"]


def test_no_run_named_compares_every_run(capsys, runs):
    code, out, _ = ctui_in_process(capsys, "compare", "--runs-dir", str(runs))
    assert code == 0 and len(out.splitlines()) == 6  # header, four runs, the note


def test_an_unknown_run_is_one_line_naming_the_runs_there(capsys, runs):
    code, out, err = ctui_in_process(capsys, "compare", "digits-bs64", "digits-bs256",
                                     "--runs-dir", str(runs))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "no run 'digits-bs256'" in err and "digits-bs64, digits-bs128-w2" in err


def test_an_unreadable_run_is_named_on_stderr(capsys, runs):
    (runs / "digits-live" / "config.json").unlink()
    os.mkfifo(runs / "digits-live" / "config.json")  # would block a naive reader
    code, out, err = ctui_in_process(capsys, "compare", "digits-bs64", "digits-live",
                                     "--runs-dir", str(runs))
    assert code == 1 and "digits-bs64" in out and "digits-live" not in out
    assert err.startswith("ctui: error: cannot read run digits-live: config.json")


def test_compare_loads_neither_torch_nor_textual():
    """`ctui compare` and the panel's runs view read runs before (or without) any training."""
    code = ("import json, sys, ctui.engine.compare, ctui.engine.cli.compare_cmd; "
            "print(json.dumps(sorted(sys.modules)))")
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                           text=True, check=True).stdout))
    assert not {"torch", "textual"} & loaded


# ---------------------------------------------------------------- real runs


@pytest.mark.slow
def test_compare_two_real_digits_runs(tmp_path, capsys):
    """Two `ctui train --headless` runs (one epoch each, side by side) that differ in batch
    size, compared as CSV: the reader reads what the real engine writes."""
    starts = [subprocess.Popen([sys.executable, "-m", "ctui.tui.main", "train", "--headless",
                                "--epochs", "1", "--batch-size", batch_size, "--runs-dir",
                                "runs", "--no-tensorboard"], cwd=tmp_path, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
              for batch_size in ("64", "128")]
    for start in starts:
        assert start.wait(timeout=300) == 0, start.stderr.read()
        start.stderr.close()
    runs = str(tmp_path / "runs")
    code, out, err = ctui_in_process(capsys, "compare", "--runs-dir", runs, "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0, err
    assert sorted(row["batch_size"] for row in rows) == ["128", "64"]
    assert list(rows[0])[-1] == "batch_size"  # the only setting that differs
    for row in rows:
        assert (row["status"], row["task"], row["epochs_done"]) == ("finished", "digits", "1")
        assert row["best_figure"] == "test_accuracy" and 0 < float(row["best_value"]) <= 1
        assert float(row["mean_epoch_seconds"]) > 0 and float(row["samples_per_second"]) > 0
    _, out, _ = ctui_in_process(capsys, "compare", "--runs-dir", runs, "--epochs")
    assert len(out.splitlines()) == 3  # the header and one epoch of each run
