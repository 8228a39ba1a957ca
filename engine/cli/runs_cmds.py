"""Shell control of runs served by a run host: ls, stop, pause, resume, checkpoint, set, logs,
and the `--detach` start of `ctui train`. Scriptable: one line per answer, errors one line on
stderr, exit 2 for usage. Nothing here imports torch or Textual.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import ConfigError, RunConfig, default_runs_dir
from ..events import (
    Answer,
    CheckpointNow,
    CheckpointSaved,
    Command,
    EpochEnded,
    Event,
    LogLine,
    Pause,
    Resume,
    State,
    StateChanged,
    Stop,
)
from ..host import (
    HostError,
    RunClient,
    RunInfo,
    find_live_run,
    list_runs,
    resolve_run,
    start_host,
)
from ..host.protocol import END_FILE
from ..host.registry import UNREADABLE, read_json, run_info, run_kind, run_status
from ..live_settings import LIVE_SETTINGS, LiveSetting, suggest
from ..runs import METRICS_FILE, recorded_state
from ..safefs import open_regular
from ..sinks.console import epoch_line
from .errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Parser, fail
from .options import wait_seconds

if TYPE_CHECKING:
    from ..checkpoint import ResumePoint

MAX_FOLLOW_READ = 16 * 2**20  # per poll, so a huge or growing file never fills memory
MAX_REASON = 120  # characters of a failed run's error shown by `ctui ls`

def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ls, stop, pause, resume, checkpoint, set and logs on the `ctui` parser."""
    ls = commands.add_parser("ls", help="list runs: live, paused, finished, stopped, failed or "
                             "interrupted",
                             description="List the runs in the runs folder with their state, "
                             "epoch and last checkpoint.")
    _runs_dir_flag(ls)
    ls.set_defaults(handler=cmd_ls)

    for name, text in (("stop", "save a checkpoint and stop a live run"),
                       ("pause", "pause a live run at the next step"),
                       ("resume", "continue a paused run"),
                       ("checkpoint", "save a checkpoint of a live run now")):
        parser = commands.add_parser(name, help=text, description=text[0].upper() + text[1:]
                                     + ". RUN defaults to the only live run.")
        _run_argument(parser)
        parser.add_argument("--timeout", type=wait_seconds, default=None, metavar="S",
                            help="seconds to wait for the run to answer (default: 120 for stop, "
                            "30 otherwise)")
        if name == "stop":
            parser.add_argument("--no-wait", action="store_true",
                                help="return once the request is sent")
        parser.set_defaults(handler=ACTIONS[name])

    settings = commands.add_parser(
        "set", help="change batch_size or num_workers of a live run",
        description="Change settings of a live run from its next step, e.g. "
        "`ctui set batch_size=128 num_workers=8`. RUN defaults to the only live run.")
    settings.add_argument("items", nargs="+", metavar="[RUN] KEY=VALUE",
                          help="the run (optional), then batch_size=N and/or num_workers=N")
    _runs_dir_flag(settings)
    settings.add_argument("--timeout", type=wait_seconds, default=30.0, metavar="S",
                          help="seconds to wait for the run to confirm (default: 30)")
    settings.set_defaults(handler=cmd_set)

    logs = commands.add_parser("logs", help="print a run's per-epoch lines (-f: follow)",
                               description="Print a run's per-epoch lines. RUN defaults to the "
                               "only live run, else the newest run.")
    _run_argument(logs)
    logs.add_argument("-f", "--follow", action="store_true",
                      help="keep printing new epochs until the run ends")
    logs.set_defaults(handler=cmd_logs)


def run_command(args: argparse.Namespace) -> int:
    """Run a subcommand registered here; host errors become one line with their exit code."""
    try:
        return args.handler(args)
    except HostError as error:
        fail(str(error), error.exit_code)
    except KeyboardInterrupt:
        return 130


# ---------------------------------------------------------------- ctui train --detach


def run_detached(config: RunConfig, resume: ResumePoint | None) -> int:
    """`ctui train --detach`: start the run in a host, say how to watch it, return at once.
    The host loads the checkpoint again itself: it is handed the file build_config found."""
    where = None
    if resume is not None:
        for note in resume.notes:
            print(note)
        where = str(resume.path) if resume.path is not None else "latest"
    try:
        run_dir = start_host(config, resume=where)
    except HostError as error:
        fail(str(error), error.exit_code)
    ref = _ref_for(run_dir, config.runs_dir)
    _, pid = run_status(run_dir)
    print(f"{'resumed' if where else 'started'} run {run_dir.name} in the background "
          f"(host pid {pid}): {run_dir}")
    print(f"  watch it:   ctui logs {ref} -f    or    ctui attach {ref}")
    print(f"  control it: ctui pause|resume|checkpoint|stop {ref}    "
          f"ctui set {ref} batch_size=N num_workers=N")
    return EXIT_OK


