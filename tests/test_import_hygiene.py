"""The engine imports without Textual (notebooks, headless hosts) and stays light; the layers'
import contracts hold (pyproject.toml, checked by lint-imports)."""

import json
import shutil
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from helpers import REPO

ENGINE_MODULES = [
    "ctui.engine", "ctui.engine.config", "ctui.engine.events", "ctui.engine.errors",
    "ctui.engine.safefs", "ctui.engine.run_folder", "ctui.engine.runs", "ctui.engine.control",
    "ctui.engine.loop", "ctui.engine.checkpoint", "ctui.engine.state", "ctui.engine.tasks",
    "ctui.engine.telemetry", "ctui.engine.api", "ctui.engine.cli.main", "ctui.engine.cli.train",
    "ctui.engine.cli.runs_cmds", "ctui.engine.host", "ctui.engine.host.serve",
    "ctui.engine.host.server", "ctui.engine.host.client", "ctui.engine.host.registry",
    "ctui.engine.sinks", "ctui.engine.sinks.console", "ctui.engine.sinks.loggers",
    "ctui.engine.sinks.figures",
]
# What the panel and `ctui ls` import before a run starts: no torch, so a typo or a listing
# costs well under a second.
TORCH_FREE = [
    "ctui.engine", "ctui.engine.config", "ctui.engine.events", "ctui.engine.errors",
    "ctui.engine.safefs", "ctui.engine.run_folder", "ctui.engine.runs", "ctui.engine.telemetry",
    "ctui.engine.host", "ctui.engine.host.registry", "ctui.engine.host.client",
    "ctui.engine.cli.runs_cmds", "ctui.engine.sinks.console", "ctui.engine.observe",
    "ctui.engine.best",
]


def modules_after_import(module: str) -> set[str]:
    """sys.modules after importing `module` alone, in a fresh interpreter."""
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


@pytest.fixture(scope="module")
def loaded_by() -> dict[str, Future]:
    """Each module imported in its own interpreter, several at once (each test still checks
    one module, so a failure names it)."""
    pool = ThreadPoolExecutor(max_workers=4)
    futures = {module: pool.submit(modules_after_import, module)
               for module in dict.fromkeys(ENGINE_MODULES + TORCH_FREE)}
    yield futures
    pool.shutdown()


@pytest.mark.parametrize("module", ENGINE_MODULES)
def test_no_engine_module_imports_textual_wandb_or_tensorboard(loaded_by, module):
    loaded = loaded_by[module].result()
    assert module in loaded
    for heavy in ("textual", "wandb", "tensorboard"):
        assert heavy not in loaded, f"importing {module} loaded {heavy}"


@pytest.mark.parametrize("module", TORCH_FREE)
def test_modules_the_panel_and_listing_use_do_not_load_torch(loaded_by, module):
    assert "torch" not in loaded_by[module].result()


def test_the_import_contracts_hold():
    lint_imports = shutil.which("lint-imports")
    if lint_imports is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    result = subprocess.run([lint_imports], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:]


def test_engine_is_not_installed_as_a_bare_top_level_module():
    code = "import importlib.util as u; print(u.find_spec('engine'), u.find_spec('tui'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd="/")
    assert out.stdout.strip() == "None None"
