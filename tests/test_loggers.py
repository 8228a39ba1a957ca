"""wandb (offline) and TensorBoard logs read back from the run folder, across a resume.

wandb never touches the network or the user's credentials here: every test runs with no API
key, an empty netrc, wandb's folders under tmp and WANDB_BASE_URL on a closed local port.
"""

from __future__ import annotations

import errno
import json
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ctui.engine import Engine, RunConfig
from ctui.engine.events import EpochEnded, LoggersInfo, LogLine, State, StepLogged
from ctui.engine.safefs import make_private_dir
from ctui.engine.sinks import wandb_sink
from ctui.engine.sinks.loggers import open_loggers

# ---------------------------------------------------------------- isolation


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def isolate_wandb(mp: pytest.MonkeyPatch, home: Path) -> None:
    """Offline, silent, no credentials, all files under `home`, and a server nobody runs."""
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_PROJECT", "WANDB_ENTITY",
                 "WANDB_RUN_ID", "WANDB_RESUME"):
        mp.delenv(name, raising=False)
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    for name, folder in (("WANDB_DIR", "dir"), ("WANDB_CONFIG_DIR", "config"),
                         ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data"),
                         ("WANDB_ARTIFACT_DIR", "artifacts")):
        mp.setenv(name, str(home / "wandb-home" / folder))
    mp.setenv("NETRC", str(home / "no-netrc"))
    mp.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")


@pytest.fixture(scope="module", autouse=True)
def end_the_wandb_service_with_this_module():
    """wandb-core runs as a child of this process: stop it when these tests are done, so later
    tests see only the child processes they start."""
    yield
    wandb = sys.modules.get("wandb")
    if wandb is not None:
        wandb.teardown()


@pytest.fixture
def wandb_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    isolate_wandb(monkeypatch, tmp_path)
    return tmp_path


def tiny_config(run_dir: Path, **changes: Any) -> RunConfig:
    settings = {"task": "digits", "epochs": 1, "test_batch_size": 2000, "run_dir": str(run_dir),
                "device": "cpu", "checkpoint_every_minutes": 0, **changes}
    return RunConfig(**settings)


def run_engine(config: RunConfig, **options: Any) -> tuple[Engine, list]:
    engine = Engine(config, **options).start()
    return engine, list(engine.events())


# ---------------------------------------------------------------- reading the logs back


