"""Reading records back trusts nothing in the folder; settings and the child's environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from programs import private_dir

from ctui.engine.observe import (
    BOOT_DIR,
    ENV_DIR,
    RecordFollower,
    child_environment,
    parse_record,
    read_settings,
    write_settings,
)
from ctui.engine.observe.records import MAX_LINE

PASS = {"kind": "pass", "time": 1.0, "pid": 7, "rank": 0, "loader": "train.py:57", "pass": 1,
        "started": 1.0, "seconds": 2.0, "wait_seconds": 0.5, "batches": 3, "samples": 96,
        "samples_per_second": 48.0, "data_wait_fraction": 0.25, "batch_size": 32,
        "num_workers": 2, "complete": True, "ended": "exhausted"}


def line(record: dict) -> bytes:
    return (json.dumps(record) + "\n").encode()


@pytest.fixture
def folder(tmp_path):
    return private_dir(tmp_path / "observe")


def test_importing_the_package_loads_neither_torch_nor_textual():
    code = "import sys, ctui.engine.observe; print(sorted(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout
    assert "'torch'" not in loaded and "'textual'" not in loaded


def test_child_environment_puts_the_hook_first_once_and_keeps_the_rest(tmp_path):
    env = child_environment(tmp_path / "o", {"PYTHONPATH": f"/a{os.pathsep}{BOOT_DIR}",
                                             "HOME": "/h"})
    assert env["PYTHONPATH"] == f"{BOOT_DIR}{os.pathsep}/a"
    assert env[ENV_DIR] == str(tmp_path / "o") and env["HOME"] == "/h"
    assert child_environment(tmp_path, {})["PYTHONPATH"] == str(BOOT_DIR)
    assert (BOOT_DIR / "sitecustomize.py").is_file()
    assert os.listdir(BOOT_DIR) in (["sitecustomize.py"], ["sitecustomize.py", "__pycache__"],
                                    ["__pycache__", "sitecustomize.py"])


def test_settings_accumulate_and_bad_values_are_refused(folder):
    write_settings(folder, num_workers=4)
    write_settings(folder, batch_size=64)
    assert read_settings(folder) == {"num_workers": 4, "batch_size": 64}
    write_settings(folder, num_workers=0, loader="train.py:9")
    assert read_settings(folder) == {"num_workers": 0, "batch_size": 64, "loader": "train.py:9"}
    for bad in ({"num_workers": -1}, {"batch_size": 0}, {"batch_size": True},
                {"num_workers": "4"}):
        with pytest.raises(ValueError, match="whole number"):
            write_settings(folder, **bad)
    assert [name for name in os.listdir(folder)] == ["settings.json"]  # no temporaries left


def test_a_planted_settings_link_is_replaced_not_written_through(folder, tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    (folder / "settings.json").symlink_to(target)
    write_settings(folder, num_workers=1)
    assert target.read_text() == "keep" and not (folder / "settings.json").is_symlink()


def test_records_are_followed_across_polls_and_partial_lines(folder):
    path = folder / "passes-0-7.jsonl"
    data = line(PASS) + line({**PASS, "pass": 2})
    path.write_bytes(data[:-10])
    follower = RecordFollower(folder)
    assert [r["pass"] for r in follower.poll()] == [1]
    assert follower.poll() == []
    with open(path, "ab") as handle:
        handle.write(data[-10:])
    assert [r["pass"] for r in follower.poll()] == [2]
    assert follower.skipped == 0


def test_a_truncated_or_replaced_file_is_read_again_from_its_start(folder):
    path = folder / "passes-0-7.jsonl"
    path.write_bytes(line(PASS) * 3)
    follower = RecordFollower(folder)
    assert len(follower.poll()) == 3
    path.write_bytes(line({**PASS, "pass": 9}))
    assert [r["pass"] for r in follower.poll()] == [9]
    replacement = folder / "new"
    replacement.write_bytes(line({**PASS, "pass": 5}) * 4)
    os.replace(replacement, path)
    assert [r["pass"] for r in follower.poll()] == [5, 5, 5, 5]


GARBAGE = [
    b"not json",
    b"[1, 2]",
    b'{"kind": "pass"}',
    b'{"kind": "mystery", "time": 1, "pid": 1, "rank": 0}',
    json.dumps({**PASS, "samples": True}).encode(),
    json.dumps({**PASS, "samples": -1}).encode(),
    json.dumps({**PASS, "seconds": "2"}).encode(),
    json.dumps({**PASS, "loader": "x" * 5000}).encode(),
    json.dumps({**PASS, "ended": "exploded"}).encode(),
    json.dumps({**PASS, "data_wait_fraction": 3.0}).encode(),
    json.dumps({**PASS, "batch_size": [1]}).encode(),
    json.dumps(PASS).replace('"seconds": 2.0', '"seconds": NaN').encode(),
    json.dumps(PASS).replace('"seconds": 2.0', '"seconds": 1e999').encode(),
    b"[" * 20_000 + b"]" * 20_000,  # deep enough to exhaust the parser's recursion
    b"\xff\xfe garbage bytes",
    json.dumps({"kind": "loader", "time": 1, "pid": 1, "rank": 0, "loader": "a", "dataset": "D",
                "batch_size": 1, "num_workers": 0, "persistent_workers": False,
                "can_change": {"__class__": True}, "why_not": {}}).encode(),
    json.dumps({"kind": "refused", "time": 1, "pid": 1, "rank": 0, "loader": "a",
                "setting": "lr", "value": 1, "reason": "r"}).encode(),
]


def test_crafted_and_garbage_lines_are_skipped_and_good_ones_kept(folder):
    path = folder / "passes-0-7.jsonl"
    path.write_bytes(b"\n".join(GARBAGE) + b"\n" + line({**PASS, "extra": "dropped"})
                     + b"x" * (MAX_LINE * 3) + b"\n" + line(PASS))
    follower = RecordFollower(folder)
    records = follower.poll()
    assert records == [PASS, PASS] and "extra" not in records[0]
    assert follower.skipped == len(GARBAGE) + 1


def test_links_fifos_other_names_and_folders_are_never_read(folder, tmp_path):
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(line(PASS))
    (folder / "passes-0-1.jsonl").symlink_to(outside)
    os.mkfifo(folder / "passes-0-2.jsonl")  # would block a reader that opened it
    (folder / "passes-0-3.jsonl").mkdir()
    (folder / "notes.jsonl").write_bytes(line(PASS))
    assert RecordFollower(folder).poll() == []
    assert RecordFollower(tmp_path / "missing").poll() == []


def test_parse_record_accepts_every_kind_the_hook_writes():
    loader = {"kind": "loader", "time": 1.5, "pid": 3, "rank": 1, "loader": "t.py:1",
              "dataset": "D", "batch_size": None, "num_workers": 0,
              "persistent_workers": False, "can_change": {"num_workers": True,
                                                          "batch_size": False},
              "why_not": {"batch_size": "custom batch sampler"}}
    assert parse_record(line(loader)) == loader
    applied = {"kind": "applied", "time": 1, "pid": 3, "rank": 0, "loader": "t.py:1",
               "setting": "num_workers", "value": 4, "previous": 0, "from_pass": 2}
    assert parse_record(line(applied)) == applied


SCALAR = {"kind": "scalar", "time": 1.0, "pid": 7, "rank": 0, "source": "wandb",
          "tag": "train/loss", "step": 12, "value": -0.5}
STARTED = {"kind": "pass_started", "time": 1.0, "pid": 7, "rank": 0, "loader": "train.py:57",
           "pass": 2, "started": 1.0}


@pytest.mark.parametrize("record", [
    SCALAR, {**SCALAR, "step": None}, {**SCALAR, "value": None}, {**SCALAR, "value": 3},
    {**SCALAR, "value": -1e300}, {**SCALAR, "tag": "x" * 200}, STARTED,
])
def test_scalar_and_pass_started_records_are_read(record):
    assert parse_record(line(record)) == record


@pytest.mark.parametrize("bad", [
    {**SCALAR, "source": "tensorboard"},  # only what the hook records
    {**SCALAR, "source": 1},
    {**SCALAR, "tag": ""},
    {**SCALAR, "tag": "x" * 201},
    {**SCALAR, "tag": ["train/loss"]},
    {**SCALAR, "step": -1},
    {**SCALAR, "step": 1.5},
    {**SCALAR, "step": True},
    {**SCALAR, "step": 1 << 62},
    {**SCALAR, "value": "0.5"},
    {**SCALAR, "value": True},
    {**SCALAR, "value": [0.5]},
    {**SCALAR, "value": {"nested": 1}},
    {key: value for key, value in SCALAR.items() if key != "value"},
    {**STARTED, "pass": -1},
    {**STARTED, "started": -5.0},
    {**STARTED, "loader": None},
])
def test_a_crafted_scalar_or_pass_started_record_is_dropped(bad):
    assert parse_record(line(bad)) is None


@pytest.mark.parametrize("text", [
    json.dumps(SCALAR).replace('"value": -0.5', '"value": NaN'),
    json.dumps(SCALAR).replace('"value": -0.5', '"value": -Infinity'),
    json.dumps(SCALAR).replace('"value": -0.5', '"value": 1e999'),
    json.dumps(SCALAR).replace('"value": -0.5', '"value": ' + "9" * 400),  # no float holds it
    json.dumps(PASS).replace('"seconds": 2.0', '"seconds": ' + "9" * 400),
])
def test_numbers_no_float_holds_are_dropped_without_an_error(text):
    assert parse_record(text.encode()) is None
