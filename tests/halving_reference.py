"""Successive halving's bookkeeping as first written (search/searcher/halving.py before it kept
its rankings and counts up to date event by event): every question answered from scratch,
sorting and scanning every config. Kept as the oracle the incremental version must agree with
(test_scale_parts.py), event for event."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Rung:
    quota: int  # runs planned at this budget (the first: every config)
    started: list[str] = field(default_factory=list)  # config ids, in start order
    values: dict[str, float] = field(default_factory=dict)  # finished runs: the end of a complete schedule
    failed: set[str] = field(default_factory=set)  # failed for good, and not being rerun
    # configs whose run here failed for good, in order: each freed its place for the next in line
    # (it stays counted if a resume reruns it, so a place once given is never taken back)
    replaced: list[str] = field(default_factory=list)
    rerunning: set[str] = field(default_factory=set)  # failed, then started again by a resume

    def live(self) -> list[str]:
        return [c for c in self.started if c not in self.values and c not in self.failed]

    def cutoff(self) -> int:
        """How many of the ranked configs below this rung takes (no use for the first)."""
        return self.quota + len(self.replaced)


class Rungs:
    """One Rung per budget; `maximize` orders the values."""

    def __init__(self, sizes: list[int], *, maximize: bool = True) -> None:
        self.rungs = [Rung(n) for n in sizes]
        self.maximize = maximize

    def __getitem__(self, r: int) -> Rung:
        return self.rungs[r]

    def __len__(self) -> int:
        return len(self.rungs)

    # -- events ----------------------------------------------------------------------
    def start(self, r: int, cid: str) -> None:
        self.rungs[r].started.append(cid)

    def finish(self, r: int, cid: str, value: float) -> None:
        rung = self.rungs[r]
        rung.values[cid] = float(value)
        rung.failed.discard(cid)
        rung.rerunning.discard(cid)

    def fail(self, r: int, cid: str) -> None:
        rung = self.rungs[r]
        rung.failed.add(cid)
        rung.rerunning.discard(cid)
        if r > 0 and cid not in rung.replaced:
            rung.replaced.append(cid)

    def rerun(self, r: int, cid: str) -> None:
        """A failed run that Tune runs again (a resume reruns errored trials): pending again."""
        rung = self.rungs[r]
        if cid in rung.failed:
            rung.failed.discard(cid)
            rung.rerunning.add(cid)

    def forget(self, r: int, cid: str) -> None:
        """A run that was started but will never run (Tune lost it in a crash)."""
        rung = self.rungs[r]
        rung.started.remove(cid)
        rung.values.pop(cid, None)
        rung.failed.discard(cid)
        rung.rerunning.discard(cid)

    # -- questions -------------------------------------------------------------------
    def ranked(self, r: int) -> list[str]:
        """Configs with a finished value at rung r, best first; ties go to the earlier config."""
        order = {cid: i for i, cid in enumerate(self.rungs[0].started)}
        sign = -1.0 if self.maximize else 1.0
        vals = self.rungs[r].values
        return sorted(vals, key=lambda c: (sign * vals[c], order.get(c, len(order))))

    def pending(self, r: int) -> int:
        """At most how many values rung r may still get: its live runs, and the runs it may yet
        start, into free places or (after a rerun below) beside the configs it took already."""
        rung = self.rungs[r]
        if r == 0:
            return len(rung.live()) + max(0, rung.quota - len(rung.started))
        below = self.rungs[r - 1]
        candidates = sum(c not in rung.started for c in below.values) + self.pending(r - 1)
        # each rerun below can push one config into the cut of each rung above it
        reruns = sum(len(self.rungs[q].rerunning) for q in range(r))
        free = max(0, rung.cutoff() - len(rung.started)) + reruns
        return len(rung.live()) + min(free, candidates)

    def promotable(self, r: int) -> str | None:
        """A config certain to be among the ones rung r takes and not started there yet: even if
        every value still pending below beat it, it would still make the cut."""
        if r == 0:
            return None
        cutoff, pending = self.rungs[r].cutoff(), self.pending(r - 1)
        for pos, cid in enumerate(self.ranked(r - 1)):
            if pos + pending >= cutoff:
                return None
            if cid not in self.rungs[r].started:
                return cid
        return None

    def replaces(self, r: int) -> str | None:
        """The failed run the next promotion at rung r stands in for, if it is one of the extra
        promotions failures made room for (named in failure order)."""
        rung = self.rungs[r]
        extra = len(rung.started) - rung.quota
        return rung.replaced[extra] if 0 <= extra < len(rung.replaced) else None

    def live_runs(self) -> int:
        return sum(len(rung.live()) for rung in self.rungs)

    def finished(self) -> bool:
        """Every config started, nothing running, and nothing left that could be promoted."""
        first = self.rungs[0]
        if len(first.started) < first.quota or self.live_runs():
            return False
        return all(self.promotable(r) is None for r in range(1, len(self.rungs)))
