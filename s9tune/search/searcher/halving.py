"""Successive halving's bookkeeping, as plain values: which configs run at which budget, which
finished with what value, which failed, and which config is certain enough to promote.

No Ray or Optuna here: the searcher (search/searcher/searcher.py) feeds it events and asks it what to
start, so the rule can be checked on its own against every order and failure.

The rule is the synchronous one, applied as early as it is certain: rung r takes the best
`quota[r]` configs of rung r-1 by their finished values (a config whose run failed there is
left out of that ranking). If a promoted run fails for good, its place goes to the next config
in line, so the rung takes the best `quota[r] + len(replaced[r])`. A config is started only
once that is certain: even if every value still to come below beat it, it would make the cut.

A failure is for good within one run of the search; `--resume` reruns failed runs. Until a
rerun ends it counts as pending, so no promotion relies on its failure. A promotion made
before the resume did rely on it; if the rerun then finishes inside the cut, its config is
promoted as well (that rung runs one config more than planned): the synchronous rule, replayed
over the same events, would have taken it too, and no config that finished inside the cut is
left out.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

NOT_STARTED_FIRST = float("inf")  # where a config with no first-budget run ranks among equal values
Key = tuple[float, float, int, str]  # (signed value, first-budget start order, order set, config id)


class Ranking:
    """Config ids by value, kept sorted as values are set (bisect) rather than sorted at every
    question: best first (`sign` -1 maximizes), ties to the config started first (`seq`), then
    to the one set first. The top k cost O(k), a config's place O(log n)."""

    def __init__(self, sign: float, seq: Callable[[str], float]) -> None:
        self.sign, self.seq = sign, seq
        self.keys: list[Key] = []  # sorted
        self.key: dict[str, Key] = {}
        self.count = 0  # keys ever set: the last tie-break

    def set(self, cid: str, value: float) -> Key:
        old = self.key.get(cid)
        if old is None:
            self.count += 1
        return self.put((self.sign * value, self.seq(cid), old[2] if old is not None else self.count, cid))

    def put(self, key: Key) -> Key:
        """`key` (another ranking's, so that both order alike) in place of the config's own."""
        self.remove(key[-1])
        insort(self.keys, key)
        self.key[key[-1]] = key
        return key

    def remove(self, cid: str) -> None:
        key = self.key.pop(cid, None)
        if key is not None:
            del self.keys[bisect_left(self.keys, key)]

    def place(self, cid: str) -> int:
        """How many configs rank before `cid` (which must be here)."""
        return bisect_left(self.keys, self.key[cid])

    def first(self, k: int) -> list[str]:
        return [key[-1] for key in self.keys[: max(0, k)]]

    def __iter__(self) -> Iterator[str]:
        return (key[-1] for key in self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, cid: object) -> bool:
        return cid in self.key


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
    # kept by Rungs' events, so that no question walks every config: the started ones, the live
    # ones (started, no value, not failed)
    started_set: set[str] = field(default_factory=set)
    live_set: set[str] = field(default_factory=set)

    def live(self) -> list[str]:
        return [c for c in self.started if c in self.live_set]

    def cutoff(self) -> int:
        """How many of the ranked configs below this rung takes (no use for the first)."""
        return self.quota + len(self.replaced)


