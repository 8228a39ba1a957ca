"""`ctui ls` on run folders someone tampered with: each folder is read on its own, only regular
files, size-capped, in bounded time. A bad folder is one line of the listing, never a traceback,
never a hang, and the other runs still list."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ctui.engine.host.protocol import END_FILE, HOST_FILE, LOCK_NAME
from ctui.engine.host.registry import TAIL_SCAN, last_epoch, list_runs, read_json

from helpers import REPO, run_ctui
from helpers import ctui_in_process as ctui

STEP = json.dumps({"type": "step", "epoch": 7, "step": 1234, "global_step": 123456,
                   "loss": 0.123456, "samples_per_second": 12345.6, "lr": 0.9}) + "\n"


def good_run(runs: Path, name: str = "good", epochs: int = 3, done: int = 2) -> Path:
    run_dir = runs / name
    run_dir.mkdir(parents=True, mode=0o700)
    (run_dir / "config.json").write_text(json.dumps({"config": {"epochs": epochs}}))
    (run_dir / "metrics.jsonl").write_text("".join(
        json.dumps({"type": "epoch", "epoch": n}) + "\n" for n in range(1, done + 1)))
    return run_dir


def listing(out: str) -> dict[str, list[str]]:
    """`ctui ls` output -> {run name: the rest of its line, split}; one line per run."""
    header, *lines = out.splitlines()
    assert header.split()[:2] == ["RUN", "STATUS"], out
    rows = {line.split()[0]: line.split()[1:] for line in lines}
    assert len(rows) == len(lines), out
    return rows


def ls(capsys, runs: Path) -> dict[str, list[str]]:
    code, out, err = ctui(capsys, "ls", "--runs-dir", str(runs))
    assert code == 0 and not err, err
    return listing(out)


def ls_child(runs: Path, timeout: float = 30) -> dict[str, list[str]]:
    """The real `ctui ls` in a child process that may use at most 2 GiB: a hang is a timeout,
    reading /dev/zero a MemoryError, both a failure rather than a stuck or starved test run."""
    def limit_memory() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    done = subprocess.run([sys.executable, "-m", "ctui.tui.main", "ls", "--runs-dir", str(runs)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          preexec_fn=limit_memory)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return listing(done.stdout)


# ---------------------------------------------------------------- tampered fields


@pytest.mark.parametrize("text", [
    '{"config": []}', '{"config": "x"}', '{"config": null}', "[]", '"config"', "1e400",
    '{"config": {"epochs": "abc"}}', '{"config": {"epochs": 1e400}}',
    '{"config": {"epochs": -1e400}}', '{"config": {"epochs": NaN}}',
    '{"config": {"epochs": true}}', '{"config": {"epochs": -3}}',
    '{"config": {"epochs": 2.5}}', '{"config": {"epochs": [1]}}',
    '{"config": {"epochs": 100000000000000000000000}}', "[" * 100_000, "\xff\xfe{",
], ids=lambda text: text[:40])
def test_a_tampered_config_json_lists_with_unknown_epochs(capsys, isolated_runs, text):
    good_run(isolated_runs)
    bad = good_run(isolated_runs, "tampered")
    (bad / "config.json").write_bytes(text.encode("latin-1"))
    rows = ls(capsys, isolated_runs)
    assert rows["tampered"][:2] == ["interrupted", "2/?"]
    assert rows["good"][:2] == ["interrupted", "2/3"]


@pytest.mark.parametrize("lines", [
    ['[{"type": "epoch"}]'], ['{"type": "epoch"}'], ['{"type": "epoch", "epoch": "3"}'],
    ['{"type": "epoch", "epoch": 1e400}'], ['{"type":"epoch","epoch":-1e400}'],
    ['{"type": "epoch", "epoch": true}'], ['{"type": "epoch", "epoch": -4}'],
    ['{"type": "epoch", "epoch": [5]}'], ['"type": "epoch"'], ['{"type": "epoch", "epo'],
    ["[" * 10_000 + '"type": "epoch"'], ['{"type": "epoch", "epoch": 9}\xff'],
], ids=lambda lines: lines[0][:40])
def test_tampered_metrics_lines_are_skipped_for_the_newest_good_epoch(capsys, isolated_runs,
                                                                      lines):
    run_dir = good_run(isolated_runs, "tampered", epochs=5, done=2)
    with open(run_dir / "metrics.jsonl", "ab") as handle:
        handle.write("".join(line + "\n" for line in lines).encode("latin-1"))
    assert last_epoch(run_dir) == 2
    assert ls(capsys, isolated_runs)["tampered"][:2] == ["interrupted", "2/5"]


@pytest.mark.parametrize("host", [
    '{"pid": 1e400, "started": 1.0}', '{"pid": -1e400}', '{"pid": "abc"}', '{"pid": -1}',
    '{"pid": 0}', '{"pid": true}', '{"pid": 1099511627776}', '{"pid": [1]}',
    '{"pid": 1, "created": "x"}', '{"pid": 1, "created": 1e400}', '{"pid": 1, "created": NaN}',
    '{"started": 1e400}', '{"started": NaN}', '{"started": "x"}',
], ids=lambda text: text[:40])
def test_a_tampered_host_json_is_never_a_live_pid(capsys, isolated_runs, host):
    run_dir = good_run(isolated_runs, "tampered")
    good_run(isolated_runs)
    (run_dir / HOST_FILE).write_text(host)
    (run_dir / END_FILE).write_text(json.dumps({"state": "finished", "host_started": 2.0}))
    lock = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)  # a lock held, as by a host: the pid is looked at
    try:
        rows = ls(capsys, isolated_runs)
    finally:
        os.close(lock)
    assert rows["tampered"][0] == "interrupted" and rows["tampered"][-1] == "-"
    assert set(rows) == {"tampered", "good"}


@pytest.mark.parametrize("end", [
    '{"state": ["finished"], "host_started": 1.0}', '{"state": {"a": 1}}', '{"state": "live"}',
    '{"state": "unreadable"}', '{"state": 1e400}', "[1, 2]",
], ids=lambda text: text[:40])
def test_a_tampered_end_json_is_ignored(capsys, isolated_runs, end):
    run_dir = good_run(isolated_runs, "tampered", epochs=3, done=3)
    (run_dir / END_FILE).write_text(end)
    assert ls(capsys, isolated_runs)["tampered"][:2] == ["finished", "3/3"]  # judged by epochs


# ---------------------------------------------------------------- files that are not files


@pytest.mark.parametrize("name", ["config.json", "host.json", "end.json", "metrics.jsonl",
                                  "host.lock"])
def test_a_fifo_in_a_run_folder_is_one_unreadable_line_not_a_hang(isolated_runs, name):
    good_run(isolated_runs)
    bad = isolated_runs / "fifo"
    bad.mkdir(parents=True)
    if name != "config.json":
        (bad / "config.json").write_text(json.dumps({"config": {"epochs": 3}}))
    os.mkfifo(bad / name)
    rows = ls_child(isolated_runs)
    assert rows["fifo"] == ["unreadable", f"{name}:", "not", "a", "regular", "file"]
    assert rows["good"][:2] == ["interrupted", "2/3"]
    assert read_json(bad / name) == {}


@pytest.mark.parametrize(("name", "target"), [
    ("config.json", "/dev/zero"), ("host.json", "/dev/zero"), ("end.json", "/dev/urandom"),
    ("metrics.jsonl", "/dev/zero"), ("config.json", "/proc/self/environ")])
def test_a_symlink_in_a_run_folder_is_never_followed(isolated_runs, name, target):
    good_run(isolated_runs)
    bad = good_run(isolated_runs, "linked")
    (bad / name).unlink(missing_ok=True)
    (bad / name).symlink_to(target)
    rows = ls_child(isolated_runs)
    assert rows["linked"] == ["unreadable", f"{name}:", "a", "symbolic", "link"]
    assert rows["good"][:2] == ["interrupted", "2/3"]
    assert read_json(bad / name) == {} and last_epoch(bad) == (0 if name == "metrics.jsonl"
                                                               else 2)


def test_a_run_file_over_the_size_cap_is_not_read(isolated_runs):
    run_dir = good_run(isolated_runs)
    (run_dir / "config.json").write_text(json.dumps({"config": {"epochs": 3},
                                                     "pad": "x" * (2 << 20)}))
    assert read_json(run_dir / "config.json") == {}
    assert [info.epochs for info in list_runs(isolated_runs)] == [0]


def test_only_real_folders_are_runs(capsys, isolated_runs, tmp_path):
    good_run(isolated_runs)
    elsewhere = good_run(tmp_path / "elsewhere", "outside")
    (isolated_runs / "link-to-a-run").symlink_to(elsewhere)
    os.mkfifo(isolated_runs / "a-fifo")
    (isolated_runs / "a-file").write_text("{}")
    (isolated_runs / "not-a-run").mkdir()
    assert set(ls(capsys, isolated_runs)) == {"good"}


def test_odd_folder_names_are_one_escaped_line_each(isolated_runs):
    good_run(isolated_runs)
    raw = os.fsencode(isolated_runs)
    for name in (b"two\nlines", b"bad-\xff-utf8", b"esc-\x1b]0;owned\x07"):
        os.makedirs(raw + b"/" + name)
        with open(raw + b"/" + name + b"/config.json", "w") as handle:
            handle.write("{}")
    done = run_ctui("ls", "--runs-dir", str(isolated_runs), timeout=30)
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert set(listing(done.stdout)) == {"good", "two\\nlines", "bad-\\udcff-utf8",
                                         "esc-\\x1b]0;owned\\x07"}


# ---------------------------------------------------------------- another user's private run


def test_another_users_private_run_is_one_unreadable_line(other_user):
    """Root's private run seen by another user, who also has a run of their own there. The
    child imports ctui as root (the interpreter may live where only root can read), then drops
    to that user before listing, as `runuser` would: here Python lives under /root (0700)."""
    uid, gid = other_user.pw_uid, other_user.pw_gid
    shared = Path(tempfile.mkdtemp(prefix="ctui-shared-runs-"))
    try:
        os.chmod(shared, 0o755)
        theirs = good_run(shared, "theirs")
        for path in (theirs, *theirs.iterdir()):
            os.chown(path, uid, gid)
        good_run(shared, "roots-private")  # mode 0700, root's
        code = ("import os, sys; from ctui.engine.cli.main import main; "
                f"os.setgroups([]); os.setgid({gid}); os.setuid({uid}); "
                f"sys.exit(main(['ls', '--runs-dir', {str(shared)!r}]))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=30, cwd=REPO)
    finally:
        shutil.rmtree(shared)
    assert done.returncode == 0 and not done.stderr, done.stderr
    rows = listing(done.stdout)
    assert rows["roots-private"] == ["unreadable", "config.json:", "permission", "denied"]
    assert rows["theirs"][:2] == ["interrupted", "2/3"]


# ---------------------------------------------------------------- a huge metrics file


def write_big_metrics(run_dir: Path, megabytes: int = 40, head: str = "", tail: str = "") -> None:
    """`head`, then megabytes of step records of epoch 7, then `tail`: written in one go."""
    steps = STEP * (megabytes * 2**20 // len(STEP))
    (run_dir / "metrics.jsonl").write_text(head + steps + tail)


@pytest.mark.timeout(30)  # a hang guard, not a benchmark: tests/bench/bench_ls.py times it
def test_40_megabytes_of_metrics_list_with_the_right_epoch(capsys, isolated_runs):
    ended = good_run(isolated_runs, "epoch-at-the-end", epochs=9)
    write_big_metrics(ended, tail=json.dumps({"type": "epoch", "epoch": 7}) + "\n")
    early = good_run(isolated_runs, "epoch-early", epochs=9)
    write_big_metrics(early, head=json.dumps({"type": "epoch", "epoch": 6}) + "\n")
    torn = good_run(isolated_runs, "torn-tail", epochs=9)
    write_big_metrics(torn, tail=json.dumps({"type": "epoch", "epoch": 7})[:20])
    assert (ended / "metrics.jsonl").stat().st_size > 40_000_000
    assert [last_epoch(run) for run in (ended, early, torn)] == [7, 6, 6]
    rows = ls(capsys, isolated_runs)
    assert [rows[name][1] for name in ("epoch-at-the-end", "epoch-early", "torn-tail")] == [
        "7/9", "6/9", "6/9"]


@pytest.mark.timeout(30)
def test_one_huge_line_is_skipped_not_carried(isolated_runs):
    run_dir = good_run(isolated_runs)
    with open(run_dir / "metrics.jsonl", "a") as handle:  # after epoch 2: 1 MB with no newline
        handle.write('{"type": "step", "epoch": 5, "pad": "' + "x" * 2**20 + '"}\n')
    assert last_epoch(run_dir) == 2
    (run_dir / "metrics.jsonl").write_text('{"type": "epoch", "epoch": 4}\n'
                                           + "y" * (TAIL_SCAN + 10))
    assert last_epoch(run_dir) == 0  # nothing whole in the part looked at: unknown


@pytest.mark.timeout(30)
def test_garbage_that_looks_like_records_costs_a_bounded_amount(isolated_runs):
    run_dir = good_run(isolated_runs)
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.write('{"type": "epoch", "epoch": "no"}\n' * 60_000)  # 2 MB, none usable
    assert last_epoch(run_dir) == 0  # gave up after a bounded number of parses: unknown
