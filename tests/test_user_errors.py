"""Mistakes cost seconds, not minutes: a typo is refused before torch loads, a run that fails to
start leaves no folder behind, a task file imports its neighbours, and an error in the user's
own code says where it happened (issue 16, items 13-15)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ctui.engine import TaskError, train
from ctui.engine.preflight import _gpu_possible

from helpers import REPO, ctui_in_process, tiny

# A fresh interpreter runs the command and reports whether torch was imported by the time it
# exited: the measure of "refused before torch loads" that no machine's load can bend.
CHECK_TORCH = textwrap.dedent("""
    import sys
    from ctui.engine.cli.main import main
    try:
        code = main(sys.argv[1:])
    except SystemExit as exit_info:
        code = exit_info.code
    print("torch imported" if "torch" in sys.modules else "torch not imported")
    sys.exit(code)
""")

EARLY_ERRORS = [
    (["--config", "/nonexistent.toml"], "--config", "does not exist"),
    (["--task", "nope"], "--task", "digits, mnist"),
    (["--resume"], "--resume", "--run-dir"),
    (["--task", "no/such/task.py:build"], "--task", "does not exist"),
    (["--task", "assets/examples/README.md:build"], "--task", "not a Python file"),
    (["--device", "mps"], "--device", "mps"),
]


def refuse_before_torch(tmp_path: Path, argv: list[str]) -> tuple[int, str, str]:
    result = subprocess.run(
        [sys.executable, "-c", CHECK_TORCH, "train", "--headless", "--runs-dir",
         str(tmp_path / "runs"), *argv], capture_output=True, text=True, cwd=REPO, timeout=120)
    return result.returncode, result.stdout, result.stderr


def assert_one_line_without_torch(tmp_path, argv, flag, allowed):
    code, out, err = refuse_before_torch(tmp_path, argv)
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and flag in err and allowed in err, err
    assert "torch not imported" in out, f"{argv}: torch was loaded before the error: {err}"
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize(("argv", "flag", "allowed"), EARLY_ERRORS,
                         ids=[" ".join(case[0]) for case in EARLY_ERRORS])
def test_a_config_error_is_refused_before_torch_loads(tmp_path, argv, flag, allowed):
    if sys.platform == "darwin" and argv == ["--device", "mps"]:
        pytest.skip("a Mac may have MPS")
    assert_one_line_without_torch(tmp_path, argv, flag, allowed)


def test_cuda_without_a_gpu_is_refused_before_torch_loads(tmp_path):
    if _gpu_possible():
        pytest.skip("this machine may have a GPU")
    assert_one_line_without_torch(tmp_path, ["--device", "cuda"], "--device", "no usable CUDA")


def test_resume_of_a_run_with_nothing_to_resume_is_refused_before_torch_loads(tmp_path):
    run = tmp_path / "empty-run"
    (run / "checkpoints").mkdir(parents=True, mode=0o700)
    run.chmod(0o700)
    assert_one_line_without_torch(tmp_path, ["--resume", "--run-dir", str(run)], "--resume",
                                  "nothing to resume")


def test_cuda_typed_beside_resume_is_refused_before_the_checkpoint_loads(tmp_path):
    if _gpu_possible():
        pytest.skip("this machine may have a GPU")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True, mode=0o700)
    run.chmod(0o700)
    (run / "checkpoints" / "ckpt-e0001-s000000012.pt").write_bytes(b"not loaded")
    assert_one_line_without_torch(tmp_path, ["--resume", "--run-dir", str(run), "--device",
                                             "cuda"], "--device", "no usable CUDA")


# --------------------------------------------------------------------- no empty run folders

FAILING_BUILD = """
def build(config):
    raise RuntimeError("the data is not where I said")
"""


def test_a_run_that_fails_to_start_leaves_no_run_folder(tmp_path):
    task = tmp_path / "broken_task.py"
    task.write_text(FAILING_BUILD)
    runs = tmp_path / "runs"
    with pytest.raises(TaskError, match="the data is not where I said"):
        train(tiny(task=f"{task}:build", runs_dir=str(runs)), quiet=True)
    assert list(runs.iterdir()) == []
    with pytest.raises(TaskError):  # a --run-dir it made for the run: gone too
        train(tiny(task=f"{task}:build", run_dir=str(tmp_path / "named")), quiet=True)
    assert not (tmp_path / "named").exists()


def test_offline_mnist_leaves_no_run_folder(tmp_path, capsys, monkeypatch):
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)  # as on a box without internet
    runs = tmp_path / "runs"
    code, _, err = ctui_in_process(capsys, "train", "--headless", "--task", "mnist",
                                   "--data-dir", str(tmp_path / "data"), "--runs-dir",
                                   str(runs), "--no-tensorboard")
    assert code == 1 and "MNIST is not in" in err, err
    assert not runs.exists() or list(runs.iterdir()) == []


def test_a_failed_start_in_a_folder_the_user_made_leaves_the_folder(tmp_path):
    task = tmp_path / "broken_task.py"
    task.write_text(FAILING_BUILD)
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    with pytest.raises(TaskError):
        train(tiny(task=f"{task}:build", run_dir=str(mine)), quiet=True)
    assert mine.is_dir()


def test_a_failed_start_in_a_folder_an_earlier_run_made_leaves_that_run_whole(tmp_path):
    run_dir = tmp_path / "run"
    train(tiny(task=f"{REPO / 'assets/examples/tiny_task.py'}:build", run_dir=str(run_dir)),
          quiet=True)  # made by this process, trained, finished
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    task = tmp_path / "broken_task.py"
    task.write_text(FAILING_BUILD)
    with pytest.raises(TaskError):
        train(tiny(task=f"{task}:build", run_dir=str(run_dir)), quiet=True)
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_headless_start_failure_leaves_no_run_folder(tmp_path, capsys):
    task = tmp_path / "broken_task.py"
    task.write_text(FAILING_BUILD)
    runs = tmp_path / "runs"
    code, _, err = ctui_in_process(capsys, "train", "--headless", "--runs-dir", str(runs),
                                   "--task", f"{task}:build", "--no-tensorboard")
    assert code == 2 and "the data is not where I said" in err
    assert not runs.exists() or list(runs.iterdir()) == []


# --------------------------------------------------------------------- errors in user code

HELPER = """
from torch import nn


