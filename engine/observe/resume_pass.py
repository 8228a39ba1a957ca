"""Changing num_workers or batch_size in the middle of a pass over a DataLoader, with every sample
of the pass still seen exactly once, in the same order.

A Recorder stands in for the loader's batch sampler inside torch's iterator (only there: while
the iterator is made, then `loader.batch_sampler` is the program's own object again). It hands
out the very batches the batch sampler yields, from the same generator, so random draws happen
as they would bare, and keeps those handed out but not yet returned to the program (the
workers' prefetched ones). A change then makes a new iterator, with the new settings, over those
batches followed by the rest of the same generator, and shuts the old one's workers down; the
program's iterator object passes its __next__ on to the new one. The new iterator's random seed
draw is undone (torch's RNG state is put back), so the program's random stream is as bare.

Possible for a map-style dataset with in-order batches; batch_size also needs torch's own
BatchSampler without drop_last (the rest of the pass is regrouped into the new size, the last
batch may be smaller, as without drop_last it would be). Loaded by path like hook.py:
standard library only, torch reached through the objects passed in.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

CHECK_EVERY = 0.5  # seconds between looks at the live settings inside a pass
TRIM_AT = 256  # batches remembered before those already returned are forgotten


class Recorder:
    """The loader's batch sampler as torch's iterator sees it (see the module's docstring)."""

    def __init__(self, batch_sampler: Any) -> None:
        self.batch_sampler = batch_sampler
        self.pending: Iterator[list] | None = None  # what the next iter() continues
        self.source: Iterator[list] | None = None  # what the live iteration draws from
        self.drawn: deque[list] = deque()  # handed out since iter(), less those trimmed
        self.trimmed = 0
        self.current: Any = None  # the pass (hook._Pass): batches - base = returned since iter()

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[list]:
        source = self.pending if self.pending is not None else iter(self.batch_sampler)
        self.source, self.drawn, self.trimmed = source, deque(), 0
        return self._record(source, self.drawn)

    def _consumed(self) -> int:
        current = self.current
        return current.batches - current.base if current is not None else 0

    def _record(self, source: Iterator[list], drawn: deque) -> Iterator[list]:
        append = drawn.append  # the hot path: a few tens of nanoseconds a batch
        for batch in source:
            append(batch)
            if len(drawn) > TRIM_AT:
                self._trim(drawn)
            yield batch

    def _trim(self, drawn: deque) -> None:
        """Forget the batches already returned to the program: memory stays that of the
        batches in flight, not of the whole pass."""
        consumed = self._consumed()
        while self.trimmed < consumed and drawn:
            drawn.popleft()
            self.trimmed += 1

    def remaining(self) -> Iterator[list]:
        """The batches the program has not had yet, in order: the drawn ones, then the rest."""
        skip = max(self._consumed() - self.trimmed, 0)
        leftover = list(self.drawn)[skip:]
        return itertools.chain(leftover, self.source if self.source is not None else ())


def rebatched(batches: Iterable[list], size: int) -> Iterator[list]:
    """The same indices, in the same order, in batches of `size` (the last one may be short)."""
    batch: list = []
    for old in batches:
        for index in old:
            batch.append(index)
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch


def mid_pass_reason(loader: Any, name: str, exact_batch_sampler: type, iterable_kind: Any) -> str:
    """'' when `name` can change inside a pass of this loader, else why only from its next."""
    if loader._dataset_kind == iterable_kind:
        return "an iterable dataset"  # refused outright elsewhere, with the full reason
    if loader.batch_sampler is None:
        return "batch_size=None: its samples are not batched"
    if getattr(loader, "in_order", True) is False:
        return "in_order=False: batches arrive out of order, so the rest of a pass is not known"
    if name == "batch_size":
        if type(loader.batch_sampler) is not exact_batch_sampler:
            return f"custom batch sampler {type(loader.batch_sampler).__name__}"
        if loader.drop_last:
            return ("drop_last=True: regrouping the rest of the pass would end it on a short "
                    "batch, which drop_last is there to avoid")
    return ""


def make_iterator(loader: Any, recorder: Recorder, source: Iterator[list], torch: Any) -> Any:
    """A new torch iterator for `loader` (with its settings now) over `source`; the random
    state as it was before (its seed draw undone)."""
    generator = loader.generator
    cpu_state = torch.get_rng_state()
    own_state = generator.get_state() if generator is not None else None
    recorder.pending = source
    program_sampler = loader.batch_sampler
    object.__setattr__(loader, "batch_sampler", recorder)
    try:
        return loader._get_iterator()
    finally:
        object.__setattr__(loader, "batch_sampler", program_sampler)
        recorder.pending = None
        torch.set_rng_state(cpu_state)
        if own_state is not None:
            generator.set_state(own_state)


def iterate_recorded(loader: Any, recorder: Recorder, original_iter: Any) -> Any:
    """`original_iter(loader)` with the recorder in the batch sampler's place while the iterator
    is made (or reset, for persistent workers)."""
    program_sampler = loader.batch_sampler
    object.__setattr__(loader, "batch_sampler", recorder)
    try:
        return original_iter(loader)
    finally:
        object.__setattr__(loader, "batch_sampler", program_sampler)


def shut_down(iterator: Any) -> None:
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
