"""`ctui run -- CMD`: any training script, run and supervised as a ctui run.

The program runs in a pseudo-terminal owned by a run host of its own (serve.py), with the same
socket, clients, run folder and listing as a training run; the supervisor (supervisor.py)
restarts it on failure and stops it with escalating signals; the DataLoader observer
(engine/observe) times its epochs and changes num_workers live. Nothing here imports torch:
checkpoints are probed in a child process (checkpoints.py).

    from ctui.engine.program import ProgramSpec, start_program

    run_dir = start_program(ProgramSpec(argv=("python", "train.py"), cwd="."), "runs")
"""

from .launch import resume_program, start_program
from .spec import ProgramSpec, is_program_run, read_program_config

__all__ = ["ProgramSpec", "is_program_run", "read_program_config", "resume_program",
           "start_program"]
