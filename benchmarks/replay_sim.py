"""Replay a searcher and a Tune scheduler against the design table, in simulated epoch-time.

`TableController` stands in for Tune's TuneController: it holds slots, asks the searcher for
configs, lets the scheduler choose which trial runs, and feeds each trial's per-epoch results
to both. Only public methods are called: Searcher.suggest / on_trial_result /
on_trial_complete and TrialScheduler.on_trial_add / on_trial_result / on_trial_complete /
on_trial_remove / choose_trial_to_run. The schedulers need Trial objects and a controller:
they get Ray's own `Trial` (built with stub=True, so no trainable or storage is looked up) and
this controller, which offers the controller methods they call (get_trials, get_live_trials,
stop_trial, pause_trial), with stop_trial's callbacks ordered as TuneController.stop_trial
orders them. A trial's result order follows TuneController._process_trial_result: the
scheduler first; the searcher's on_trial_result only if the scheduler did not stop it.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from replay_table import Surrogate, unit_coords

from s9tune.search.searcher.reeval import best_mean
from s9tune.search.space.space import BUDGET_KEY, CONFIG_KEY, METRIC, SEED_KEY


@dataclass
class Draw:
    """What a config is worth in one replay: its point, nearest table config and seed, the
    values its runs report and its expected evaluation accuracy (what a pick is worth)."""

    x: np.ndarray
    c: int
    s: int
    values: np.ndarray
    quality: float


class Oracle:
    """Answers a trial's config through the table's surrogate plus one measured seed. A
    config's later runs (halving's longer budgets) reuse its draw, as a search reruns a config
    with the same `seed`; each new config near the same table config takes that config's next
    seed, so close proposals see different measured noise (until the seeds run out). A
    re-evaluation run (search/searcher/reeval.py) of a config takes its table config's next seed after
    the one its search run had: with 3 seeds in the table, 2 reruns see the other two."""

    def __init__(
        self, surrogate: Surrogate, rng: np.random.Generator, *, draw_times: bool = False, spread: float = 1.0
    ) -> None:
        self.surrogate, self.table, self.rng, self.draw_times = surrogate, surrogate.table, rng, draw_times
        self.spread = spread  # drawn times: 1 as measured, 0 all equal, between: log-deviations scaled
        self.offset = rng.integers(0, self.table.seeds, size=self.table.configs)  # common to one replay's designs
        self.uses: dict[int, int] = defaultdict(int)
        self.draws: dict[str, Draw] = {}  # by config id
        self.reruns: dict[str, int] = {}  # re-evaluation runs drawn so far, by config id

    def assign(self, trial_id: str, config: dict[str, Any]) -> Draw:
        cid = str(config.get(CONFIG_KEY, trial_id))
        if SEED_KEY in config:
            base = self.draws[cid]
            k = self.reruns[cid] = self.reruns.get(cid, 0) + 1
            s = (base.s + k) % self.table.seeds
            mu = base.values - self.surrogate.resid[base.c, base.s]
            return Draw(base.x, base.c, s, mu + self.surrogate.resid[base.c, s], base.quality)
        if cid not in self.draws:
            x = unit_coords(self.table.dists, config)
            c = int(np.argmin(np.linalg.norm(self.table.coords - x, axis=1)))
            s = int((self.offset[c] + self.uses[c]) % self.table.seeds)
            self.uses[c] += 1
            mu = self.surrogate.mu(x)
            self.draws[cid] = Draw(x, c, s, mu + self.surrogate.resid[c, s], float(mu[-1]))
        return self.draws[cid]

    def value(self, d: Draw, budget: int, epoch: int) -> tuple[float, bool]:
        """(validation accuracy, diverged) after `epoch` of a complete `budget`-epoch schedule; a
        run diverges where the nearest table config's run with that seed did, and scores 0."""
        j = self.table.budgets.index(budget)
        if budget == self.table.longest:
            if self.table.diverged[d.c, d.s, j] and self.table.curve[d.c, d.s, epoch - 1] == 0.0:
                return 0.0, True
            return float(d.values[j + epoch - 1]), False
        if self.table.diverged[d.c, d.s, j]:
            return 0.0, True
        return float(d.values[j]), False

    def epoch_time(self, d: Draw, budget: int) -> float:
        """Seconds per epoch over the table's median: the nearest run's own, or (at scale, where
        many configs share a table config) one drawn from the spread of all the table's runs."""
        if self.draw_times:
            return float(self.rng.choice(self.table.epoch_time.ravel())) ** self.spread
        return float(self.table.epoch_time[d.c, d.s, self.table.budgets.index(budget)])


