"""Re-evaluation of the search's top configs on more training seeds, as plain values.

The search ranks configs by one training run each, and a single run's seed noise is of the
same size as the differences between the best configs; the best single value is, on average,
also its config's luckiest run (the winner's curse). So the `top` configs by complete
full-length value each train `seeds` more times on the full schedule, with seeds
`fixed.seed + 1 .. fixed.seed + seeds` (a config as soon as it is certain to be among them,
whatever values the runs still pending bring), and the pick is the config with the best mean
over all its complete runs. Everything stays on the validation split.

No Ray or Optuna here: the searcher (search/searchers.py) feeds it events, the results
(search/trials.py) and the design replay (benchmarks/) use `by_mean` and `best_mean`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SEED_KEY = "rerun_seed"  # in a re-evaluation run's trial config: the TrainConfig seed it trains with


@dataclass(frozen=True)
class ReevalSpec:
    """`top` configs, each trained on `seeds` more seeds; top 0 turns the step off."""

    top: int = 0
    seeds: int = 0

    @property
    def on(self) -> bool:
        return self.top > 0 and self.seeds > 0

    def runs(self, configs: int) -> int:
        """Runs the step plans after a search with `configs` complete full-length values."""
        return min(self.top, configs) * self.seeds if self.on else 0

    def to_record(self) -> dict[str, int]:
        return {"top": self.top, "seeds": self.seeds}

    @classmethod
    def from_record(cls, d: dict[str, Any] | None) -> ReevalSpec:
        # an experiment recorded before the step existed had none
        return cls(int(d.get("top", 0)), int(d.get("seeds", 0))) if d else cls()


Run = tuple[str, int]  # (config id, seed offset 1..seeds)


@dataclass
class Reeval:
    """Which re-evaluation runs are planned, started, finished (with their value) and failed.
    A config's runs are planned as soon as it is certain to be among the top (the searcher
    decides that), so reruns fill the slots the search's last runs leave free."""

    spec: ReevalSpec
    planned: list[Run] = field(default_factory=list)
    started: list[Run] = field(default_factory=list)
    values: dict[Run, float] = field(default_factory=dict)
    failed: set[Run] = field(default_factory=set)

    @property
    def configs(self) -> list[str]:
        """The planned configs, in the order they were certain."""
        return list(dict.fromkeys(cid for cid, _ in self.planned))

    def add(self, certain: list[str]) -> None:
        """Plan the runs of configs certain to be among the top `top`, best first."""
        for cid in certain:
            configs = self.configs
            if cid not in configs and len(configs) < self.spec.top:
                self.planned += [(cid, j) for j in range(1, self.spec.seeds + 1)]

    def next_run(self) -> Run | None:
        return next((r for r in self.planned if r not in self.started), None)

    def start(self, run: Run) -> None:
        """A run starts (or, rebuilt from the journal, had started): planned, whatever the ranking
        says now, since its config was certain when it started."""
        if run not in self.planned:
            self.planned.append(run)
        if run not in self.started:
            self.started.append(run)
        self.failed.discard(run)

    def finish(self, run: Run, value: float) -> None:
        self.values[run] = float(value)
        self.failed.discard(run)

    def fail(self, run: Run) -> None:
        self.failed.add(run)

    def forget(self, run: Run) -> None:
        """A run that was started but will never run (Tune lost it in a crash): planned again."""
        if run in self.started:
            self.started.remove(run)
        self.values.pop(run, None)
        self.failed.discard(run)

    def live(self) -> list[Run]:
        return [r for r in self.started if r not in self.values and r not in self.failed]

    def finished(self) -> bool:
        """Nothing planned is left to start or running (the searcher adds the last certain
        configs before it asks)."""
        return self.next_run() is None and not self.live()


def by_mean(values: dict[str, list[float]], reevaluated: set[str]) -> list[str]:
    """The re-evaluated configs, best mean over their complete runs first (each list: the
    search's full-length value first, then its reruns'); ties go to the config that ranked
    higher on its single value, then to the earlier one."""
    cands = [c for c in values if c in reevaluated and values[c]]
    return sorted(cands, key=lambda c: (sum(values[c]) / len(values[c]), values[c][0]), reverse=True)


def best_mean(values: dict[str, list[float]], reevaluated: set[str]) -> str | None:
    """The pick: the first of `by_mean`; None if no config was re-evaluated."""
    return next(iter(by_mean(values, reevaluated)), None)
