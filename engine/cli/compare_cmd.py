"""`ctui compare RUN RUN...`: runs side by side, as a table or CSV. Torch-free.

A table for people (settings that differ between the runs marked `*`) or CSV for a
spreadsheet or pandas; `--epochs` gives one row per epoch of each run instead of one per run.
"""

from __future__ import annotations

import argparse
import csv
import sys

from ..compare import (
    Comparison,
    RunSummary,
    UnknownRun,
    best_text,
    compare,
    find_runs,
    summarize_all,
)
from ..config import default_runs_dir
from ..host.registry import UNREADABLE
from .errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail

SUMMARY = ("RUN", "STATUS", "TASK", "EPOCHS", "BEST", "S/EPOCH", "SAMPLES/S")
EPOCHS = ("RUN", "EPOCH", "SECONDS", "SAMPLES/S", "TEST LOSS", "ACCURACY")
CSV_SUMMARY = ("run", "status", "task", "epochs_done", "epochs_planned", "best_figure",
               "best_value", "best_epoch", "mean_epoch_seconds", "samples_per_second")
CSV_EPOCHS = ("run", "epoch", "seconds", "samples_per_second", "test_loss", "accuracy",
              "batch_size", "num_workers")


def add_compare_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "compare", help="compare runs: settings that differ, epochs, best, speed",
        description="Compare runs side by side: status, task, the settings that differ "
        "between them (marked *), epochs, best accuracy (or the --monitor figure), mean "
        "seconds per epoch and samples/s. No RUN: every run in the runs folder.")
    parser.add_argument("runs", nargs="*", metavar="RUN",
                        help="a run's name in the runs folder, or its folder")
    parser.add_argument("--runs-dir", default=default_runs_dir(), metavar="DIR",
                        help="folder holding the runs (default: $CTUI_RUNS, else ./runs)")
    parser.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    parser.add_argument("--epochs", action="store_true",
                        help="one row per epoch of each run: seconds, samples/s, test loss, "
                        "accuracy")
    parser.set_defaults(handler=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    try:
        runs = find_runs(args.runs_dir, args.runs) if args.runs else summarize_all(args.runs_dir)
    except UnknownRun as error:
        fail(str(error), EXIT_USAGE)
    unreadable = [run for run in runs if run.status == UNREADABLE]
    runs = [run for run in runs if run.status != UNREADABLE]
    for run in unreadable:
        print(f"ctui: error: cannot read run {run.name}: {run.reason}", file=sys.stderr)
    if not runs and not unreadable:
        print(f"no runs in {args.runs_dir}; start one with `ctui train --detach`")
        return EXIT_OK
    comparison = compare(runs)
    if args.csv:
        write_csv(comparison, args.epochs)
    elif runs:
        print("\n".join(epochs_table(comparison) if args.epochs else summary_table(comparison)))
    return EXIT_FAILED if unreadable else EXIT_OK


# ---------------------------------------------------------------- tables


def summary_row(run: RunSummary) -> tuple[str, ...]:
    seconds, speed = run.mean_epoch_seconds, run.samples_per_second
    return (run.name, run.status, run.task, f"{run.epochs_done}/{run.epochs_planned or '?'}",
            best_text(run.best), "-" if seconds is None else f"{seconds:.2f}",
            "-" if speed is None else f"{speed:,.0f}")


def summary_table(comparison: Comparison) -> list[str]:
    """Lines: one per run, the differing settings last, their headers marked *."""
    header = (*SUMMARY, *(f"*{name}" for name in comparison.differing))
    rows = [header] + [(*summary_row(run), *(value for _, value in
                                             comparison.differing_settings(run)))
                       for run in comparison.runs]
    lines = _columns(rows)
    if len(comparison.runs) > 1:
        lines.append("* differs between these runs" if comparison.differing
                     else "these runs have the same settings")
    return lines


def epochs_table(comparison: Comparison) -> list[str]:
    rows: list[tuple[str, ...]] = [EPOCHS]
    for run in comparison.runs:
        for point in run.points:
            rows.append((run.name, str(point.epoch), f"{point.seconds:.2f}",
                         f"{point.samples_per_second:,.0f}",
                         "-" if point.test_loss is None else f"{point.test_loss:.4f}",
                         "-" if point.accuracy is None else f"{point.accuracy * 100:.2f}%"))
    return _columns(rows)


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            .rstrip() for row in rows]


# ---------------------------------------------------------------- CSV


def write_csv(comparison: Comparison, per_epoch: bool) -> None:
    """Plain numbers (seconds, samples/s, accuracy as a fraction) for a spreadsheet."""
    out = csv.writer(sys.stdout, lineterminator="\n")
    if per_epoch:
        out.writerow(CSV_EPOCHS)
        for run in comparison.runs:
            for point in run.points:
                out.writerow((run.name, point.epoch, _number(point.seconds),
                              _number(point.samples_per_second), _number(point.test_loss),
                              _number(point.accuracy), point.batch_size, point.num_workers))
        return
    out.writerow((*CSV_SUMMARY, *comparison.differing))
    for run in comparison.runs:
        figure, value, epoch = run.best or ("", None, "")
        out.writerow((run.name, run.status, run.task, run.epochs_done,
                      run.epochs_planned or "", figure, _number(value), epoch,
                      _number(run.mean_epoch_seconds), _number(run.samples_per_second),
                      *(value for _, value in comparison.differing_settings(run))))


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"
