"""The panel gives way to the training on the same cores; the training keeps the normal policy.

On Linux a thread that wakes up preempts the one running when the scheduler finds it owed CPU,
and a panel that sleeps between redraws always is. On a box whose cores the training fills,
PyTorch's threads wait for each other at every operation, so one preempted thread stalls them
all. SCHED_BATCH keeps the panel's fair share of the CPU but gives up that wakeup preemption:
the panel runs when the current time slice on a core ends, milliseconds later, which nobody
sees on a screen redrawn a few times a second. Lowering one's own policy needs no privilege, and
threads started afterwards inherit it, so the panel asks before it starts any.

The policy also passes through fork and exec, so a run host started from a panel puts itself
back to SCHED_OTHER: the run trains at the normal policy, whoever started it. Standard library
only (the panel calls this before its first frame).
"""

from __future__ import annotations

import os


def _use(name: str) -> bool:
    """This thread (and those it starts) under the policy os.<name>; False where there is no
    such policy or it cannot be set."""
    policy = getattr(os, name, None)
    if policy is None:
        return False
    try:
        if os.sched_getscheduler(0) != policy:
            os.sched_setscheduler(0, policy, os.sched_param(0))
    except OSError:
        return False
    return True


def defer_to_training() -> bool:
    """The panel's processes: SCHED_BATCH."""
    return _use("SCHED_BATCH")


def normal_scheduling() -> bool:
    """A run host: SCHED_OTHER, whatever it inherited."""
    return _use("SCHED_OTHER")