# ---------------------------------------------------------------- ls


def cmd_ls(args: argparse.Namespace) -> int:
    """One line per run; a folder that cannot be read is one line too, saying why."""
    runs = list_runs(args.runs_dir)
    if not runs:
        if os.path.isdir(args.runs_dir) and not os.access(args.runs_dir, os.R_OK | os.X_OK):
            fail(f"cannot read the runs folder {args.runs_dir}: permission denied", EXIT_FAILED)
        print(f"no runs in {args.runs_dir}; start one with `ctui train --detach`")
        return EXIT_OK
    header = ("RUN", "STATUS", "EPOCH", "BEST", "LAST CHECKPOINT", "SAVED", "PID")
    rows = [header, *(_ls_row(info) for info in runs)]
    full = [row for row in rows if len(row) >= len(header)]  # a failed run's error follows
    widths = [max(len(row[column]) for row in (rows if column < 2 else full))
              for column in range(len(header))]
    for row in rows:  # an unreadable run's reason runs on past the EPOCH column
        print("  ".join(cell.ljust(width)
                        for cell, width in zip(row, [*widths, 0], strict=False)).rstrip())
    return EXIT_OK


def _ls_row(info: RunInfo) -> tuple[str, ...]:
    name = _printable(info.name)
    if info.status == UNREADABLE:
        return name, info.status, _printable(info.reason)
    status = info.status
    if status == "live" and recorded_state(info.run_dir, info.pid) == State.PAUSED:
        status = State.PAUSED  # live, but not training until resumed
    if info.kind == "program" and (info.exit_code is not None or info.signal):
        status += f" ({info.signal or f'exit {info.exit_code}'})"
    best = f"{_printable(info.best[0])} {info.best[1]:.4g} @{info.best[2]}" if info.best \
        else "-"
    row = (name, status, f"{info.epoch}/{info.epochs or '?'}", best,
           _printable(info.last_checkpoint.name) if info.last_checkpoint else "-",
           _ago(info.checkpoint_age), str(info.pid or "-"))
    if info.status == State.FAILED:  # what failed, after the columns
        reason = read_json(info.run_dir / END_FILE).get("reason")
        if isinstance(reason, str) and reason:
            row += (_printable(reason[:MAX_REASON]),)
    return row


def _printable(text: str) -> str:
    """A folder name as one safe line: control characters (a newline, a terminal escape) and
    undecodable bytes are shown escaped, never sent to the terminal as they are."""
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


# ---------------------------------------------------------------- stop, pause, resume, checkpoint


def cmd_stop(args: argparse.Namespace) -> int:
    info = _live_run(args)
    if info.kind == "program":
        return _stop_program(args, info)
    with RunClient.connect(info.run_dir) as client:
        client.history()
        client.send(Stop(reason="stop requested with `ctui stop`"))
        if args.no_wait:
            print(f"stop requested: {info.name} saves a checkpoint at its next step, then stops")
            return EXIT_OK
        print(f"stopping {info.name}: saving a checkpoint at the next step...", flush=True)
        end = client.wait_for(_ended, _timeout(args, 120.0))
    if end is None:
        return _no_answer(info, "stop", "it stops at its next step")
    print(f"{end.state}: {end.reason}")
    if end.state == State.STOPPED:
        print(f"continue with: ctui train --detach --resume --run-dir {info.run_dir}")
    return EXIT_OK if end.state in (State.STOPPED, State.FINISHED) else EXIT_FAILED


def _stop_program(args: argparse.Namespace, info: RunInfo) -> int:
    """A program run: its supervisor signals the program's processes, escalating to SIGKILL
    after the run's grace; wait for that, and a little more."""
    from ..program import read_program_config

    try:
        grace = read_program_config(info.run_dir).grace
    except ValueError:
        grace = 30.0
    with RunClient.connect(info.run_dir) as client:
        client.history()
        client.send(Stop(reason="stop requested with `ctui stop`"))
        answer = client.wait_for(lambda e: isinstance(e, Answer) and e.command == "stop", 10.0)
        if answer is not None:
            print(answer.message if answer.accepted else f"refused: {answer.message}",
                  flush=True)
        if args.no_wait:
            return EXIT_OK
        end = client.wait_for(_ended, _timeout(args, grace + 30.0))
    if end is None:
        return _no_answer(info, "stop", f"it has {grace:g}s to exit before SIGKILL")
    ended = run_info(info.run_dir)
    how = f" ({ended.signal or f'exit code {ended.exit_code}'})" if (
        ended.signal or ended.exit_code is not None) else ""
    print(f"{end.state}{how}: {end.reason}")
    if end.state != State.FINISHED:
        print(f"run it again with: ctui run --resume {info.run_dir}")
    return EXIT_OK if end.state in (State.STOPPED, State.FINISHED) else EXIT_FAILED


