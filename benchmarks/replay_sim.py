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

from s9tune.search.experiment.trials import Experiment, TrialRow
from s9tune.search.space.space import BUDGET_KEY, CONFIG_KEY, METRIC, SEED_KEY, SearchSpace


@dataclass
class Draw:
    """What one run of a config reports in one replay: its point, nearest table config, the seed
    index whose epoch times and divergence it takes, the values it reports, its config's
    expected values (`mu`, the surrogate's) and expected evaluation accuracy (what a pick is
    worth)."""

    x: np.ndarray
    c: int
    s: int
    values: np.ndarray
    quality: float
    mu: np.ndarray


class Oracle:
    """Answers a trial's config through the table's surrogate plus seed noise that is
    independent for every run (replay_table.NoiseModel), at `noise_scale` times the measured
    level. A config's later runs (halving's longer budgets) reuse its draw, as a search
    reruns a config with the same `seed`; a re-evaluation run (search/searcher/reeval.py) is
    another seed, so it draws afresh.

    `key` (the replay seed) makes the draws common to one replay's designs: the j-th draw at
    table config c comes from a generator seeded by (key, c, j), whichever design asks, so
    paired designs that propose the same configs see the same noise. Without a key the draws
    come from `rng`, which also draws epoch times (`draw_times`)."""

    def __init__(
        self,
        surrogate: Surrogate,
        rng: np.random.Generator,
        *,
        draw_times: bool = False,
        spread: float = 1.0,
        noise_scale: float = 1.0,
        key: int | None = None,
    ) -> None:
        self.surrogate, self.table, self.rng, self.draw_times = surrogate, surrogate.table, rng, draw_times
        self.spread = spread  # drawn times: 1 as measured, 0 all equal, between: log-deviations scaled
        self.scale, self.key = noise_scale, key
        self.uses: dict[int, int] = defaultdict(int)
        self.draws: dict[str, Draw] = {}  # a config's search run, by config id
        self.reruns: dict[str, list[Draw]] = defaultdict(list)  # its re-evaluation runs
        self.streams: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _noisy(self, x: np.ndarray, c: int, mu: np.ndarray) -> Draw:
        j = self.uses[c]
        self.uses[c] += 1
        if self.key is None:
            shape, s = self.surrogate.noise.draw_shape(self.rng), int(self.rng.integers(self.table.seeds))
        else:
            shapes, seeds = self._stream(c, j)
            shape, s = int(shapes[j]), int(seeds[j])
        noise = self.surrogate.noise.sd[c] * self.surrogate.noise.z[shape]
        return Draw(x, c, s, mu + self.scale * noise, float(mu[-1]), mu)

    def _stream(self, c: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Table config c's draws in this replay (shape index, seed index), from a generator
        seeded by (key, c): the same for every design replayed with this key."""
        have = self.streams.get(c)
        if have is None or j >= len(have[0]):
            size = 64 if have is None else 2 * len(have[0])
            rng = np.random.default_rng([self.key, c])
            noise = self.surrogate.noise
            have = (noise.shapes(rng, size), rng.integers(self.table.seeds, size=size))
            self.streams[c] = have
        return have

    def assign(self, trial_id: str, config: dict[str, Any]) -> Draw:
        cid = str(config.get(CONFIG_KEY, trial_id))
        if SEED_KEY in config:
            base = self.draws[cid]
            draw = self._noisy(base.x, base.c, base.mu)
            self.reruns[cid].append(draw)
            return draw
        if cid not in self.draws:
            x = unit_coords(self.table.dists, config)
            self.draws[cid] = self._noisy(x, self.surrogate.nearest(x), self.surrogate.mu(x))
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


def as_experiment(outcome: Outcome, space: SearchSpace) -> Experiment:
    """The replayed search as s9tune's results read a real one (search/experiment/trials.py):
    one TrialRow per Tune trial, so the pick and its certainty come from the product's own
    Experiment.best() and Experiment.certainty()."""
    rows = []
    keys = [d.key for d in space.dists]
    for r in outcome.runs:
        cfg = r.trial.config
        value = r.last.get(METRIC) if r.last else None
        diverged = bool(r.last.get("diverged")) if r.last else False
        status = "diverged" if diverged else "completed" if r.epoch >= r.budget and r.last else "stopped"
        if not r.last:
            status = "stopped"  # removed before it ran (HyperBand): no value, as Tune reports it
        rows.append(
            TrialRow(
                r.trial.trial_id,
                {k: cfg[k] for k in keys},
                status,
                r.epoch,
                value,
                value,
                0.0,
                config_id=str(cfg.get(CONFIG_KEY, r.trial.trial_id)),
                budget=r.budget,
                seed=cfg.get(SEED_KEY),
            )
        )
    return Experiment("replay", space, rows)
