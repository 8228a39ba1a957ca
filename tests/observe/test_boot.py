"""The start-up hook in programs that never reach a DataLoader or wandb, or one of the two:
nothing loaded that the program did not import (fast: a second or two each)."""

from __future__ import annotations

from ctui.engine.observe import BOOT_DIR

WHAT_LOADED = ("import sys; print(sorted(m for m in sys.modules "
               "if m.startswith(('_ctui', 'torch', 'ctui', 'wandb'))), "
               "sum(type(f).__name__ == '_Watcher' for f in sys.meta_path))")


def test_a_script_that_never_imports_torch_is_untouched(observed):
    result = observed.run("-c", WHAT_LOADED)
    assert result.stdout == "[] 1\n" and result.stderr == ""  # a watcher, nothing loaded
    assert list(observed.observe.iterdir()) == []


def test_without_the_variable_the_hook_only_runs_the_hidden_sitecustomize(bare, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("print('their sitecustomize ran')\n")
    result = bare.run("-c", WHAT_LOADED, env={"PYTHONPATH": f"{BOOT_DIR}:{other}"})
    assert result.stdout == "their sitecustomize ran\n[] 0\n" and result.stderr == ""


def test_an_error_in_the_hidden_sitecustomize_is_reported_as_python_reports_it(observed, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("raise RuntimeError('theirs is broken')\n")
    result = observed.run("-c", "print('ran')", env={"PYTHONPATH": str(other)})
    assert result.stdout == "ran\n"
    assert "Error in sitecustomize" in result.stderr and "theirs is broken" in result.stderr


def watchers() -> str:
    return "sum(type(f).__name__ == '_Watcher' for f in sys.meta_path)"


def test_a_script_that_imports_torch_but_not_wandb_never_gets_wandb(observed):
    code = ("import sys, torch.utils.data; "
            f"print('wandb' in sys.modules, '_ctui_observe_hook' in sys.modules, {watchers()})")
    result = observed.run("-c", code)
    assert result.stdout == "False True 1\n"  # observed, and still watching for wandb only


def test_wandb_then_torch_share_one_copy_of_the_hook_and_one_records_file(observed):
    code = ("import sys, wandb\n"
            "tap = wandb.sdk.wandb_run.Run._ctui_tap\n"
            f"print('torch' in sys.modules, {watchers()})\n"
            "import torch.utils.data\n"
            "observer = torch.utils.data.DataLoader._ctui_observer\n"
            f"print(observer.file is tap.file, {watchers()}, "
            "type(tap).__module__ == type(observer).__module__ == '_ctui_observe_hook')\n")
    result = observed.run("-c", code)
    assert result.stdout == "False 1\nTrue 0 True\n", result.stderr
    assert list(observed.observe.iterdir()) == []  # nothing logged, nothing iterated
