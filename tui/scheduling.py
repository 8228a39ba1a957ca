"""The panel gives way to the training on the same cores.

On Linux a thread that wakes up preempts the one running when the scheduler finds it owed CPU,
and a panel that sleeps between redraws always is. On a box whose cores the training fills,
PyTorch's threads wait for each other at every operation, so one preempted thread stalls them
all. SCHED_BATCH keeps the panel's fair share of the CPU but gives up that wakeup preemption:
the panel runs when the current time slice on a core ends, milliseconds later, which nobody
sees on a screen redrawn a few times a second. Lowering one's own policy needs no privilege, and
threads started afterwards inherit it, so this is called before the panel starts any.
"""

from __future__ import annotations

import os


def defer_to_training() -> bool:
    """SCHED_BATCH for this thread and those it starts; False where there is no such policy."""
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None:
        return False
    try:
        os.sched_setscheduler(0, policy, os.sched_param(0))
    except OSError:
        return False
    return True