def cmd_pause(args: argparse.Namespace) -> int:
    return _change_state(args, Pause(), State.PAUSED, "paused", "ctui resume")


def cmd_resume(args: argparse.Namespace) -> int:
    return _change_state(args, Resume(), State.RUNNING, "running", "ctui pause")


def _change_state(args: argparse.Namespace, command: Command, target: str, word: str,
                  undo: str) -> int:
    info = _live_run(args)
    with RunClient.connect(info.run_dir) as client:
        state = _current_state(client.history())
        if state == target:
            print(f"{info.name} is already {word}")
            return EXIT_OK
        client.send(command)
        answer = client.wait_for(
            lambda e: isinstance(e, StateChanged) and (e.state == target or e.state in State.ENDED),
            _timeout(args, 30.0))
    if answer is None:
        return _no_answer(info, command.kind, "it applies commands between steps")
    if answer.state != target:
        print(f"{info.name} ended meanwhile: {answer.state} ({answer.reason})")
        return EXIT_FAILED
    print(f"{info.name} is {word}; undo with: {undo} {_ref(args, info)}")
    return EXIT_OK


def cmd_checkpoint(args: argparse.Namespace) -> int:
    info = _live_run(args)
    with RunClient.connect(info.run_dir) as client:
        client.history()
        client.send(CheckpointNow())
        answer = client.wait_for(
            lambda e: isinstance(e, CheckpointSaved) or _ended(e) or (
                isinstance(e, LogLine) and e.level == "error" and "checkpoint" in e.message),
            _timeout(args, 30.0))
    if answer is None:
        return _no_answer(info, "checkpoint", "it saves at its next step")
    if isinstance(answer, CheckpointSaved):
        print(f"saved {answer.path} (epoch {answer.epoch}, step {answer.step})")
        return EXIT_OK
    fail(getattr(answer, "message", None) or f"{info.name} ended before saving: {answer.state}",
         EXIT_FAILED)


ACTIONS = {"stop": cmd_stop, "pause": cmd_pause, "resume": cmd_resume,
           "checkpoint": cmd_checkpoint}


# ---------------------------------------------------------------- set


def cmd_set(args: argparse.Namespace) -> int:
    run, changes = parse_set_items(args.items)
    args.run = run
    info = _live_run(args)
    refused = False
    with RunClient.connect(info.run_dir) as client:
        client.history()
        for setting, value in changes:
            command = setting.command_for(value)
            client.send(command)
            answer = client.wait_for(
                lambda e, kind=command.kind: isinstance(e, Answer) and e.command == kind,
                args.timeout)
            if answer is None:
                print(f"sent {setting.name}={value}; {info.name} applies it at its next step")
            elif not answer.accepted:
                print(f"ctui: error: {answer.message}", file=sys.stderr)
                refused = True
            else:
                print(answer.message)
    return EXIT_USAGE if refused else EXIT_OK


def parse_set_items(items: list[str]) -> tuple[str | None, list[tuple[LiveSetting, int]]]:
    """[RUN] KEY=VALUE... -> (run, [(setting, value)]), checked against the live settings
    table (the run checks the training set's bound itself)."""
    run = None
    if items and "=" not in items[0]:
        run, items = items[0], items[1:]
    if not items:
        fail("say what to change, e.g. `ctui set batch_size=128 num_workers=8`", EXIT_USAGE)
    changes = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            fail(f"{item!r} is not KEY=VALUE; e.g. batch_size=128", EXIT_USAGE)
        setting = LIVE_SETTINGS.get(key)
        if setting is None:
            fail(f"{key!r} is not a setting a live run can change{suggest(key)}; use "
                 + " or ".join(f"{name}=N" for name in LIVE_SETTINGS), EXIT_USAGE)
        try:
            changes.append((setting, setting.parse(text)))
        except ConfigError as error:
            fail(f"{key}={text!r} is not allowed; {str(error).split(': ', 1)[1]}", EXIT_USAGE)
    return run, changes


# ---------------------------------------------------------------- logs


