"""Parse `ctui train ...` and the run host commands (ls, stop, pause, resume, checkpoint, set,
logs) for the engine side of the CLI."""

from __future__ import annotations

from .compare_cmd import add_compare_command
from .errors import Parser
from .options import add_run_flags
from .run_cmd import add_run_command
from .runs_cmds import add_commands, run_command
from .tune_cmd import add_tune_command


def build_parser() -> Parser:
    parser = Parser(prog="ctui", description=(
        "ctui: train PyTorch models on a rented GPU and watch them from the terminal. "
        "Runs are checkpointed, so a dropped SSH link or a reclaimed instance loses minutes, "
        "not hours."), epilog=(
        "The control panel: `ctui` attaches to the live run (or offers to resume one, or "
        "starts the default task); `ctui train [flags]` starts a run and opens the panel on "
        "it; `ctui attach [RUN]` opens it on a live run; `ctui serve` serves it to a browser "
        "(see ctui serve --help). Quitting the panel never stops training."))
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    train = commands.add_parser(
        "train", help="start or resume a training run",
        description="Start (or --resume) a training run. Exit codes: 0 finished, 1 failed, "
        "2 bad usage, 3 stopped early with a checkpoint (continue with --resume).")
    mode = train.add_mutually_exclusive_group()
    mode.add_argument("--headless", action="store_true",
                      help="train in this process and print one line per epoch (no panel)")
    mode.add_argument("--detach", action="store_true",
                      help="start the run in a background host and return at once")
    add_run_flags(train)
    add_run_command(commands)
    add_commands(commands)
    add_tune_command(commands)
    add_compare_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        from .train import run

        return run(args)
    if getattr(args, "handler", None) is not None:
        return run_command(args)
    parser.print_help()
    return 0
