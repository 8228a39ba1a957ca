"""`ctui tune [RUN]`: autotune a live run from the shell, then apply the best on confirmation."""

from __future__ import annotations

import argparse
import sys

from ..events import (
    Answer,
    SetBatchSize,
    SetNumWorkers,
    State,
    StateChanged,
    Tune,
    TuneReport,
)
from ..host import RunClient
from .errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail
from .runs_cmds import _live_run, _no_answer, _run_argument


def add_tune_command(commands: argparse._SubParsersAction) -> None:
    tune = commands.add_parser(
        "tune", help="time num_workers and batch sizes inside a live run; apply the best",
        description="Run short timed trials inside a live run (num_workers 0, 1, 2, 4... up to "
        "the core count, then batch sizes in powers of two up to the first out-of-memory), "
        "restore the run's state, print samples/s per trial and offer to apply the best. "
        "RUN defaults to the only live run.")
    _run_argument(tune)
    tune.add_argument("--budget", type=float, default=60.0, metavar="S",
                      help="time budget for the trials in seconds (default: 60)")
    answer = tune.add_mutually_exclusive_group()
    answer.add_argument("--apply", action="store_true", help="apply the best without asking")
    answer.add_argument("--no-apply", action="store_true", help="only print the table")
    tune.set_defaults(handler=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    if not args.budget > 0:
        fail(f"--budget: {args.budget:g} is not allowed; use seconds > 0", EXIT_USAGE)
    info = _live_run(args)
    with RunClient.connect(info.run_dir) as client:
        client.history()
        client.send(Tune(budget_seconds=args.budget))
        print(f"tuning {info.name} for up to {args.budget:.0f}s (training waits meanwhile)...",
              flush=True)
        report = client.wait_for(lambda e: _report_or_end(e), args.budget * 3 + 120)
        if report is None:
            return _no_answer(info, "tune", "trials start at the next step")
        if not isinstance(report, TuneReport):
            print(f"{info.name} ended before tuning: {report.state}")
            return EXIT_FAILED
        print(report_table(report))
        best = (report.best_batch_size, report.best_num_workers)
        if args.no_apply or not report.rows or not _confirm(best, args.apply):
            print("not applied")
            return EXIT_OK
        answers = []
        for command in (SetBatchSize(best[0]), SetNumWorkers(best[1])):
            client.send(command)
            answers.append(client.wait_for(
                lambda e, kind=command.kind: isinstance(e, Answer) and e.command == kind, 60))
    refused = [a for a in answers if a is None or not a.accepted]
    if not refused:
        print(f"applied: batch_size={best[0]} num_workers={best[1]}")
        return EXIT_OK
    print("not applied: " + "; ".join(a.message if a else "no answer from the run"
                                      for a in refused))
    return EXIT_FAILED


def _report_or_end(event) -> bool:
    return isinstance(event, TuneReport) or (
        isinstance(event, StateChanged) and event.state in State.ENDED)


def report_table(report: TuneReport) -> str:
    lines = [f"{'batch':>6} {'workers':>7} {'samples/s':>10}"]
    best = (report.best_batch_size, report.best_num_workers)
    for batch_size, workers, speed, note in report.rows:
        mark = "  <- best" if (batch_size, workers) == best and not note else ""
        figure = note if note else f"{speed:,.0f}"
        lines.append(f"{batch_size:>6} {workers:>7} {figure:>10}{mark}")
    lines.append(f"({len(report.rows)} trials in {report.seconds:.0f}s)")
    return "\n".join(lines)


def _confirm(best: tuple[int, int], assume_yes: bool) -> bool:
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        print("(not a terminal: pass --apply to apply the best)")
        return False
    reply = input(f"apply batch_size={best[0]} num_workers={best[1]}? [y/N] ")
    return reply.strip().lower() in ("y", "yes")