class Rungs:
    """One Rung per budget; `maximize` orders the values."""

    def __init__(self, sizes: list[int], *, maximize: bool = True) -> None:
        self.rungs = [Rung(n) for n in sizes]
        self.maximize = maximize
        self.order: dict[str, int] = {}  # config id -> its place in the first budget's start order
        self.starts = 0  # first-budget starts so far
        sign = -1.0 if maximize else 1.0
        # each rung's finished configs, ranked; and for each rung above the first, the configs
        # ranked below it that it has not started (the ones a promotion picks from), by the
        # same keys
        self.ranking = [Ranking(sign, self.seq) for _ in sizes]
        self.waiting = [Ranking(sign, self.seq) for _ in sizes]

    def __getitem__(self, r: int) -> Rung:
        return self.rungs[r]

    def __len__(self) -> int:
        return len(self.rungs)

    def seq(self, cid: str) -> float:
        return self.order.get(cid, NOT_STARTED_FIRST)

    # -- events ----------------------------------------------------------------------
    def start(self, r: int, cid: str) -> None:
        rung = self.rungs[r]
        rung.started.append(cid)
        rung.started_set.add(cid)
        if r == 0 and cid not in self.order:
            self.order[cid] = self.starts = self.starts + 1
            self._rekey(cid)
        self.waiting[r].remove(cid)
        self._relive(r, cid)

    def finish(self, r: int, cid: str, value: float) -> None:
        rung = self.rungs[r]
        rung.values[cid] = float(value)
        rung.failed.discard(cid)
        rung.rerunning.discard(cid)
        key = self.ranking[r].set(cid, float(value))
        if r + 1 < len(self.rungs) and cid not in self.rungs[r + 1].started_set:
            self.waiting[r + 1].put(key)
        self._relive(r, cid)

    def fail(self, r: int, cid: str) -> None:
        rung = self.rungs[r]
        rung.failed.add(cid)
        rung.rerunning.discard(cid)
        if r > 0 and cid not in rung.replaced:
            rung.replaced.append(cid)
        self._relive(r, cid)

    def rerun(self, r: int, cid: str) -> None:
        """A failed run that Tune runs again (a resume reruns errored trials): pending again."""
        rung = self.rungs[r]
        if cid in rung.failed:
            rung.failed.discard(cid)
            rung.rerunning.add(cid)
        self._relive(r, cid)

    def forget(self, r: int, cid: str) -> None:
        """A run that was started but will never run (Tune lost it in a crash)."""
        rung = self.rungs[r]
        rung.started.remove(cid)
        if cid not in rung.started:
            rung.started_set.discard(cid)
        rung.values.pop(cid, None)
        rung.failed.discard(cid)
        rung.rerunning.discard(cid)
        self.ranking[r].remove(cid)
        if r + 1 < len(self.rungs):
            self.waiting[r + 1].remove(cid)
        if r > 0 and cid in self.ranking[r - 1] and cid not in rung.started_set:
            self.waiting[r].put(self.ranking[r - 1].key[cid])
        if r == 0 and cid not in rung.started_set:
            self.order.pop(cid, None)
            self._rekey(cid)
        self._relive(r, cid)

    def _relive(self, r: int, cid: str) -> None:
        rung = self.rungs[r]
        if cid in rung.started_set and cid not in rung.values and cid not in rung.failed:
            rung.live_set.add(cid)
        else:
            rung.live_set.discard(cid)

    def _rekey(self, cid: str) -> None:
        """Its place among equal values moved (its first-budget start was made or undone)."""
        for r, ranking in enumerate(self.ranking):
            if cid in ranking:
                key = ranking.set(cid, self.rungs[r].values[cid])
                if r + 1 < len(self.rungs) and cid in self.waiting[r + 1]:
                    self.waiting[r + 1].put(key)

    # -- questions -------------------------------------------------------------------
    def ranked(self, r: int) -> list[str]:
        """Configs with a finished value at rung r, best first; ties go to the earlier config."""
        return list(self.ranking[r])

    def pending(self, r: int) -> int:
        """At most how many values rung r may still get: its live runs, and the runs it may yet
        start, into free places or (after a rerun below) beside the configs it took already."""
        rung = self.rungs[r]
        if r == 0:
            return len(rung.live_set) + max(0, rung.quota - len(rung.started))
        candidates = len(self.waiting[r]) + self.pending(r - 1)
        # each rerun below can push one config into the cut of each rung above it
        reruns = sum(len(self.rungs[q].rerunning) for q in range(r))
        free = max(0, rung.cutoff() - len(rung.started)) + reruns
        return len(rung.live_set) + min(free, candidates)

    def promotable(self, r: int) -> str | None:
        """A config certain to be among the ones rung r takes and not started there yet: even if
        every value still pending below beat it, it would still make the cut. The best config
        not started there is the one; every config ranked above it below has started."""
        if r == 0 or not self.waiting[r]:
            return None
        cid = next(iter(self.waiting[r]))
        if self.ranking[r - 1].place(cid) + self.pending(r - 1) >= self.rungs[r].cutoff():
            return None
        return cid

    def replaces(self, r: int) -> str | None:
        """The failed run the next promotion at rung r stands in for, if it is one of the extra
        promotions failures made room for (named in failure order)."""
        rung = self.rungs[r]
        extra = len(rung.started) - rung.quota
        return rung.replaced[extra] if 0 <= extra < len(rung.replaced) else None

    def live_runs(self) -> int:
        return sum(len(rung.live_set) for rung in self.rungs)

    def finished(self) -> bool:
        """Every config started, nothing running, and nothing left that could be promoted."""
        first = self.rungs[0]
        if len(first.started) < first.quota or self.live_runs():
            return False
        return all(self.promotable(r) is None for r in range(1, len(self.rungs)))