@dataclass
class Run:
    trial: Trial
    draw: Draw
    budget: int
    epoch_s: float
    epoch: int = 0
    last: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    runs: list[Run]
    epochs: int
    makespan: float
    busy: float  # slot-time spent training / (slots x makespan)
    stalled: bool
    driver_s: dict[str, float]  # seconds in each searcher and scheduler method
    calls: dict[str, int]
    idle: dict[str, float]  # shares of slot-time left free: "waiting" (work left) and "draining"


class TableController:
    """The part of Tune's TuneController a searcher and a scheduler see, over simulated time."""

    def __init__(
        self, searcher: Searcher, scheduler: TrialScheduler | None, oracle: Oracle, *, slots: int, max_trials: int
    ) -> None:
        self.searcher, self.scheduler = searcher, scheduler or FIFOScheduler()
        self.oracle, self.slots, self.max_trials = oracle, slots, max_trials
        self.trials: list[Trial] = []
        self.runs: dict[str, Run] = {}
        self.events: list[tuple[float, int, str]] = []
        self.now, self.busy_time, self.epochs = 0.0, 0.0, 0
        self.seq = itertools.count()
        self.searcher_done = False
        # s9tune's runner sets TUNE_MAX_PENDING_TRIALS_PG to the slot count
        self.max_pending = slots
        self.driver_s: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.suggest_s: list[float] = []  # each suggest call, in order: how its cost grows

    # -- what schedulers call --------------------------------------------------------
    def get_trials(self) -> list[Trial]:
        return self.trials

    def get_live_trials(self) -> set[Trial]:
        return {t for t in self.trials if t.status not in (Trial.TERMINATED, Trial.ERROR)}

    def stop_trial(self, trial: Trial) -> None:
        run = self.runs[trial.trial_id]
        if trial.status in (Trial.ERROR, Trial.TERMINATED):
            return
        if trial.status in (Trial.PENDING, Trial.PAUSED):
            self._timed("scheduler", self.scheduler.on_trial_remove, self, trial)
            self._timed("searcher", self.searcher.on_trial_complete, trial.trial_id)
        else:
            self._timed("scheduler", self.scheduler.on_trial_complete, self, trial, run.last)
            self._timed("searcher", self.searcher.on_trial_complete, trial.trial_id, result=run.last)
        trial.set_status(Trial.TERMINATED)

    def pause_trial(self, trial: Trial, should_checkpoint: bool = True) -> None:
        trial.set_status(Trial.PAUSED)

    # -- the loop ----------------------------------------------------------------------
    def _timed(self, who: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        key = f"{who}.{fn.__name__}"
        self.driver_s[key] += time.perf_counter() - t0
        self.calls[key] += 1
        return out

    def _running(self) -> int:
        return sum(t.status == Trial.RUNNING for t in self.trials)

    def _add_trials(self) -> None:
        """New trials from the searcher, up to TuneController's limit on pending trials."""
        while not self.searcher_done and len(self.trials) < self.max_trials:
            if sum(t.status == Trial.PENDING for t in self.trials) >= self.max_pending:
                return
            tid = f"{len(self.trials):05d}"
            t0 = time.perf_counter()
            config = self._timed("searcher", self.searcher.suggest, tid)
            if config is not None:  # a None is a wait, not a proposal
                self.suggest_s.append(time.perf_counter() - t0)
            if config is None:
                return
            if config == Searcher.FINISHED:
                self.searcher_done = True
                return
            trial = Trial("table", config=dict(config), trial_id=tid, stub=True)
            draw = self.oracle.assign(tid, config)
            budget = int(config.get(BUDGET_KEY, self.oracle.table.longest))
            self.runs[tid] = Run(trial, draw, budget, self.oracle.epoch_time(draw, budget))
            self.trials.append(trial)
            self._timed("scheduler", self.scheduler.on_trial_add, self, trial)

    def _start(self, trial: Trial) -> None:
        trial.set_status(Trial.RUNNING)
        self._schedule(self.runs[trial.trial_id])

    def _schedule(self, run: Run) -> None:
        """The next report: after one epoch on the longest schedule (ASHA and Hyperband decide
        per epoch); after the whole run on a shorter one (the table has only its end)."""
        per_epoch = run.epoch_s
        step = 1 if run.budget == self.oracle.table.longest else run.budget - run.epoch
        self.busy_time += step * per_epoch
        heapq.heappush(self.events, (self.now + step * per_epoch, next(self.seq), run.trial.trial_id))
        run.epoch += step  # where it will be when the event fires
        self.epochs += step

    def _fill(self) -> None:
        while True:
            self._add_trials()
            if self._running() >= self.slots:
                return
            trial = self._timed("scheduler", self.scheduler.choose_trial_to_run, self)
            if trial is None:
                return
            self._start(trial)

    def _report(self, run: Run) -> None:
        trial = run.trial
        value, diverged = self.oracle.value(run.draw, run.budget, run.epoch)
        # as the trainable reports: a diverged run once, scored 0, then it ends
        run.last = {METRIC: value, "training_iteration": run.epoch, "epoch": run.epoch, "diverged": int(diverged)}
        decision = self._timed("scheduler", self.scheduler.on_trial_result, self, trial, dict(run.last))
        if decision != TrialScheduler.STOP:
            self._timed("searcher", self.searcher.on_trial_result, trial.trial_id, dict(run.last))
        if decision == TrialScheduler.STOP or run.epoch >= run.budget or run.last["diverged"]:
            self.stop_trial(trial)
        elif decision == TrialScheduler.PAUSE:
            self.pause_trial(trial)
        else:
            self._schedule(run)

    def _more_to_start(self) -> bool:
        """Work is left that could use a free slot: configs not yet proposed, or paused trials."""
        unproposed = not self.searcher_done and len(self.trials) < self.max_trials
        return unproposed or any(t.status in (Trial.PAUSED, Trial.PENDING) for t in self.trials)

    def run(self) -> Outcome:
        self._fill()
        idle = {"waiting": 0.0, "draining": 0.0}  # free slot-time while work is left / at the end
        while self.events:
            free, waiting = self.slots - self._running(), self._more_to_start()
            t, _, tid = heapq.heappop(self.events)
            idle["waiting" if waiting else "draining"] += free * (t - self.now)
            self.now = t
            self._report(self.runs[tid])
            self._fill()
        stalled = any(t.status in (Trial.PAUSED, Trial.PENDING) for t in self.trials)
        area = self.slots * self.now
        busy = self.busy_time / area if area > 0 else 0.0
        shares = {k: v / area if area > 0 else 0.0 for k, v in idle.items()}
        return Outcome(
            list(self.runs.values()), self.epochs, self.now, busy, stalled, self.driver_s, self.calls, shares
        )


def pick(outcome: Outcome, longest: int) -> tuple[Run, list[float]] | None:
    """s9tune's best trial (search/experiment/trials.py): with re-evaluation runs, the re-evaluated config
    with the best mean (search/searcher/reeval.py's rule); otherwise the highest value at the end of a
    complete longest schedule. Returns its search run and the values it was picked on."""
    done = [r for r in outcome.runs if r.budget == longest and r.epoch >= longest and r.last]
    key = {id(r): str(r.trial.config.get(CONFIG_KEY, r.trial.trial_id)) for r in done}
    search = {key[id(r)]: r for r in done if SEED_KEY not in r.trial.config}
    values = {c: [float(r.last[METRIC])] for c, r in search.items()}
    reevaluated = set()
    for r in done:
        if SEED_KEY in r.trial.config and key[id(r)] in values:
            values[key[id(r)]].append(float(r.last[METRIC]))
            reevaluated.add(key[id(r)])
    top = best_mean(values, reevaluated)
    if top is None:
        top = max(search, key=lambda c: values[c][0], default=None)
    return None if top is None else (search[top], values[top])
