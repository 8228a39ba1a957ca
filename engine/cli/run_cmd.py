"""`ctui run [options] -- CMD ARGS...`: run any program as a ctui run, in a run host of its
own, and `ctui run --resume RUN` to run an interrupted or failed one again.

With --detach it returns once the host serves (or the program has failed at once). Otherwise
the panel opens on the run (tui/main.py routes `ctui run` there through `start_run`); where no
panel can open (no terminal), the program's output is followed here until it ends, and Ctrl-C
detaches without stopping it. Nothing here imports torch or Textual.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

from ..config import ConfigError, default_runs_dir
from ..events import (
    ProgramExited,
    ProgramOutput,
    ProgramStarted,
    State,
    StateChanged,
    TypeInput,
)
from ..host import HostError, RunClient, resolve_run
from ..host.protocol import END_FILE
from ..host.registry import read_json, run_info
from ..program import ProgramSpec, resume_program, start_program
from ..program.spec import DEFAULT_GRACE, DEFAULT_RESUME_ARGS, STOP_SIGNALS, parse_seconds
from .errors import EXIT_FAILED, EXIT_OK, EXIT_STOPPED, EXIT_USAGE, Parser, fail

QUICK_LOOK = 3.0  # seconds to wait, after the start, for a program that fails at once


def add_run_command(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser(
        "run", help="run your own script as a ctui run: ctui run -- python train.py",
        description="Run a program (any command) in a run host of its own, in a terminal ctui "
        "owns: listed by `ctui ls`, followed by `ctui logs -f`, stopped by `ctui stop`, opened "
        "with `ctui attach`. Closing the panel or the terminal never stops it. Example: "
        "ctui run --restart-on-failure 3 --checkpoint-glob 'ckpt/*.pt' -- python train.py",
        epilog="Exit codes: 0 started (--detach) or finished; 2 bad usage; otherwise the "
        "program's own exit code (128+N when signal N ended it), 3 when stopped.")
    run.add_argument("--name", metavar="NAME", default=None,
                     help="the run's folder name in the runs folder (default: the script's "
                     "name, the time and a random suffix)")
    run.add_argument("--detach", action="store_true",
                     help="start it in the background and return at once")
    run.add_argument("--runs-dir", default=None, metavar="DIR",
                     help="folder holding the runs (default: $CTUI_RUNS, else ./runs)")
    run.add_argument("--cwd", default=None, metavar="DIR",
                     help="the program's working folder (default: this one)")
    run.add_argument("--grace", default=None, metavar="S",
                     help=f"seconds from the stop signal to SIGKILL (SIGTERM at half of it; "
                     f"default {DEFAULT_GRACE:g})")
    run.add_argument("--stop-signal", default=None, metavar="SIG",
                     help="the first signal a stop sends: " + ", ".join(STOP_SIGNALS)
                     + " (default SIGINT, as Ctrl-C)")
    run.add_argument("--time-limit", default=None, metavar="DURATION",
                     help="stop the program (within its grace) by this time after the start, "
                     "e.g. 11h50m, 90m or 3600s")
    run.add_argument("--restart-on-failure", default=None, metavar="N",
                     help="restart a program that exits non-zero or is killed, up to N times")
    run.add_argument("--checkpoint-glob", default=None, metavar="GLOB",
                     help="where the program saves checkpoints, relative to --cwd (e.g. "
                     "'checkpoints/*.pt'); a restart resumes from the newest that loads")
    run.add_argument("--resume-args", default=None, metavar="TEMPLATE",
                     help=f"added to the command on a restart with a checkpoint (default "
                     f"{DEFAULT_RESUME_ARGS!r})")
    run.add_argument("--resume", default=None, metavar="RUN",
                     help="run an interrupted or failed program run again (its recorded "
                     "command, from its newest loadable checkpoint)")
    run.add_argument("program", nargs=argparse.REMAINDER, metavar="-- CMD ARGS",
                     help="the program and its arguments, after --")
    run.set_defaults(handler=cmd_run)


def build_spec(args: argparse.Namespace) -> ProgramSpec:
    """The typed options as a checked ProgramSpec; exits 2 with one line when one is wrong."""
    command = list(args.program)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        fail("say what to run after `--`, e.g. `ctui run -- python train.py --epochs 4`",
             EXIT_USAGE)
    cwd = os.path.abspath(args.cwd or os.getcwd())
    if not os.path.isdir(cwd):
        fail(f"--cwd {args.cwd}: not a folder", EXIT_USAGE)
    settings: dict = {"argv": tuple(command), "cwd": cwd}
    try:
        if args.grace is not None:
            settings["grace"] = parse_seconds("grace", args.grace)
        if args.time_limit is not None:
            settings["time_limit"] = parse_seconds("time_limit", args.time_limit)
        if args.stop_signal is not None:
            name = args.stop_signal.upper()
            settings["stop_signal"] = name if name.startswith("SIG") else f"SIG{name}"
        if args.restart_on_failure is not None:
            try:
                settings["restart_on_failure"] = int(args.restart_on_failure)
            except ValueError:
                raise ConfigError("restart_on_failure", f"{args.restart_on_failure!r} is not a "
                                  "whole number") from None
        if args.checkpoint_glob is not None:
            settings["checkpoint_glob"] = args.checkpoint_glob
        if args.resume_args is not None:
            if args.checkpoint_glob is None:
                raise ConfigError("resume_args", "needs --checkpoint-glob: it says which file "
                                  "{checkpoint} is")
            settings["resume_args"] = args.resume_args
        if sys.stdout.isatty():
            size = os.get_terminal_size()
            settings["columns"] = min(max(size.columns, 10), 1000)
            settings["rows"] = min(max(size.lines, 2), 1000)
        return ProgramSpec(**settings)
    except ConfigError as error:
        fail(str(error), EXIT_USAGE)
    except OSError:
        return ProgramSpec(**{k: v for k, v in settings.items() if k not in ("columns", "rows")})


def start_run(args: argparse.Namespace) -> Path:
    """Start (or resume) the run the options describe; its run folder, once its host serves.
    Exits 2 with one line for bad usage; HostError for a host that cannot start. For the panel,
    which opens on the folder returned."""
    runs_dir = args.runs_dir or default_runs_dir()
    if args.resume is not None:
        typed = [flag for flag, value in (
            ("a command", args.program and args.program != ["--"]), ("--name", args.name),
            ("--cwd", args.cwd), ("--grace", args.grace), ("--stop-signal", args.stop_signal),
            ("--time-limit", args.time_limit), ("--checkpoint-glob", args.checkpoint_glob),
            ("--restart-on-failure", args.restart_on_failure),
            ("--resume-args", args.resume_args)) if value]
        if typed:
            fail(f"--resume RUN runs the command the run recorded: leave out "
                 f"{', '.join(typed)}", EXIT_USAGE)
        run_dir, spec = resume_program(resolve_run(runs_dir, args.resume))
        glob_note = f" (plus the resume arguments for the newest checkpoint matching " \
                    f"{spec.checkpoint_glob!r} that loads)" if spec.checkpoint_glob else ""
        print(f"resuming run {run_dir.name}: {spec.title}{glob_note}", flush=True)
        return run_dir
    spec = build_spec(args)
    return start_program(spec, runs_dir, args.name)


def cmd_run(args: argparse.Namespace) -> int:
    try:
        run_dir = start_run(args)
    except HostError as error:
        fail(str(error), error.exit_code)
    ref = run_dir.name if Path(args.runs_dir or default_runs_dir()).resolve() == \
        run_dir.parent.resolve() else str(run_dir)
    if args.detach:
        failed = _failed_at_once(run_dir)
        if failed is not None:
            print(f"run {ref}: {failed.message}", file=sys.stderr)
            return _exit_status(failed) or EXIT_FAILED
        print(f"started run {ref} in the background: {run_dir}")
        print(f"  watch it:   ctui attach {ref}    or    ctui logs {ref} -f")
        print(f"  control it: ctui stop {ref}    ctui set {ref} num_workers=N")
        return EXIT_OK
    return follow(run_dir, ref)


def _failed_at_once(run_dir: Path) -> ProgramExited | None:
    """The first attempt's end, when it came within QUICK_LOOK seconds and no restart follows."""
    try:
        with RunClient.connect(run_dir) as client:  # (a resume probes checkpoints first)
            event = client.wait_for(lambda e: isinstance(e, (ProgramStarted, ProgramExited)),
                                    60.0)
            if isinstance(event, ProgramStarted):
                event = client.wait_for(lambda e: isinstance(e, ProgramExited), QUICK_LOOK)
    except HostError:  # the host has ended already: its end record says how
        info = run_info(run_dir)
        if info.status != "failed":
            return None
        reason = read_json(run_dir / END_FILE).get("reason")
        return ProgramExited(exit_code=info.exit_code, signal=info.signal,
                             message=str(reason or "failed")[:300])
    if isinstance(event, ProgramExited) and not event.restarting and event.exit_code != 0:
        return event
    return None


