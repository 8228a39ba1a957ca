"""Hostile or careless command-line input: numbers past what NumPy, torch or the clock can hold,
inf and nan, files that are not settings or not Python, settings of the wrong type. Each is
refused before anything runs: one line on stderr naming the flag, exit code 2, no traceback."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from ctui.engine.config import ConfigError, RunConfig

from helpers import ctui_in_process, run_ctui

TRAIN = ("train", "--headless", "--epochs", "1", "--no-tensorboard")
HUGE = "9" * 32

# (argv after `ctui train --headless ...`, words the one line must hold)
BAD_TRAIN_FLAGS = [
    (["--seed", "99999999999999999999999"], ["--seed", "4294967295"]),
    (["--seed", "18446744073709551615"], ["--seed", "4294967295"]),
    (["--seed", str(2**32)], ["--seed", "4294967295"]),
    (["--task", "/etc/passwd:build"], ["--task", "/etc/passwd", "not a Python file"]),
    (["--task", "/etc:build"], ["--task", "not a Python file"]),
    (["--task", "..tasks:build"], ["--task", "not a module name"]),
    (["--batch-size", "1e29"], ["--batch-size", "whole number"]),
    (["--batch-size", "1" + "0" * 29], ["--batch-size", "too large", "2147483647"]),
    (["--test-batch-size", "1" + "0" * 29], ["--test-batch-size", "too large"]),
    (["--epochs", HUGE], ["--epochs", "too large"]),
    (["--fake-size", HUGE, "--task", "fake"], ["--fake-size", "too large"]),
    (["--fake-classes", HUGE, "--task", "fake"], ["--fake-classes", "too large"]),
    (["--fake-image-shape", "1x1x1", "--task", "fake"], ["--fake-image-shape", "from 4"]),
    (["--fake-image-shape", "3x3x32", "--task", "fake"], ["--fake-image-shape", "from 4"]),
    (["--fake-image-shape", "5x32x32", "--task", "fake"], ["--fake-image-shape", "C from 1 to 4"]),
    (["--time-limit", "99999999999999999999999999999999"], ["--time-limit", "a year"]),
    (["--time-limit", "9999999999h"], ["--time-limit", "a year"]),
    (["--time-limit", "1" + "0" * 400], ["--time-limit", "a year"]),
    (["--lr", "inf"], ["--lr", "finite number > 0"]),
    (["--lr", "nan"], ["--lr", "finite number > 0"]),
    (["--gamma", "inf"], ["--gamma", "finite number > 0"]),
    (["--gamma", "nan"], ["--gamma", "finite number > 0"]),
    (["--checkpoint-every-minutes", "inf"], ["--checkpoint-every-minutes", "minutes >= 0"]),
    (["--device", "cpu\n"], ["--device", "auto, cpu, cuda"]),
]


def assert_refused(code: int, out: str, err: str, words: list[str]) -> None:
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ctui"), err  # `ctui: error:` or `ctui train: error:`
    for word in words:
        assert word in lines[0], (word, err)


@pytest.mark.parametrize(("argv", "words"), BAD_TRAIN_FLAGS,
                         ids=[" ".join(case[0]) for case in BAD_TRAIN_FLAGS])
def test_bad_train_flag(capsys, argv, words):
    assert_refused(*ctui_in_process(capsys, *TRAIN, *argv), words)


@pytest.mark.parametrize("command", ["checkpoint", "stop", "pause", "resume"])
@pytest.mark.parametrize("value", ["inf", "nan", "0", "-1", "1e300"])
def test_run_command_timeout_is_finite_seconds(capsys, command, value):
    assert_refused(*ctui_in_process(capsys, command, f"--timeout={value}"), ["--timeout", "> 0"])


def test_set_timeout_is_finite_seconds(capsys):
    assert_refused(*ctui_in_process(capsys, "set", "batch_size=8", "--timeout=inf"),
                   ["--timeout", "> 0"])


# -- --config FILE ----------------------------------------------------------------------------


def settings_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "settings.toml"
    if kind == "binary":
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "folder":
        path.mkdir()
    elif kind == "huge":
        path.write_text("# a comment\n" * 200_000)
    elif kind == "long number":
        path.write_text(f"seed = {'9' * 5000}\n")
    elif kind == "nested":
        path.write_text("seed = " + "[" * 100_000 + "]" * 100_000 + "\n")
    elif kind == "twice":
        path.write_text("batch_size = 8\nbatch-size = 16\n")
    return path


CONFIG_FILES = [
    ("binary", "not a text file"),
    ("folder", "is a folder"),
    ("huge", "larger than"),
    ("long number", "too long"),
    ("nested", "nested too deep"),
    ("twice", "twice"),
]


@pytest.mark.parametrize(("kind", "words"), CONFIG_FILES, ids=[case[0] for case in CONFIG_FILES])
def test_config_that_is_not_a_settings_file(capsys, tmp_path, kind, words):
    path = settings_file(tmp_path, kind)
    assert_refused(*ctui_in_process(capsys, *TRAIN, "--config", str(path)),
                   ["--config", str(path), words])


def test_config_fifo_does_not_block(tmp_path):
    fifo = tmp_path / "settings.toml"
    os.mkfifo(fifo)
    result = run_ctui(*TRAIN, "--config", str(fifo), timeout=60)  # the old code waited forever
    assert_refused(result.returncode, result.stdout, result.stderr, ["--config", "FIFO"])


WRONG_IN_FILE = [
    ("run_dir = 5", "--run-dir", "non-empty string"),
    ('run_dir = ""', "--run-dir", "non-empty string"),
    ('runs-dir = ""', "--runs-dir", "non-empty string"),
    ("data_dir = []", "--data-dir", "non-empty string"),
    ('seed = "1"', "--seed", "whole number"),
    ("seed = 18446744073709551615", "--seed", "4294967295"),
    ("batch-size = 1e29", "--batch-size", "whole number"),
    ("epochs = true", "--epochs", "whole number"),
    ('lr = "fast"', "--lr", "finite number"),
    ("lr = inf", "--lr", "finite number"),
    ("gamma = nan", "--gamma", "finite number"),
    ('amp = "yes"', "--amp", "true or false"),
    ("tensorboard = 1", "--tensorboard", "true or false"),
    ("fake_image_shape = 5", "--fake-image-shape", "CxHxW"),
    ('fake_image_shape = "1x1x1"', "--fake-image-shape", "from 4"),
    ("time_limit = 1e300", "--time-limit", "a year"),
    ("time_limit = [1]", "--time-limit", "duration"),
    ("checkpoint_every_minutes = inf", "--checkpoint-every-minutes", "minutes >= 0"),
    ("device = 0", "--device", "auto, cpu"),
    ("task = 5", "--task", "FILE.py:FUNCTION"),
    ("wandb = true", "--wandb", "online or offline"),
    ('optimizer = "adam"', "--optimizer", "adadelta, sgd, adamw"),
    ("accumulate = 0", "--accumulate", ">= 1"),
    ('monitor = "f 1"', "--monitor", "figure name"),
    ('mode = "up"', "--mode", "max, min"),
]


@pytest.mark.parametrize(("line", "flag", "allowed"), WRONG_IN_FILE,
                         ids=[case[0] for case in WRONG_IN_FILE])
def test_wrong_value_in_config_names_file_key_and_what_is_allowed(capsys, tmp_path, line, flag,
                                                                   allowed):
    path = tmp_path / "settings.toml"
    path.write_text(line + "\n")
    assert_refused(*ctui_in_process(capsys, *TRAIN, "--config", str(path)),
                   [flag, allowed, str(path)])


# -- RunConfig: every setting, given a value of the wrong type ---------------------------------

WRONG_TYPE = {
    "task": 5, "data_dir": 5, "batch_size": "64", "test_batch_size": 1.0, "epochs": None,
    "lr": "1", "gamma": [0.7], "seed": 1.5, "log_interval": True, "num_workers": "0",
    "device": None, "amp": "false", "run_dir": 5, "runs_dir": None, "fake_size": "2048",
    "fake_image_shape": 28, "fake_classes": 10.0, "checkpoint_every_steps": "0",
    "checkpoint_every_minutes": "5", "keep_checkpoints": None, "time_limit": [60],
    "scale_lr": 1, "tensorboard": "no", "wandb": True, "optimizer": 1, "scheduler": None,
    "accumulate": 2.0, "clip_grad_norm": "1", "compile": "yes", "val_every": "2",
    "monitor": 5, "mode": True, "nproc_per_node": 2.0, "nnodes": "2", "node_rank": None,
    "rdzv_endpoint": 29500, "max_restarts": "3", "rdzv_timeout": "60",
}


def test_every_setting_has_a_wrong_type_case():
    assert set(WRONG_TYPE) == {item.name for item in dataclasses.fields(RunConfig)}


WRONG_TYPE_CASES = [(name, value) for name in sorted(WRONG_TYPE)
                    for value in (WRONG_TYPE[name], {}, b"x", object())]


@pytest.mark.parametrize(("name", "value"), WRONG_TYPE_CASES,
                         ids=[f"{name}={type(value).__name__}" for name, value in WRONG_TYPE_CASES])
def test_wrong_type_is_a_config_error(name, value):
    with pytest.raises(ConfigError) as error:
        RunConfig.from_dict({name: value})
    assert error.value.name == name
    assert str(error.value).startswith("--" + name.replace("_", "-") + ": ")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["run_dir", "runs_dir", "data_dir"])
@pytest.mark.parametrize("value", ["", "a\0b"], ids=["empty", "nul"])
def test_folder_settings_are_non_empty_strings(name, value):
    with pytest.raises(ConfigError, match="non-empty string"):
        RunConfig(**{name: value})


def test_huge_int_message_stays_short():
    with pytest.raises(ConfigError) as error:
        RunConfig(seed=10**5000)  # has no repr (Python refuses > 4300 digits)
    assert "about 5001 digits" in str(error.value) and len(str(error.value)) < 200


def test_folder_settings_keep_a_path_as_its_string(tmp_path):
    assert RunConfig(run_dir=tmp_path).run_dir == str(tmp_path)


# -- --task FILE.py:FUNCTION ----------------------------------------------------------------


def test_task_file_that_is_a_folder(capsys, tmp_path):
    folder = tmp_path / "tasks.py"
    folder.mkdir()
    assert_refused(*ctui_in_process(capsys, *TRAIN, "--task", f"{folder}:build"),
                   ["--task", "not a regular file"])


def test_task_file_that_is_a_fifo(capsys, tmp_path):
    fifo = tmp_path / "tasks.py"
    os.mkfifo(fifo)
    assert_refused(*ctui_in_process(capsys, *TRAIN, "--task", f"{fifo}:build"),
                   ["--task", "not a regular file"])


def test_task_file_that_exits_while_loading(capsys, tmp_path):
    script = tmp_path / "script.py"
    script.write_text("import sys\nsys.exit(7)\n")
    assert_refused(*ctui_in_process(capsys, *TRAIN, "--task", f"{script}:build"),
                   ["--task", "SystemExit: 7"])


def test_task_file_error_with_a_multi_line_message(capsys, tmp_path):
    script = tmp_path / "broken.py"
    script.write_text("raise RuntimeError('first line\\nsecond line\\nthird line')\n")
    assert_refused(*ctui_in_process(capsys, *TRAIN, "--task", f"{script}:build"),
                   ["--task", "RuntimeError: first line"])
