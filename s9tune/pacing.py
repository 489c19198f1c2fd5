"""When a per-epoch checkpoint is due. Plain Python (no torch), so that a trial's reporting
(search/execution/reporting.py) can be imported by a process that never trains."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# On a GPU an epoch of CIFAR takes ~0.5 s and a width-64 checkpoint (model + momentum, 50 MiB)
# ~0.07 s: written every epoch it cost 12-24% of a run (benchmarks/RESULTS.md). This is the
# share of a run's time that checkpoints may take.
CHECKPOINT_MAX_SHARE = 0.05


class CheckpointPacer:
    """Says when a per-epoch checkpoint is due: after the first epoch and the last, and otherwise
    once enough time has passed since the last one that writing it costs at most `max_share` of
    the time in between (cost / (elapsed + cost)). Where epochs are long against the write (most
    CPU runs) that is every epoch; a crash loses at most one interval plus an epoch."""

    def __init__(self, max_share: float = CHECKPOINT_MAX_SHARE, clock: Callable[[], float] = time.perf_counter) -> None:
        self.max_share = max_share
        self.clock = clock
        self.cost = 0.0  # seconds the last checkpoint took
        self.since: float | None = None  # when it ended

    def due(self, epoch: int, last_epoch: int) -> bool:
        if self.since is None or epoch >= last_epoch:
            return True
        elapsed = self.clock() - self.since
        return self.cost <= self.max_share * (elapsed + self.cost)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Times one checkpoint write (and, in a trial, its hand-over to Tune's storage)."""
        t0 = self.clock()
        yield
        self.since = self.clock()
        self.cost = self.since - t0
