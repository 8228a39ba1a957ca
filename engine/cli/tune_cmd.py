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
        description="Run timed trials inside a live run (num_workers 0, 1, 2, 4... up to the "
        "core count, more or fewer as the bottleneck verdict says, then batch sizes in powers "
        "of two up to a quarter of the training set or the first out-of-memory), each repeated "
        "until the fastest is apart from the rest beyond the noise; restore the run's state, "
        "print the median and range of samples/s per setting and offer to apply the best "
        "(within the noise, the current setting is kept). RUN defaults to the only live run.")
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
        if report.rows and best == report.rows[0][:2]:
            print(f"kept: batch_size={best[0]} num_workers={best[1]} (the current settings)")
            return EXIT_OK
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
    """Median samples/s of each setting with the lowest and highest of its repeats, the pick
    marked, and the one-line reason (apart beyond the noise, or within it)."""
    lines = [f"{'batch':>6} {'workers':>7} {'samples/s':>10} {'range':>15} {'trials':>6}"]
    best = (report.best_batch_size, report.best_num_workers)
    current = report.rows[0][:2] if report.rows else best
    for batch_size, workers, speed, note, low, high, trials in report.timed():
        mark = ""
        if (batch_size, workers) == best and not note:
            mark = "  <- keep" if best == current else "  <- best"
        figure = note if note else f"{speed:,.0f}"
        spread = f"{low:,.0f}-{high:,.0f}" if trials and not note else ""
        lines.append(f"{batch_size:>6} {workers:>7} {figure:>10} {spread:>15} "
                     f"{trials or '':>6}{mark}")
    if report.summary:
        lines.append(report.summary)
    total = sum(trials for _, _, trials in report.spreads) or len(report.rows)
    lines.append(f"({len(report.rows)} settings, {total} trials in {report.seconds:.0f}s)")
    return "\n".join(lines)


def _confirm(best: tuple[int, int], assume_yes: bool) -> bool:
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        print("(not a terminal: pass --apply to apply the best)")
        return False
    reply = input(f"apply batch_size={best[0]} num_workers={best[1]}? [y/N] ")
    return reply.strip().lower() in ("y", "yes")