def wandb_records(path: Path) -> Iterator[Any]:
    """The Records of a run-ID.wandb file. wandb 0.31 has no Python reader left (wandb-core
    writes it), so this unframes its LevelDB-style log (32 KiB blocks of chunks: crc32, length,
    type) and parses each record with wandb's own protobuf class."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1), f"{path} is not a wandb transaction log"
    position, pending = 7, b""
    while position + 7 <= len(data):
        room = 32768 - position % 32768
        if room < 7:  # a block's tail too short for a chunk header is padding
            position += room
            continue
        checksum, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if kind == 0:  # zero padding to the end of the block
            position += room
            continue
        if position + 7 + length > len(data):
            break  # wandb-core is still writing this chunk: the rest is read at the next poll
        chunk = data[position + 7:position + 7 + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == checksum, f"corrupt {path}"
        position += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # full, first / middle, last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def wandb_segments(wandb_dir: Path, count: int = 1) -> list[SimpleNamespace]:
    """One entry per wandb.init of the run (a resume adds one), oldest first. wandb-core may
    still be writing a file when finish() returns: wait for `count` files to be complete."""
    deadline = time.monotonic() + 30
    while True:
        segments = read_segments(wandb_dir)
        complete = all(segment.exit_code is not None for segment in segments)
        if (len(segments) >= count and complete) or time.monotonic() > deadline:
            return segments
        time.sleep(0.2)


def read_segments(wandb_dir: Path) -> list[SimpleNamespace]:
    segments = []
    for path in sorted(wandb_dir.glob("offline-run-*/run-*.wandb")):
        segment = SimpleNamespace(run_id="", config={}, rows=[], step_metric={}, exit_code=None)
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                segment.run_id = record.run.run_id
                segment.config.update({item.key: json.loads(item.value_json)
                                       for item in record.run.config.update})
            elif kind == "config":
                segment.config.update({item.key: json.loads(item.value_json)
                                       for item in record.config.update})
            elif kind == "history":
                segment.rows.append({item.key or "/".join(item.nested_key):
                                     json.loads(item.value_json) for item in record.history.item})
            elif kind == "metric":
                name = record.metric.name or record.metric.glob_name
                segment.step_metric[name] = record.metric.step_metric
            elif kind == "exit":
                segment.exit_code = record.exit.exit_code
        segments.append(segment)
    return segments


def tensorboard(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    return accumulator.Reload()


def tb_steps(accumulator, tag: str) -> list[int]:
    return [scalar.step for scalar in accumulator.Scalars(tag)]


def of_type(events: list, cls: type) -> list:
    return [event for event in events if isinstance(event, cls)]


def warnings_about(events: list, text: str) -> list[str]:
    return [event.message for event in of_type(events, LogLine)
            if event.level == "warning" and text in event.message]


# ---------------------------------------------------------------- one run, both loggers


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    home = tmp_path_factory.mktemp("logged")
    with pytest.MonkeyPatch.context() as mp:
        isolate_wandb(mp, home)
        engine, events = run_engine(tiny_config(home / "run", wandb="offline"))
    assert engine.state == State.FINISHED
    return SimpleNamespace(run_dir=home / "run", events=events,
                           epoch=of_type(events, EpochEnded)[0],
                           steps=of_type(events, StepLogged),
                           info=of_type(events, LoggersInfo)[0])


def test_wandb_offline_records_settings_epoch_and_step_figures(logged_run):
    run_dir, epoch = logged_run.run_dir, logged_run.epoch
    assert logged_run.info.wandb_mode == "offline"
    assert logged_run.info.wandb_sync_command == f"wandb sync {run_dir / 'wandb'}"
    [segment] = wandb_segments(run_dir / "wandb")

    config = segment.config
    assert (config["task_name"], config["epochs"], config["batch_size"]) == ("digits", 1, 64)
    assert config["train_loader"] == {"batch_size": 64, "shuffle": True, "num_workers": 0,
                                      "pin_memory": False, "persistent_workers": False,
                                      "drop_last": False}
    assert config["test_loader"]["batch_size"] == 2000

    [row] = [row for row in segment.rows if "test_loss" in row]
    assert row["epoch"] == 1 and row["_step"] == epoch.global_step
    assert row["test_loss"] == pytest.approx(epoch.test_loss)
    assert row["test_acc"] == pytest.approx(100 * epoch.test_accuracy)
    assert row["time_taken"] == pytest.approx(epoch.train_seconds)
    for name, value in (("train_loss", epoch.train_loss), ("lr", epoch.lr),
                        ("samples_per_second", epoch.samples_per_second),
                        ("data_wait_fraction", epoch.data_wait_fraction),
                        ("batch_size", 64), ("num_workers", 0)):
        assert row[name] == pytest.approx(value), name
    assert segment.step_metric["test_acc"] == segment.step_metric["time_taken"] == "epoch"

    step_rows = [row for row in segment.rows if "train/loss" in row]
    assert [row["global_step"] for row in step_rows] == [s.global_step for s in logged_run.steps]
    assert [row["train/loss"] for row in step_rows] == pytest.approx(
        [s.loss for s in logged_run.steps])
    assert segment.step_metric["train/*"] == "global_step"
    assert segment.exit_code == 0  # finished


def test_tensorboard_has_the_same_scalars_and_the_hyperparameters(logged_run):
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_dir, epoch = logged_run.run_dir, logged_run.epoch
    assert logged_run.info.tensorboard_dir == str(run_dir / "tensorboard")
    assert any(f"tensorboard --logdir {run_dir / 'tensorboard'}" in event.message
               for event in of_type(logged_run.events, LogLine))
    board = tensorboard(run_dir)
    assert tb_steps(board, "train/loss") == [s.global_step for s in logged_run.steps]
    [test_acc] = board.Scalars("test_acc")
    assert (test_acc.step, test_acc.value) == (epoch.global_step,
                                               pytest.approx(100 * epoch.test_accuracy))
    [time_taken] = board.Scalars("time_taken")
    assert time_taken.value == pytest.approx(epoch.train_seconds)

    content = board.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["task"].string_value == "digits"
    assert hparams["batch_size"].number_value == 64
    assert hparams["test_loader.batch_size"].number_value == 2000


# ---------------------------------------------------------------- resume


def all_rows(segments: list[SimpleNamespace]) -> list[dict]:
    return [row for segment in segments for row in segment.rows]


def assert_one_log_without_repeats(run_dir: Path, last_step: int) -> list[SimpleNamespace]:
    segments = wandb_segments(run_dir / "wandb", count=2)
    assert len(segments) == 2 and segments[0].run_id == segments[1].run_id
    steps = [row["_step"] for row in all_rows(segments)]
    assert steps == sorted(set(steps)) and steps[-1] == last_step
    assert [row["epoch"] for row in all_rows(segments) if "test_loss" in row] == [1, 2]

    board = tensorboard(run_dir)
    tb_train = tb_steps(board, "train/loss")
    assert tb_train == sorted(set(tb_train)) and tb_train[-1] == last_step
    assert [int(scalar.value) for scalar in board.Scalars("epoch")] == [1, 2]
    return segments


@pytest.mark.slow
def test_stopped_run_resumes_into_the_same_logs_without_repeated_steps(wandb_home):
    config = tiny_config(wandb_home / "run", epochs=2, wandb="offline", log_interval=5)
    engine = Engine(config).start()
    for event in engine.events():
        if isinstance(event, StepLogged) and event.epoch == 2 and engine.state == State.RUNNING:
            engine.stop()
    assert engine.state == State.STOPPED
    stopped_at = engine.trainer.progress.global_step

    resumed, events = run_engine(config, resume=True)
    assert resumed.state == State.FINISHED
    segments = assert_one_log_without_repeats(wandb_home / "run", last_step=46)
    assert segments[1].rows[0]["_step"] > stopped_at
    assert segments[1].step_metric["test_loss"] == "epoch"  # axes defined again after resume
    sync = subprocess.run([sys.executable, "-m", "wandb", "sync", "--dry-run",
                           str(wandb_home / "run" / "wandb")],
                          capture_output=True, text=True, timeout=60)
    assert "Would sync 2 run(s)" in sync.stdout + sync.stderr  # both segments, one command


@pytest.mark.slow
def test_resume_after_a_crash_does_not_log_the_steps_after_the_checkpoint_twice(wandb_home):
    """A crash after a checkpoint leaves logged steps the resumed run trains again."""
    config = tiny_config(wandb_home / "run", epochs=2, wandb="offline")
    finished, _ = run_engine(config)
    assert finished.state == State.FINISHED
    end_of_epoch_1 = wandb_home / "run" / "checkpoints" / "ckpt-e0001-s000000023.pt"

    resumed, _ = run_engine(config, resume=str(end_of_epoch_1))  # trains epoch 2 again
    assert resumed.state == State.FINISHED
    assert_one_log_without_repeats(wandb_home / "run", last_step=46)


# ---------------------------------------------------------------- never in the way


class AlwaysFails:
    name = "always-fails logger"

    def __call__(self, event):
        raise RuntimeError("logger exploded")

    def checkpoint_state(self):
        raise RuntimeError("logger exploded")

    def close(self):
        raise RuntimeError("logger exploded")


def test_a_logger_that_always_raises_is_reported_once_and_training_finishes(tmp_path):
    engine, events = run_engine(tiny_config(tmp_path / "run"), sinks=[AlwaysFails()])
    assert engine.state == State.FINISHED
    assert len(warnings_about(events, "always-fails logger")) == 1
    assert len(of_type(events, EpochEnded)) == 1
    assert tb_steps(tensorboard(tmp_path / "run"), "test_loss")  # the other loggers went on


def test_a_full_disk_under_tensorboard_is_reported_once_and_wandb_goes_on(wandb_home,
                                                                          monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SummaryWriter, "add_scalar", disk_full)
    engine, events = run_engine(tiny_config(wandb_home / "run", wandb="offline"))
    assert engine.state == State.FINISHED
    [warning] = warnings_about(events, "TensorBoard failed")
    assert "No space left on device" in warning
    [segment] = wandb_segments(wandb_home / "run" / "wandb")
    assert [row["epoch"] for row in segment.rows if "test_loss" in row] == [1]


# ---------------------------------------------------------------- online falls back to offline


def open_online(run_dir: Path) -> tuple[list, LoggersInfo, list[str]]:
    config = tiny_config(run_dir, wandb="online", tensorboard=False)
    sinks, info, notes = open_loggers(config, private(run_dir), {}, "digits")
    for sink in sinks:
        sink.close()
    return sinks, info, notes


def assert_fell_back_offline(info: LoggersInfo, notes: list[str], run_dir: Path,
                             reason: str) -> None:
    assert info.wandb_mode == "offline" and info.wandb_url == ""
    assert info.wandb_sync_command == f"wandb sync {run_dir / 'wandb'}"
    [note] = notes
    assert reason in note and info.wandb_sync_command in note and "\n" not in note
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))


def test_online_without_an_api_key_logs_offline_with_the_sync_command(wandb_home):
    _, info, notes = open_online(wandb_home / "run")
    assert_fell_back_offline(info, notes, wandb_home / "run", "no API key")


def test_online_with_the_server_unreachable_logs_offline(wandb_home, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)  # WANDB_BASE_URL is a closed port
    _, info, notes = open_online(wandb_home / "run")
    assert_fell_back_offline(info, notes, wandb_home / "run", "cannot reach")


def test_online_with_a_server_that_never_answers_logs_offline_after_a_short_wait(
        wandb_home, monkeypatch):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)  # the kernel accepts connections into the backlog; nothing ever answers
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setattr(wandb_sink, "INIT_SECONDS", 2.0)
    try:
        _, info, notes = open_online(wandb_home / "run")
    finally:
        server.close()
    assert_fell_back_offline(info, notes, wandb_home / "run", "wandb.init failed")


def test_missing_packages_are_one_note_each_and_no_logger(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now fails
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    config = tiny_config(tmp_path / "run", wandb="offline")
    sinks, info, notes = open_loggers(config, private(tmp_path / "run"), {}, "digits")
    assert sinks == [] and info == LoggersInfo(time=info.time)
    assert len(notes) == 2
    assert "wandb is off" in notes[0] + notes[1] and "TensorBoard is off" in notes[0] + notes[1]


def test_importing_the_engine_and_its_sinks_loads_neither_wandb_nor_tensorboard():
    code = ("import sys, ctui.engine, ctui.engine.sinks.loggers, "
            "ctui.engine.sinks.wandb_sink, ctui.engine.sinks.tensorboard_sink\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('wandb', 'tensorboard')"
            " or m.startswith('torch.utils.tensorboard')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "[]"


def private(run_dir):
    make_private_dir(run_dir)
    return run_dir
