"""The start-up hook in programs that never reach a DataLoader (fast: no torch is imported)."""

from __future__ import annotations

from ctui.engine.observe import BOOT_DIR

WHAT_LOADED = ("import sys; print(sorted(m for m in sys.modules "
               "if m.startswith(('_ctui', 'torch', 'ctui'))), "
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
