"""Re-evaluation of the search's top configs on more training seeds.

The search ranks configs by one training run each, and a single run's seed noise is of the
same size as the differences between the best configs; the best single value is, on average,
also its config's luckiest run (the winner's curse). So the `top` configs by complete
full-length value each train `seeds` more times on the full schedule, with seeds
`fixed.seed + 1 .. fixed.seed + seeds` (a config as soon as it is certain to be among them,
whatever values the runs still pending bring), and the pick is the config with the best mean
over all its complete runs. Everything stays on the validation split.

With `auto`, the runs are not fixed in advance: once the search's runs are over, the rule in
pick.py (`auto_reruns`) decides, round by round, which configs run once more, until the leader
is separated from every contender at the stated confidence or the compute cap is spent.

`Reeval` and `by_mean` (pick.py) are plain values: the searcher (searcher.py) feeds them events,
the results (search/experiment/trials.py) and the design replay (benchmarks/) rank by `by_mean`.
`Reruns` keeps the runs in the journal (journal.py): the study `NAME@seeds` holds one trial per
run, with its config (`config_id`), seed (`seed`) and Tune trial (`tune_trial_id`), so a
restarted searcher knows which ran, finished or failed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import optuna

from s9tune.search.outcome import WORST_ACCURACY
from s9tune.search.searcher import journal
from s9tune.search.searcher.journal import CONFIG_ATTR, SEED_ATTR, TUNE_ID, StudyStore
from s9tune.search.searcher.pick import by_mean
from s9tune.search.space.sections import ReevalSpec
from s9tune.search.space.space import METRIC, MODE, SearchSpace

logger = logging.getLogger(__name__)

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

    def more(self, cids: list[str]) -> None:
        """Plan one more run of each config (`auto`), with the next seed it has not had."""
        for cid in cids:
            self.planned.append((cid, 1 + max((j for c, j in self.planned if c == cid), default=0)))

    def values_of(self, final: dict[str, float]) -> dict[str, list[float]]:
        """Each config's complete full-length values: its search run's (`final`), then its
        finished reruns' by seed."""
        out = {cid: [v] for cid, v in final.items()}
        for (cid, _), v in sorted(self.values.items(), key=lambda kv: kv[0][1]):
            if cid in out:
                out[cid].append(v)
        return out

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


def best_mean(values: dict[str, list[float]], reevaluated: set[str]) -> str | None:
    """The pick: the first of `by_mean`; None if no config was re-evaluated."""
    return next(iter(by_mean(values, reevaluated)), None)


# user attributes of each Optuna trial (searcher.py uses the first three too)


class Reruns:
    """Which Tune trial runs which (config, seed offset), in the journal and in `plan`.
    `seed`: the fixed TrainConfig seed; a run with offset j trains with seed + j."""

    def __init__(self, store: StudyStore, *, name: str, space: SearchSpace, dists: dict[str, Any]) -> None:
        self.store, self.seed, self.max_t, self.dists = store, space.fixed.seed, space.max_t, dists
        self.plan = Reeval(space.reevaluate)
        self.name = f"{name}@seeds"
        self.study = journal.open_study(
            store,
            self.name,
            seed=0,  # never asks: every trial is added with its values
            startup=1,
            maximize=MODE == "max",
            attrs={"budget_epochs": space.max_t, "metric": METRIC, "s9tune_experiment": name, "reruns": True},
        )
        self.open: dict[str, tuple[Run, int]] = {}  # Tune trial id -> (run, Optuna number)
        self.runs: dict[str, Run] = {}  # Tune trial id -> run

    def start(self, tid: str, run: Run, params: dict[str, Any]) -> None:
        self.runs[tid] = run
        self.plan.start(run)
        attrs = {TUNE_ID: tid, CONFIG_ATTR: run[0], SEED_ATTR: self.seed + run[1]}
        self.open[tid] = (run, journal.add_running(self.study, self.dists, params, attrs))

    def report(self, tid: str, *, step: int, value: float) -> None:
        journal.report(self.store, self.name, self.open[tid][1], step=step, value=value)

    def complete(self, tid: str, result: dict | None) -> None:
        """A finished run is one that reached the end of its schedule (or diverged: scored as
        it reported); anything else failed and is not planned again."""
        run, number = self.open.pop(tid)
        value, done = journal.run_value(result, METRIC, budget=self.max_t)
        if done:
            self.study.tell(number, value)
            self.plan.finish(run, value)
        else:
            self.study.tell(number, state=optuna.trial.TrialState.FAIL)
            self.plan.fail(run)
            logger.info("config %s: its rerun %s with seed %d failed", run[0], tid, self.seed + run[1])
        self.store.sync()

    def rebuild(self) -> None:
        """The runs as the journal has them (a restarted searcher)."""
        for j in journal.journal_runs(self.study, needs=(TUNE_ID, CONFIG_ATTR, SEED_ATTR)):
            tid, run = j.attrs[TUNE_ID], (str(j.attrs[CONFIG_ATTR]), int(j.attrs[SEED_ATTR]) - self.seed)
            self.runs[tid] = run
            self.plan.start(run)
            self.open.pop(tid, None)
            if j.state == "running":
                self.open[tid] = (run, j.number)
            elif j.state == "complete":
                self.plan.finish(run, j.value if j.value is not None else WORST_ACCURACY)
            else:
                self.plan.fail(run)

    def reconcile(self, tid: str, *, status: str, result: dict, run: Run, params: dict[str, dict[str, Any]]) -> None:
        """One rerun as Tune restored it: adopted if the journal never heard of it, recorded if
        Tune finished or gave up on it, pending again if a resume reruns it after a failure.
        `params`: the searched values of each config, by id."""
        if tid not in self.runs:
            self.start(tid, run, params[run[0]])
            logger.info("rerun %s (config %s) adopted from Tune's saved state", tid, run[0])
        run = self.runs[tid]
        if status in ("TERMINATED", "ERROR") and tid in self.open:
            self.complete(tid, (result or None) if status == "TERMINATED" else None)
        elif status not in ("TERMINATED", "ERROR") and tid not in self.open and run in self.plan.failed:
            self.start(tid, run, params[run[0]])

    def lose(self, tid: str) -> None:
        """A run the journal has but Tune lost in a crash: it will start again."""
        run, number = self.open.pop(tid)
        self.runs.pop(tid, None)
        journal.lose_run(self.store, self.study, self.name, number)
        self.plan.forget(run)
        logger.info("rerun %s (config %s) was lost with the driver; it will start again", tid, run[0])
