"""Where events go: each sink is a callable taking one event, called on the engine thread.

A sink must be quick. Optional methods: `close()` at the end of the run, and `checkpoint_state()`
returning plain values to keep in the checkpoint (a logger's run id, for one).
"""

from .jsonl import MetricsFile

__all__ = ["MetricsFile"]
