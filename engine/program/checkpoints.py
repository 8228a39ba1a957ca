"""Which checkpoint a restarted program resumes from: the newest file matching the run's
`--checkpoint-glob` (relative to the program's folder) that loads with
`torch.load(weights_only=True)`. A newer file that does not load (truncated by the crash that
caused the restart, or holding code) is skipped with a warning.

torch is loaded only in a short-lived child process, so the run host stays torch-free and a
malicious or huge file cannot hurt it: weights_only refuses code, and the child's memory goes
with it.
"""

from __future__ import annotations

import glob
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

MAX_CANDIDATES = 20  # newest matches probed; older ones are not resumed from anyway
PROBE_TIMEOUT = 600.0  # seconds for the probing child: a cold import of torch plus big files

# In the child: each path newest first, until one loads; a JSON line per path tried.
_PROBE = r"""
import json, sys
try:
    import torch
except Exception as error:
    print(json.dumps({"error": "torch cannot be imported here: %s" % error}), flush=True)
    sys.exit(0)

def load(path):
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:
        if "mmap" not in str(error):
            raise
        torch.load(path, map_location="cpu", weights_only=True)

for path in sys.argv[1:]:
    try:
        load(path)
    except Exception as error:
        text = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        print(json.dumps({"path": path, "ok": False, "error": text}), flush=True)
        continue
    print(json.dumps({"path": path, "ok": True}), flush=True)
    break
"""


def matching_files(cwd: str | os.PathLike[str], pattern: str) -> list[Path]:
    """Regular files matching pattern (relative to cwd; `**` spans folders), newest first."""
    found = []
    for name in glob.iglob(pattern, root_dir=os.fspath(cwd), recursive=True):
        path = Path(cwd) / name
        try:
            info = os.stat(path)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            found.append((info.st_mtime_ns, str(path), path))
        if len(found) > 10000:  # a pattern matching a whole dataset: stop looking
            break
    return [path for _, _, path in sorted(found, reverse=True)]


def newest_loadable(cwd: str | os.PathLike[str], pattern: str,
                    timeout: float = PROBE_TIMEOUT) -> tuple[Path | None, list[str]]:
    """(the checkpoint to resume from or None, warnings for people)."""
    candidates = matching_files(cwd, pattern)[:MAX_CANDIDATES]
    if not candidates:
        return None, [f"no file matches --checkpoint-glob {pattern!r} in {cwd}"]
    try:
        result = subprocess.run([sys.executable, "-I", "-c", _PROBE, *map(str, candidates)],
                                capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, [f"could not check the checkpoints: {error}"]
    warnings = []
    for line in result.stdout.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if record.get("error") and "path" not in record:
            return None, [f"could not check the checkpoints: {record['error']}"]
        if record.get("ok"):
            return Path(record["path"]), warnings
        warnings.append(f"skipped {record.get('path')}: it does not load with "
                        f"torch.load(weights_only=True) ({record.get('error')})")
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1][:200]
        warnings.append(f"checking the checkpoints failed (exit code {result.returncode}: "
                        f"{last})")
    else:
        warnings.append(f"none of the {len(candidates)} newest files matching {pattern!r} "
                        "loads")
    return None, warnings
