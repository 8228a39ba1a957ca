"""Every bad setting is refused before anything runs: one line naming the flag and what is
allowed, exit code 2, no traceback."""

from __future__ import annotations

import pytest

from ctui.engine.cli.main import main

from helpers import run_ctui

BAD_FLAGS = [
    (["--batch-size", "0"], "--batch-size", ">= 1"),
    (["--batch-size", "-3"], "--batch-size", ">= 1"),
    (["--batch-size", "abc"], "--batch-size", "whole number"),
    (["--test-batch-size", "0"], "--test-batch-size", ">= 1"),
    (["--epochs", "0"], "--epochs", ">= 1"),
    (["--epochs", "1.5"], "--epochs", "whole number"),
    (["--lr", "0"], "--lr", "> 0"),
    (["--lr", "-1"], "--lr", "> 0"),
    (["--lr", "fast"], "--lr", "number"),
    (["--gamma", "0"], "--gamma", "> 0"),
    (["--seed", "-1"], "--seed", ">= 0"),
    (["--log-interval", "0"], "--log-interval", ">= 1"),
    (["--num-workers", "-1"], "--num-workers", ">= 0"),
    (["--num-workers", "100000"], "--num-workers", "cores"),
    (["--device", "gpu"], "--device", "auto, cpu, cuda"),
    (["--device", "cuda:x"], "--device", "auto, cpu, cuda"),
    (["--task", "imagenet"], "--task", "digits, mnist, cifar10, fake"),
    (["--time-limit", "soon"], "--time-limit", "11h50m"),
    (["--fake-image-shape", "3x32"], "--fake-image-shape", "CxHxW"),
    (["--wandb", "maybe"], "--wandb", "online"),
    (["--config", "/nonexistent/settings.toml"], "--config", "does not exist"),
]


def assert_one_line_usage_error(capsys, argv, flag, allowed):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--headless", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert flag in err and allowed in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(("argv", "flag", "allowed"), BAD_FLAGS,
                         ids=[" ".join(case[0]) for case in BAD_FLAGS])
def test_bad_flag_is_one_line_exit_2(capsys, argv, flag, allowed):
    assert_one_line_usage_error(capsys, argv, flag, allowed)


def test_cuda_on_a_machine_without_one(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert_one_line_usage_error(capsys, ["--device", "cuda"], "--device", "no usable CUDA")


def test_cuda_index_beyond_the_devices(capsys):
    assert_one_line_usage_error(capsys, ["--device", "cuda:99"], "--device", "cuda")


def test_user_task_file_that_does_not_exist(capsys):
    assert_one_line_usage_error(capsys, ["--task", "nope/missing.py:build"], "--task",
                                "does not exist")


def test_user_task_function_that_does_not_exist(capsys):
    assert_one_line_usage_error(capsys, ["--task", "assets/examples/tiny_task.py:nothing"],
                                "--task", "no function 'nothing'")


def test_bad_value_in_config_file(capsys, tmp_path):
    settings = tmp_path / "run.toml"
    settings.write_text("batch-size = 0\n")
    assert_one_line_usage_error(capsys, ["--config", str(settings)], "--batch-size", ">= 1")


def test_unknown_key_in_config_file(capsys, tmp_path):
    settings = tmp_path / "run.toml"
    settings.write_text("batch-sise = 32\n")
    assert_one_line_usage_error(capsys, ["--config", str(settings)], "batch_sise",
                                "known settings")


def test_unknown_flag_is_one_line():
    result = run_ctui("train", "--headless", "--batchsize", "3")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--batchsize" in result.stderr


@pytest.mark.slow
def test_mnist_offline_says_where_to_put_the_files(tmp_path):
    result = run_ctui("train", "--headless", "--task", "mnist", "--data-dir", str(tmp_path),
                      env={"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"})
    assert result.returncode == 1
    err = result.stderr.strip()
    assert "Traceback" not in err
    assert str(tmp_path / "MNIST" / "raw") in err and "train-images-idx3-ubyte.gz" in err