def follow(run_dir: Path, ref: str) -> int:
    """Print the program's output here until it ends (a terminal renders its escapes as they
    are; a pipe gets them too). Ctrl-C leaves it running."""
    out = sys.stdout
    last_exit: ProgramExited | None = None
    try:
        with RunClient.connect(run_dir) as client:
            threading.Thread(target=_forward_lines, args=(client,), daemon=True).start()
            for event in client.events():
                if isinstance(event, ProgramOutput):
                    out.write(event.data)
                    out.flush()
                elif isinstance(event, ProgramExited):
                    last_exit = event
                    print(f"\r\n[ctui] attempt {event.attempt}: {event.message}", flush=True)
                elif isinstance(event, StateChanged) and event.state in State.ENDED:
                    print(f"[ctui] run {ref} {event.state}: {event.reason}", flush=True)
                    if event.state == State.STOPPED:
                        return EXIT_STOPPED
                    if event.state == State.FINISHED:
                        return EXIT_OK
                    return (_exit_status(last_exit) if last_exit else None) or EXIT_FAILED
    except KeyboardInterrupt:
        print(f"\n[ctui] detached; {ref} runs on: ctui attach {ref}, ctui logs {ref} -f, "
              f"ctui stop {ref}", flush=True)
        return EXIT_OK
    print(f"[ctui] the host of {ref} went away; `ctui ls` shows how it ended", flush=True)
    return EXIT_FAILED


def _forward_lines(client: RunClient) -> None:
    """What is typed here, a line at a time, to the program's terminal (its prompts)."""
    try:
        for line in sys.stdin:
            client.send(TypeInput(data=line.replace("\n", "\r")))
    except (HostError, OSError, ValueError):
        return


def _exit_status(event: ProgramExited) -> int | None:
    """A shell's status for the program's end: its code, or 128 + the signal's number."""
    if event.exit_code is not None:
        return event.exit_code
    import signal

    try:
        return 128 + int(getattr(signal, event.signal))
    except (AttributeError, TypeError, ValueError):
        return None


def parse_run_argv(argv: list[str]) -> argparse.Namespace:
    """`ctui run ...` arguments (without "run") parsed as the CLI does; for the panel."""
    parser = Parser(prog="ctui")
    add_run_command(parser.add_subparsers(dest="command_name", parser_class=Parser))
    return parser.parse_args(["run", *argv])


__all__ = ["add_run_command", "build_spec", "cmd_run", "parse_run_argv", "start_run"]