def make_model():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
"""

TASK_USING_A_NEIGHBOUR = """
import torch
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset

from ctui.engine import Task
from my_models import make_model


def build(config):
    digits = load_digits()
    images = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    labels = torch.tensor(digits.target)
    return Task(model=make_model(), train_dataset=TensorDataset(images[:1400], labels[:1400]),
                test_dataset=TensorDataset(images[1400:], labels[1400:]))
"""


def test_a_task_file_imports_the_modules_beside_it(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "my_models.py").write_text(HELPER)
    (folder / "task.py").write_text(TASK_USING_A_NEIGHBOUR)
    epochs = train(tiny(task=f"{folder / 'task.py'}:build", runs_dir=str(tmp_path / "runs")),
                   quiet=True)
    assert len(epochs) == 1 and epochs[0].test_accuracy is not None


FORWARD_FAILS = '''
import torch
from torch import nn
from torch.utils.data import TensorDataset

from ctui.engine import Task


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x) / self.scale(x)  # line 15: no such method


def build(config):
    data = TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,)))
    return Task(model=Net(), train_dataset=data, test_dataset=data)
'''


def forward_fails(tmp_path: Path) -> Path:
    task = tmp_path / "my_task.py"
    task.write_text(FORWARD_FAILS)
    assert "line 15" in task.read_text().splitlines()[14]
    return task


def test_an_error_in_the_users_forward_names_its_file_and_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CTUI_DEBUG", raising=False)
    task = forward_fails(tmp_path)
    code, _, err = ctui_in_process(capsys, "train", "--headless", "--runs-dir",
                                   str(tmp_path / "runs"), "--task", f"{task}:build",
                                   "--no-tensorboard", "--epochs", "1")
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "AttributeError" in lines[0] and f"{task}:15" in lines[0], lines[0]
    assert "CTUI_DEBUG=1" in lines[0] and "Traceback" not in err
    end = json.loads(next((tmp_path / "runs").iterdir()).joinpath("end.json").read_text())
    assert end["state"] == "failed" and f"{task}:15" in end["reason"]


DATASET_FAILS = '''
import torch
from torch import nn
from torch.utils.data import Dataset

from ctui.engine import Task


class Broken(Dataset):
    def __len__(self):
        return 32

    def __getitem__(self, index):
        return torch.randn(4), int("label")  # line 14: not a number


def build(config):
    return Task(model=nn.Linear(4, 2), train_dataset=Broken(), test_dataset=Broken())
'''


@pytest.mark.parametrize("workers", [0, 1])
def test_an_error_in_the_users_dataset_names_its_line_also_from_a_worker(tmp_path, workers):
    task = tmp_path / "data_task.py"
    task.write_text(DATASET_FAILS)
    with pytest.raises(RuntimeError) as raised:
        train(tiny(task=f"{task}:build", num_workers=workers,
                   runs_dir=str(tmp_path / "runs")), quiet=True)
    assert f"{task}:14" in str(raised.value) and "ValueError" in str(raised.value)


def test_ctui_debug_prints_the_whole_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CTUI_DEBUG", "1")
    task = forward_fails(tmp_path)
    code, _, err = ctui_in_process(capsys, "train", "--headless", "--runs-dir",
                                   str(tmp_path / "runs"), "--task", f"{task}:build",
                                   "--no-tensorboard", "--epochs", "1")
    assert code == 1
    assert "Traceback (most recent call last)" in err and 'my_task.py", line 15' in err


def test_an_error_in_the_users_build_names_its_file_and_line(tmp_path):
    task = tmp_path / "broken_task.py"
    task.write_text(FAILING_BUILD)
    with pytest.raises(TaskError) as raised:
        train(tiny(task=f"{task}:build", runs_dir=str(tmp_path / "runs")), quiet=True)
    message = str(raised.value)
    assert len(message.splitlines()) == 1
    assert f"{task}:3" in message and "CTUI_DEBUG=1" in message


def test_the_notebook_error_names_the_users_line_too(tmp_path):
    task = forward_fails(tmp_path)
    with pytest.raises(RuntimeError) as raised:
        train(tiny(task=f"{task}:build", runs_dir=str(tmp_path / "runs")), quiet=True)
    assert f"{task}:15" in str(raised.value)


def test_readme_documents_ctui_debug():
    assert "CTUI_DEBUG=1" in (REPO / "README.md").read_text()


def test_the_early_cuda_check_never_refuses_a_gpu_torch_sees():
    import torch

    if torch.cuda.is_available():
        assert _gpu_possible()
