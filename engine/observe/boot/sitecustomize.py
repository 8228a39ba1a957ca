"""ctui's start-up hook for a program run by `ctui run -- CMD` (coverage.py's precedent).

The supervisor puts this folder first on the program's PYTHONPATH and sets CTUI_OBSERVE_DIR.
Python imports this file at start-up; it first runs the sitecustomize it hides (Debian ships
one), then, only when CTUI_OBSERVE_DIR is set, watches for torch.utils.data.dataloader and
wandb.sdk.wandb_run. Once the program imports one, ../hook.py is loaded by path (the program's
Python need not have ctui installed; once, for both) and patches DataLoader, or wandb's
Run.log. Nothing is loaded for a program that imports neither, nothing here imports either,
and no failure here ever stops the program: it is recorded as `disabled` and the program runs
on unobserved.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_ENGINE = os.path.dirname(os.path.dirname(_HERE))
# module -> the function of hook.py that patches it, once the program has imported it
_WATCHED = {"torch.utils.data.dataloader": "install", "wandb.sdk.wandb_run": "install_wandb"}


def _run_hidden_sitecustomize():
    """Import the sitecustomize that this one shadows, as site.py would have."""
    import importlib.machinery
    import importlib.util

    def elsewhere(entry):
        return os.path.realpath(entry or os.curdir) != os.path.realpath(_HERE)

    spec = importlib.machinery.PathFinder.find_spec(
        "sitecustomize", [entry for entry in sys.path if elsewhere(entry)])
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module  # `import sitecustomize` later finds that one
    spec.loader.exec_module(module)  # its errors reach site.py, which reports them as usual


def _load(name, path):
    import importlib.util

    if name in sys.modules:  # loaded for the other watched module already: one copy
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]  # not half a copy for the other watched module
        raise
    return module


def _record_disabled(folder, why):
    """One `disabled` line in the folder, written as hook.py writes (no links followed, a file
    of our own only); silent when even that fails."""
    import json
    import time

    if not folder:
        return
    try:
        path = os.path.join(folder, f"passes-{os.environ.get('RANK', '0')}-{os.getpid()}.jsonl")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            if os.fstat(fd).st_uid == os.geteuid():
                line = {"kind": "disabled", "reason": why[:500], "time": time.time(),
                        "pid": os.getpid(), "rank": 0}
                os.write(fd, (json.dumps(line) + "\n").encode())
        finally:
            os.close(fd)
    except Exception:
        pass


class _Watcher:
    """A sys.meta_path entry that finds nothing itself: when the program imports a watched
    module, it lets the usual finders find it and patches it once run; it leaves sys.meta_path
    when it has no module left to watch."""

    def __init__(self, folder, names):
        self.folder = folder
        self.names = dict(names)  # module -> hook.py's function for it

    def find_spec(self, name, path=None, target=None):
        if name not in self.names:
            return None
        install = self.names.pop(name)
        if not self.names:
            sys.meta_path[:] = [finder for finder in sys.meta_path if finder is not self]
        try:
            spec = None
            for finder in sys.meta_path:
                find = getattr(finder, "find_spec", None) if finder is not self else None
                spec = find(name, path, target) if find is not None else None
                if spec is not None:
                    break
            if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
                return spec
            loader, folder = spec.loader, self.folder
            original = loader.exec_module

            def exec_module(module):
                original(module)  # the program's import: its errors are its own
                del loader.exec_module
                _install(module, folder, install)

            loader.exec_module = exec_module
            return spec
        except Exception as error:
            _record_disabled(self.folder, f"observer disabled while finding {name}: {error!r}")
            return None


def _install(module, folder, install="install"):
    try:
        _load("_ctui_observe_safefs", os.path.join(_ENGINE, "safefs.py"))
        _load("_ctui_observe_resume_pass", os.path.join(_ENGINE, "observe", "resume_pass.py"))
        hook = _load("_ctui_observe_hook", os.path.join(_ENGINE, "observe", "hook.py"))
        getattr(hook, install)(module, folder)
    except Exception as error:
        _record_disabled(folder, f"observer disabled while loading: {type(error).__name__}: "
                         f"{error}")


def _start():
    folder = os.environ.get("CTUI_OBSERVE_DIR")
    names = {name: install for name, install in _WATCHED.items() if name not in sys.modules}
    if folder and names:
        sys.meta_path.insert(0, _Watcher(folder, names))


try:
    _start()
except Exception as _error:  # never the program's problem
    _record_disabled(os.environ.get("CTUI_OBSERVE_DIR", ""), f"observer disabled: {_error!r}")

_run_hidden_sitecustomize()