def cmd_logs(args: argparse.Namespace) -> int:
    run_dir = _logs_run(args)
    if run_kind(run_dir) == "program":
        return _program_logs(run_dir, args.follow)
    follower = MetricsFollower(run_dir / METRICS_FILE)
    last_printed = 0

    def show_new() -> None:
        nonlocal last_printed
        for record in follower.read():
            if record.get("type") == "epoch" and int(record.get("epoch", 0)) > last_printed:
                print(epoch_line(EpochEnded.from_dict(record)), flush=True)
                last_printed = int(record["epoch"])

    show_new()
    if not args.follow:
        if not last_printed:
            print(f"{run_dir.name}: no epoch has finished yet")
        return EXIT_OK
    hosted = bool(run_status(run_dir)[0])
    while True:
        # A hosted run is followed until its host ends; one without (headless, in a notebook)
        # until its last epoch, or Ctrl-C.
        ended = run_status(run_dir)[0] != "live" if hosted else \
            run_info(run_dir).status == "finished"
        show_new()
        if ended:
            break
        time.sleep(0.5)
    end = read_json(run_dir / END_FILE)
    if end.get("state"):
        print(f"{end['state']}: {end.get('reason', '')}".rstrip(": "))
    elif hosted:
        print(f"{run_dir.name}: the host went away without recording an end (interrupted)")
    else:
        print("finished")
    return EXIT_OK


def _program_logs(run_dir: Path, follow: bool) -> int:
    """A program run's output.log (plain text: redraws collapsed, escapes removed), and with
    -f what it adds until the run's host ends."""
    from ..program.output_log import OUTPUT_LOG

    path = run_dir / OUTPUT_LOG
    position = 0
    out = sys.stdout.buffer

    def show_new() -> None:
        nonlocal position
        try:
            fd = open_regular(path)
        except OSError:
            return
        try:
            while chunk := os.pread(fd, 1 << 20, position):
                out.write(chunk)
                position += len(chunk)
        finally:
            os.close(fd)
        out.flush()

    show_new()
    if not follow:
        if position == 0:
            print(f"{run_dir.name}: no output yet")
        return EXIT_OK
    while run_status(run_dir)[0] == "live":
        time.sleep(0.3)
        show_new()
    show_new()
    info = run_info(run_dir)
    end = read_json(run_dir / END_FILE)
    how = f" ({info.signal or f'exit code {info.exit_code}'})" if (
        info.signal or info.exit_code is not None) else ""
    print(f"{info.status}{how}: {end.get('reason', '')}".rstrip(": "))
    return EXIT_OK


def _logs_run(args: argparse.Namespace) -> Path:
    if args.run:
        return resolve_run(args.runs_dir, args.run)
    runs = list_runs(args.runs_dir)
    if not any(info.status == "live" for info in runs) and runs:
        return runs[-1].run_dir  # the newest
    return find_live_run(args.runs_dir).run_dir


class MetricsFollower:
    """New whole records of metrics.jsonl since the last read; survives the file being
    rewritten when a run resumes (a new file: read it again from the start)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._position = 0
        self._identity: tuple[int, int] | None = None
        self._partial = b""

    def read(self) -> list[dict[str, Any]]:
        try:
            stat = os.stat(self.path)
        except OSError:
            return []
        identity = (stat.st_dev, stat.st_ino)
        if identity != self._identity or stat.st_size < self._position:
            self._identity, self._position, self._partial = identity, 0, b""
        try:  # a regular file only: never a link or a FIFO planted in its place
            handle = os.fdopen(open_regular(self.path), "rb")
        except OSError:
            return []
        with handle:
            handle.seek(self._position)
            data = self._partial + handle.read(MAX_FOLLOW_READ)
            self._position = handle.tell()
        *lines, self._partial = data.split(b"\n")
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records


# ---------------------------------------------------------------- helpers


def _runs_dir_flag(parser: Parser) -> None:
    parser.add_argument("--runs-dir", default=default_runs_dir(), metavar="DIR",
                        help="folder holding the runs (default: $CTUI_RUNS, else ./runs)")


def _run_argument(parser: Parser) -> None:
    parser.add_argument("run", nargs="?", metavar="RUN",
                        help="the run's name in the runs folder, or its folder")
    _runs_dir_flag(parser)


def _live_run(args: argparse.Namespace) -> RunInfo:
    return find_live_run(args.runs_dir, args.run)


def _ref(args: argparse.Namespace, info: RunInfo) -> str:
    return _ref_for(info.run_dir, args.runs_dir)


def _ref_for(run_dir: Path, runs_dir: str) -> str:
    """How to name the run in a command: its name when the default runs folder holds it."""
    default = Path(default_runs_dir()).resolve()
    if Path(runs_dir).resolve() == default and run_dir.parent.resolve() == default:
        return run_dir.name
    return str(run_dir)


def _current_state(history: list[Event]) -> str:
    states = [event.state for event in history if isinstance(event, StateChanged)]
    return states[-1] if states else State.IDLE


def _ended(event: Event) -> bool:
    return isinstance(event, StateChanged) and event.state in State.ENDED


def _timeout(args: argparse.Namespace, default: float) -> float:
    return args.timeout if args.timeout is not None else default


def _no_answer(info: RunInfo, what: str, why: str) -> int:
    fail(f"{what} was sent to {info.name} but it did not answer in time ({why}); "
         f"`ctui logs {info.run_dir}` shows what it is doing", EXIT_FAILED)


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"
