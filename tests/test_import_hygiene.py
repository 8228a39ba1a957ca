"""The engine must import without Textual (notebooks, headless hosts) and stay light."""

import json
import subprocess
import sys

ENGINE_MODULES = [
    "ctui.engine", "ctui.engine.config", "ctui.engine.events", "ctui.engine.control",
    "ctui.engine.loop", "ctui.engine.checkpoint", "ctui.engine.state", "ctui.engine.tasks",
    "ctui.engine.api", "ctui.engine.cli.main", "ctui.engine.cli.train", "ctui.engine.cli.console",
]


def modules_after_import(module: str) -> set[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def test_no_engine_module_imports_textual_wandb_or_tensorboard():
    for module in ENGINE_MODULES:
        loaded = modules_after_import(module)
        assert module in loaded
        for heavy in ("textual", "wandb", "tensorboard"):
            assert heavy not in loaded, f"importing {module} loaded {heavy}"


def test_importing_the_engine_package_does_not_load_torch():
    # The panel draws its first frame before torch is imported; it only needs config and events.
    loaded = modules_after_import("ctui.engine.events")
    assert "torch" not in loaded
    assert "torch" not in modules_after_import("ctui.engine")


def test_engine_is_not_installed_as_a_bare_top_level_module():
    code = "import importlib.util as u; print(u.find_spec('engine'), u.find_spec('tui'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd="/")
    assert out.stdout.strip() == "None None"
